//! Graph presets beyond the GCN: Chebyshev networks (Defferrard et al. 2016) and GraphConv
//! networks (Morris et al. 2019) on the samples' graph — [layer → σ] per hidden width, then a
//! last graph layer to m outputs.

use crate::activation::Activation;
use crate::config::Preset;
use crate::graph::SparseMatrix;
use crate::layers::{ActivationLayer, ChebConv, GraphConv, Layer, Serial};
use crate::model::Model;
use std::sync::Arc;

fn stack(
    d: usize,
    hidden: &[usize],
    m: usize,
    a: &Activation,
    layer: impl Fn(usize, usize) -> Box<dyn Layer>,
    preset: Preset,
) -> Model {
    let mut layers: Vec<Box<dyn Layer>> = Vec::new();
    let mut prev = d;
    for &w in hidden {
        layers.push(layer(prev, w));
        layers.push(Box::new(ActivationLayer::new(a.clone(), w)));
        prev = w;
    }
    layers.push(layer(prev, m));
    Model::new(Box::new(Serial::new(layers)), preset, a.clone())
}

/// ChebConv of order K with the scaled Laplacian L̃ of the samples' graph.
pub fn cheb(
    l_tilde: Arc<SparseMatrix>,
    d: usize,
    hidden: &[usize],
    order: usize,
    m: usize,
    a: &Activation,
) -> Model {
    stack(
        d,
        hidden,
        m,
        a,
        |i, o| Box::new(ChebConv::new(i, o, order, l_tilde.clone())),
        Preset::Cheb,
    )
}

/// GraphConv h' = W₁h + W₂Σ_{j∈N(i)} h_j + b with the plain adjacency.
pub fn graphconv(
    adjacency: Arc<SparseMatrix>,
    d: usize,
    hidden: &[usize],
    m: usize,
    a: &Activation,
) -> Model {
    stack(
        d,
        hidden,
        m,
        a,
        |i, o| Box::new(GraphConv::new(i, o, adjacency.clone())),
        Preset::GraphConv,
    )
}
