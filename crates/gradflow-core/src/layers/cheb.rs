//! Chebyshev spectral graph convolution (Defferrard et al. 2016, PyTorch Geometric's `ChebConv`):
//! Y = Σ_{k<K} T_k(L̃) X Θ_k + 1 bᵀ in PyG's (nodes × features) layout, with T_0 = I, T_1 = L̃,
//! T_k = 2 L̃ T_{k−1} − T_{k−2} and L̃ the rescaled Laplacian ([`crate::graph::scaled_laplacian`]).
//!
//! In our (features × nodes) layout the k-th term is W_k Z_k with Z_k = X T_k(L̃)ᵀ and
//! W_k = `lins.{k}.weight` (out × in, PyG's `Linear` weight, so Θ_k = W_kᵀ). The Z_k are built by
//! the recurrence Z_k = 2 Z_{k−1} L̃ᵀ − Z_{k−2} from sparse products; T_k is never formed. The
//! layer is polynomial (bilinear in X and θ) and mixes samples (nodes); it describes itself by
//! [`Layer::structure`] so the NTK takes the structured graph route.

use super::{
    tape_ref, Batch, GraphBasis, GraphStructure, Layer, ParamRole, ParamSpec, Structure, Tape,
};
use crate::batch::par;
use crate::graph::{propagate_columns, SparseMatrix};
use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef};
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct ChebConv {
    pub inp: usize,
    pub out: usize,
    /// K, the number of Chebyshev terms (polynomial degree K − 1); K ≥ 1.
    pub order: usize,
    /// L̃, one row and column per node.
    pub l_tilde: Arc<SparseMatrix>,
}

/// Z_1 … Z_{K−1} (Z_0 is the input itself).
struct ChebTape {
    z: Vec<Batch>,
}

impl ChebConv {
    /// Panics if K = 0 (a programming error in a model builder).
    pub fn new(inp: usize, out: usize, order: usize, l_tilde: Arc<SparseMatrix>) -> Self {
        assert!(order >= 1, "ChebConv: the order K must be at least 1");
        Self {
            inp,
            out,
            order,
            l_tilde,
        }
    }

    fn weight<'a>(&self, theta: &'a [f64], k: usize) -> MatRef<'a, f64> {
        let len = self.inp * self.out;
        MatRef::from_row_major_slice(&theta[k * len..(k + 1) * len], self.out, self.inp)
    }

    fn bias<'a>(&self, theta: &'a [f64]) -> &'a [f64] {
        &theta[self.order * self.inp * self.out..]
    }

    /// Z_1, …, Z_{K−1} from Z_0 = x by the Chebyshev recurrence (linear in x).
    fn basis(&self, x: &Batch) -> Vec<Batch> {
        let mut z: Vec<Batch> = Vec::with_capacity(self.order.saturating_sub(1));
        for k in 1..self.order {
            let prev = if k == 1 { x } else { &z[k - 2] };
            let mut next = propagate_columns(&self.l_tilde, prev, false);
            if k >= 2 {
                let before = if k == 2 { x } else { &z[k - 3] };
                for (v, b) in next.as_mut_slice().iter_mut().zip(before.as_slice()) {
                    *v = 2.0 * *v - b;
                }
            }
            z.push(next);
        }
        z
    }

    /// Σ_k W_k Z_k (+ b when given), with Z_0 = `z0`.
    fn combine(&self, theta: &[f64], z0: &Batch, z: &[Batch], bias: Option<&[f64]>) -> Batch {
        let mut y = Batch::zeros(self.out, z0.n());
        for k in 0..self.order {
            let zk = if k == 0 { z0 } else { &z[k - 1] };
            let acc = if k == 0 { Accum::Replace } else { Accum::Add };
            matmul(
                y.mat_mut(),
                acc,
                self.weight(theta, k),
                zk.mat(),
                1.0,
                par(),
            );
        }
        if let Some(b) = bias {
            y.add_to_columns(b);
        }
        y
    }
}

