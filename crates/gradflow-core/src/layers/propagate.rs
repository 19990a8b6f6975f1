//! Graph propagation Y = Â X across samples (nodes): column i of the output is Σ_j Â_ij x_j.
//! Parameter-free and linear; a GCN layer of Kipf & Welling, Â H W + 1bᵀ, is this followed by a
//! dense layer, since (Â H) W + 1 bᵀ is the same product. It is the one layer that mixes
//! samples, so an output at node i depends on every node within reach.

use super::{no_tape, Batch, GraphStructure, Layer, Structure, Tape};
use crate::graph::SparseMatrix;
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct Propagate {
    pub a_hat: Arc<SparseMatrix>,
    pub dim: usize,
}

impl Propagate {
    pub fn new(a_hat: Arc<SparseMatrix>, dim: usize) -> Self {
        Self { a_hat, dim }
    }
    fn apply(&self, x: &Batch, transpose: bool) -> Batch {
        assert_eq!(
            x.n(),
            self.a_hat.n(),
            "Propagate: batch size must equal the number of graph nodes"
        );
        let mut y = Batch::zeros(x.features(), x.n());
        for i in 0..self.a_hat.n() {
            for (j, a) in self.a_hat.row(i) {
                let (dst, src) = if transpose { (j, i) } else { (i, j) };
                for (v, s) in y.col_mut(dst).iter_mut().zip(x.col(src)) {
                    *v += a * s;
                }
            }
        }
        y
    }
}

impl Layer for Propagate {
    fn describe(&self) -> String {
        format!(
            "graph propagation Â·H ({} nodes, {} non-zeros)",
            self.a_hat.n(),
            self.a_hat.nnz()
        )
    }
    fn in_dim(&self) -> usize {
        self.dim
    }
    fn out_dim(&self) -> usize {
        self.dim
    }
    fn forward(&self, _: &[f64], x: &Batch) -> (Batch, Tape) {
        (self.apply(x, false), no_tape())
    }
    fn vjp(&self, _: &[f64], _: &Batch, _: &Tape, y_bar: &Batch, _: &mut [f64]) -> Batch {
        self.apply(y_bar, true)
    }
    fn jvp(&self, _: &[f64], _: &Batch, _: &Tape, x_dot: &Batch, _: &[f64]) -> Batch {
        self.apply(x_dot, false)
    }
    fn mixes_samples(&self) -> bool {
        true
    }
    fn structure(&self) -> Structure<'_> {
        Structure::Graph(GraphStructure::Propagate(self.a_hat.clone()))
    }
}
