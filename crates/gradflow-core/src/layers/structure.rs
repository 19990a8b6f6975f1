//! What a layer is made of, as a type: [`Structure`], the one thing the NTK walkers
//! (`crate::ntk::walk`), the structured Gram pass ([`super::Layer::vjp_gram`]), the compiled
//! training engine (`crate::engine`) and the flow solver read to decide how to treat a layer.
//! Routes therefore follow from what a layer *is* (an affine map, an element-wise σ, a
//! composition, a sparse propagation over the samples' graph) and never from how it describes
//! itself; a layer that says nothing is [`Structure::Opaque`] and is used through its own
//! forward / vjp / jvp, which is always correct and only slower.
//!
//! The variants carry where each tensor sits in the layer's θ slice, so the same answer serves
//! questions beyond the NTK: which output units an affine map owns (row o of W and entry o of b),
//! which σ follows them, what is composed with what — enough, for instance, to count the
//! rescaling symmetries of positively homogeneous activations.

use super::{ActivationLayer, Layer};
use crate::graph::SparseMatrix;
use std::sync::Arc;

/// How a layer is built (see the module documentation). Offsets are positions in the layer's
/// own θ slice.
#[derive(Debug)]
pub enum Structure<'a> {
    /// y = W x + b column by column (samples stay apart): W is `out × inp`, row-major.
    Affine(Affine),
    /// y = σ(x) entry by entry, with PReLU's slope as the layer's θ when σ has one.
    Elementwise(&'a ActivationLayer),
    /// f_K ∘ … ∘ f_1 (first layer first); child k's θ slice follows child k−1's. No layers: the
    /// identity.
    Serial(Vec<&'a dyn Layer>),
    /// y = x + g(x); g's θ slice is the block's.
    Residual(&'a dyn Layer),
    /// A layer that mixes samples through sparse propagations and affine maps.
    Graph(GraphStructure),
    /// Known only through its own forward / vjp / jvp: a leaf (convolution, pooling, …) or a
    /// composite whose wiring no walker reads (fan-out, parallel, shared towers).
    Opaque,
}

/// The affine map y = W x + b of [`Structure::Affine`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Affine {
    pub inp: usize,
    pub out: usize,
    /// Offset of W (`out × inp`, row-major).
    pub weight: usize,
    /// Offset of b (`out` entries), or None for a map without bias.
    pub bias: Option<usize>,
}

impl Affine {
    /// W then b, the layout of PyTorch's `Linear` (and of [`super::Dense`]).
    pub fn weight_then_bias(inp: usize, out: usize) -> Self {
        Self {
            inp,
            out,
            weight: 0,
            bias: Some(inp * out),
        }
    }
    /// Number of parameters the map reads.
    pub fn num_params(&self) -> usize {
        self.inp * self.out + self.bias.map_or(0, |_| self.out)
    }
    /// True when W and b lie inside a θ slice of `np` entries, without overlapping, and cover it.
    pub fn fits(&self, np: usize) -> bool {
        let w = self.inp * self.out;
        let inside = |at: usize, len: usize| at.checked_add(len).is_some_and(|e| e <= np);
        let apart = self
            .bias
            .is_none_or(|b| b >= self.weight + w || b + self.out <= self.weight);
        inside(self.weight, w)
            && self.bias.is_none_or(|b| inside(b, self.out))
            && apart
            && self.num_params() == np
    }
}

/// A sample-mixing layer as sparse propagations and dense maps ([`Structure::Graph`]).
/// Propagation by a sparse P means column i of the result is Σ_j P_ij x_j (X Pᵀ).
#[derive(Clone, Debug)]
pub enum GraphStructure {
    /// y = X Pᵀ, no parameters.
    Propagate(Arc<SparseMatrix>),
    /// y = Σ_k W_k Z_k + b 1ᵀ with Z_k the k-th basis term of the input X (in × n each); W_k is
    /// out × in (the layer's widths), row-major at `weights[k]` in the layer's θ slice, b
    /// (length out) at `bias`.
    Affine {
        basis: GraphBasis,
        weights: Vec<usize>,
        bias: Option<usize>,
    },
}

/// The terms Z_k of [`GraphStructure::Affine`].
#[derive(Clone, Debug)]
pub enum GraphBasis {
    /// Z_k = X P_kᵀ, or X itself for None.
    Terms(Vec<Option<Arc<SparseMatrix>>>),
    /// Chebyshev: Z_0 = X, Z_1 = X L̃ᵀ, Z_k = 2 Z_{k−1} L̃ᵀ − Z_{k−2}, k < order.
    Chebyshev {
        l_tilde: Arc<SparseMatrix>,
        order: usize,
    },
}

impl GraphBasis {
    /// Number of terms Z_k.
    pub fn len(&self) -> usize {
        match self {
            Self::Terms(t) => t.len(),
            Self::Chebyshev { order, .. } => *order,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