impl Layer for ChebConv {
    fn describe(&self) -> String {
        format!(
            "chebconv {} → {}, K = {} ({} nodes, {} non-zeros in L̃)",
            self.inp,
            self.out,
            self.order,
            self.l_tilde.n(),
            self.l_tilde.nnz()
        )
    }
    fn in_dim(&self) -> usize {
        self.inp
    }
    fn out_dim(&self) -> usize {
        self.out
    }
    fn param_specs(&self) -> Vec<ParamSpec> {
        let mut specs: Vec<ParamSpec> = (0..self.order)
            .map(|k| ParamSpec {
                name: format!("lins.{k}.weight"),
                shape: vec![self.out, self.inp],
                role: ParamRole::Weight { fan_in: self.inp },
            })
            .collect();
        specs.push(ParamSpec {
            name: "bias".into(),
            shape: vec![self.out],
            role: ParamRole::Bias { fan_in: self.inp },
        });
        specs
    }
    fn num_params(&self) -> usize {
        self.order * self.inp * self.out + self.out
    }

    fn forward(&self, theta: &[f64], x: &Batch) -> (Batch, Tape) {
        let z = self.basis(x);
        let y = self.combine(theta, x, &z, Some(self.bias(theta)));
        (y, Box::new(ChebTape { z }))
    }

    fn vjp(
        &self,
        theta: &[f64],
        x: &Batch,
        tape: &Tape,
        y_bar: &Batch,
        theta_bar: &mut [f64],
    ) -> Batch {
        let t: &ChebTape = tape_ref(tape);
        let wlen = self.inp * self.out;
        let (gw, gb) = theta_bar.split_at_mut(self.order * wlen);
        // Parameter cotangents W̄_k += Ȳ Z_kᵀ, b̄ += Σ_i ȳ_i; basis cotangents Z̄_k = W_kᵀ Ȳ.
        let mut z_bar: Vec<Batch> = Vec::with_capacity(self.order);
        for k in 0..self.order {
            let zk = if k == 0 { x } else { &t.z[k - 1] };
            let g = MatMut::from_row_major_slice_mut(
                &mut gw[k * wlen..(k + 1) * wlen],
                self.out,
                self.inp,
            );
            matmul(g, Accum::Add, y_bar.mat(), zk.mat().transpose(), 1.0, par());
            let mut zb = Batch::zeros(self.inp, x.n());
            matmul(
                zb.mat_mut(),
                Accum::Replace,
                self.weight(theta, k).transpose(),
                y_bar.mat(),
                1.0,
                par(),
            );
            z_bar.push(zb);
        }
        for i in 0..y_bar.n() {
            for (g, v) in gb.iter_mut().zip(y_bar.col(i)) {
                *g += v;
            }
        }
        // The recurrence backwards: Z_k = 2 P(Z_{k−1}) − Z_{k−2} (k ≥ 2), Z_1 = P(Z_0), with
        // P(Z) = Z L̃ᵀ and adjoint Pᵀ(G) = G L̃.
        for k in (1..self.order).rev() {
            let zk_bar = std::mem::replace(&mut z_bar[k], Batch::zeros(0, 0));
            let mut back = propagate_columns(&self.l_tilde, &zk_bar, true);
            if k >= 2 {
                for v in back.as_mut_slice() {
                    *v *= 2.0;
                }
                for (a, b) in z_bar[k - 2]
                    .as_mut_slice()
                    .iter_mut()
                    .zip(zk_bar.as_slice())
                {
                    *a -= b;
                }
            }
            z_bar[k - 1].add_assign(&back);
        }
        z_bar.swap_remove(0)
    }

    fn jvp(
        &self,
        theta: &[f64],
        x: &Batch,
        tape: &Tape,
        x_dot: &Batch,
        theta_dot: &[f64],
    ) -> Batch {
        let t: &ChebTape = tape_ref(tape);
        let z_dot = self.basis(x_dot);
        let mut y_dot = self.combine(theta, x_dot, &z_dot, Some(self.bias(theta_dot)));
        y_dot.add_assign(&self.combine(theta_dot, x, &t.z, None));
        y_dot
    }

    fn mixes_samples(&self) -> bool {
        true
    }
    fn structure(&self) -> Structure<'_> {
        let len = self.inp * self.out;
        Structure::Graph(GraphStructure::Affine {
            basis: GraphBasis::Chebyshev {
                l_tilde: self.l_tilde.clone(),
                order: self.order,
            },
            weights: (0..self.order).map(|k| k * len).collect(),
            bias: Some(self.order * len),
        })
    }
}
