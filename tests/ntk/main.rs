//! Integration tests, ntk: the neural tangent kernel: every Gram route against J Jᵀ from finite differences, the graph route, matrix-free spectra, routes chosen by Layer::structure, and J's rank.
//! One binary per area; the helpers all areas share are in `tests/common/`.

#[path = "../common/mod.rs"]
mod common;

mod graph;
mod matrix_free;
mod rank;
mod routes;
mod structure;
