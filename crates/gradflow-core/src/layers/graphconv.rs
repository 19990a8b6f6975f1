//! The graph convolution of Morris et al. 2019 ("Weisfeiler and Leman go neural", PyTorch
//! Geometric's `GraphConv` with sum aggregation): h_i' = W₁ h_i + W₂ Σ_{j∈N(i)} h_j + b, with the
//! plain adjacency A ([`crate::graph::Graph::adjacency`]: no normalisation, no self-loops).
//!
//! In our (features × nodes) layout Y = W₁ X + W₂ S + b 1ᵀ with the neighbour sums S = X Aᵀ.
//! Parameters follow PyG's state dict: `lin_rel.weight` (W₂) and `lin_rel.bias` (b), then
//! `lin_root.weight` (W₁, no bias). Bilinear in X and θ; mixes samples (nodes).

use super::{
    tape_ref, Batch, GraphBasis, GraphStructure, Layer, ParamRole, ParamSpec, Structure, Tape,
};
use crate::batch::par;
use crate::graph::{propagate_columns, SparseMatrix};
use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef};
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct GraphConv {
    pub inp: usize,
    pub out: usize,
    /// A, one row and column per node (weights are used as given: ones for a plain graph).
    pub adjacency: Arc<SparseMatrix>,
}

/// The neighbour sums S = X Aᵀ of the forward pass.
struct GraphConvTape {
    s: Batch,
}

impl GraphConv {
    pub fn new(inp: usize, out: usize, adjacency: Arc<SparseMatrix>) -> Self {
        Self {
            inp,
            out,
            adjacency,
        }
    }

    /// (W₂ = lin_rel.weight, b = lin_rel.bias, W₁ = lin_root.weight).
    fn split<'a>(&self, theta: &'a [f64]) -> (MatRef<'a, f64>, &'a [f64], MatRef<'a, f64>) {
        let w = self.inp * self.out;
        let (w_rel, rest) = theta.split_at(w);
        let (b, w_root) = rest.split_at(self.out);
        (
            MatRef::from_row_major_slice(w_rel, self.out, self.inp),
            b,
            MatRef::from_row_major_slice(w_root, self.out, self.inp),
        )
    }

    /// W₁ x + W₂ s (+ b when `with_bias`), W₁, W₂, b read from `theta`.
    fn affine(&self, theta: &[f64], x: &Batch, s: &Batch, with_bias: bool) -> Batch {
        let (w_rel, b, w_root) = self.split(theta);
        let mut y = Batch::zeros(self.out, x.n());
        matmul(y.mat_mut(), Accum::Replace, w_root, x.mat(), 1.0, par());
        matmul(y.mat_mut(), Accum::Add, w_rel, s.mat(), 1.0, par());
        if with_bias {
            y.add_to_columns(b);
        }
        y
    }
}

impl Layer for GraphConv {
    fn describe(&self) -> String {
        format!(
            "graphconv {} → {} ({} nodes, {} non-zeros in A)",
            self.inp,
            self.out,
            self.adjacency.n(),
            self.adjacency.nnz()
        )
    }
    fn in_dim(&self) -> usize {
        self.inp
    }
    fn out_dim(&self) -> usize {
        self.out
    }
    fn param_specs(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec {
                name: "lin_rel.weight".into(),
                shape: vec![self.out, self.inp],
                role: ParamRole::Weight { fan_in: self.inp },
            },
            ParamSpec {
                name: "lin_rel.bias".into(),
                shape: vec![self.out],
                role: ParamRole::Bias { fan_in: self.inp },
            },
            ParamSpec {
                name: "lin_root.weight".into(),
                shape: vec![self.out, self.inp],
                role: ParamRole::Weight { fan_in: self.inp },
            },
        ]
    }
    fn num_params(&self) -> usize {
        self.out * (2 * self.inp + 1)
    }

    fn forward(&self, theta: &[f64], x: &Batch) -> (Batch, Tape) {
        let s = propagate_columns(&self.adjacency, x, false);
        let y = self.affine(theta, x, &s, true);
        (y, Box::new(GraphConvTape { s }))
    }

    fn vjp(
        &self,
        theta: &[f64],
        x: &Batch,
        tape: &Tape,
        y_bar: &Batch,
        theta_bar: &mut [f64],
    ) -> Batch {
        let t: &GraphConvTape = tape_ref(tape);
        let (w_rel, _, w_root) = self.split(theta);
        let w = self.inp * self.out;
        let (g_rel, rest) = theta_bar.split_at_mut(w);
        let (g_b, g_root) = rest.split_at_mut(self.out);
        let (o, i) = (self.out, self.inp);
        let g_rel = MatMut::from_row_major_slice_mut(g_rel, o, i);
        matmul(
            g_rel,
            Accum::Add,
            y_bar.mat(),
            t.s.mat().transpose(),
            1.0,
            par(),
        );
        let g_root = MatMut::from_row_major_slice_mut(g_root, o, i);
        matmul(
            g_root,
            Accum::Add,
            y_bar.mat(),
            x.mat().transpose(),
            1.0,
            par(),
        );
        for c in 0..y_bar.n() {
            for (g, v) in g_b.iter_mut().zip(y_bar.col(c)) {
                *g += v;
            }
        }
        // x̄ = W₁ᵀ Ȳ + (W₂ᵀ Ȳ) A.
        let mut s_bar = Batch::zeros(self.inp, x.n());
        matmul(
            s_bar.mat_mut(),
            Accum::Replace,
            w_rel.transpose(),
            y_bar.mat(),
            1.0,
            par(),
        );
        let mut x_bar = propagate_columns(&self.adjacency, &s_bar, true);
        matmul(
            x_bar.mat_mut(),
            Accum::Add,
            w_root.transpose(),
            y_bar.mat(),
            1.0,
            par(),
        );
        x_bar
    }

    fn jvp(
        &self,
        theta: &[f64],
        x: &Batch,
        tape: &Tape,
        x_dot: &Batch,
        theta_dot: &[f64],
    ) -> Batch {
        let t: &GraphConvTape = tape_ref(tape);
        let s_dot = propagate_columns(&self.adjacency, x_dot, false);
        // (W₁ ẋ + W₂ ṡ) + (Ẇ₁ x + Ẇ₂ s + ḃ).
        let mut y_dot = self.affine(theta, x_dot, &s_dot, false);
        y_dot.add_assign(&self.affine(theta_dot, x, &t.s, true));
        y_dot
    }

    fn mixes_samples(&self) -> bool {
        true
    }
    fn structure(&self) -> Structure<'_> {
        let w = self.inp * self.out;
        Structure::Graph(GraphStructure::Affine {
            basis: GraphBasis::Terms(vec![Some(self.adjacency.clone()), None]),
            weights: vec![0, w + self.out],
            bias: Some(w),
        })
    }
}
