//! The architectures of docs/theory.md ('Presets'), built from the generic layers at any depth
//! and width: `dnn`, `resnet`, `gcn` here; convolutional presets in `image`, graph ones in
//! `graph`, and the Siamese network in `siamese`.
//!
//! Tensor names in saved parameters (safetensors):
//! - `dnn`: `torch.nn.Sequential(Linear, σ, …, Linear)` — `0.weight` (out×in), `0.bias`,
//!   `2.weight`, … (a PReLU's slope is `1.weight`, shape [1], as `nn.PReLU()`).
//! - `resnet`: block l (0-based) is `l.fn.0.weight`/`l.fn.0.bias` (d×d, d) — the branch
//!   σ(W h + b) of h + σ(W h + b) — and the read-out is `L.weight` (m×d), `L.bias`.
//! - `gcn`: layer l (0-based) is graph propagation (no parameters) at index 3l, then
//!   `{3l+1}.weight` (out×in, i.e. Kipf & Welling's W transposed, like `nn.Linear`) and
//!   `{3l+1}.bias`, then σ at 3l+2 (absent after the last layer).

mod graph;
mod image;
mod siamese;

pub use graph::{cheb, graphconv};
pub use image::{cnn, conv_resnet, mobilenet, unet};
pub use siamese::siamese;

use crate::activation::Activation;
use crate::config::Preset;
use crate::graph::SparseMatrix;
use crate::layers::{ActivationLayer, Dense, Layer, Propagate, Residual, Serial};
use crate::model::Model;
use std::sync::Arc;

/// DNN (Cor. 3.2.1-1): h^l = σ(W^l h^{l−1} + b^l), f = W^L h^{L−1} + b^L.
///
/// ```
/// use gradflow_core::activation::Activation;
/// use gradflow_core::presets::dnn;
///
/// // 20 → [48, 48] → 5: p = (20·48 + 48) + (48·48 + 48) + (48·5 + 5).
/// let model = dnn(20, &[48, 48], 5, &Activation::Relu);
/// assert_eq!(model.p(), 1008 + 2352 + 245);
/// assert_eq!((model.in_dim(), model.out_dim()), (20, 5));
/// ```
pub fn dnn(d: usize, hidden: &[usize], m: usize, activation: &Activation) -> Model {
    let mut layers: Vec<Box<dyn Layer>> = Vec::new();
    let mut prev = d;
    for &w in hidden {
        layers.push(Box::new(Dense::new(prev, w)));
        layers.push(Box::new(ActivationLayer::new(activation.clone(), w)));
        prev = w;
    }
    layers.push(Box::new(Dense::new(prev, m)));
    Model::new(
        Box::new(Serial::new(layers)),
        Preset::Dnn,
        activation.clone(),
    )
}

/// ResNet (Cor. 3.2.1-2, our reading): h^l = h^{l−1} + σ(W^l h^{l−1} + b^l) with W^l ∈ R^{d×d},
/// l = 1..depth; f = W^out h^L + b^out.
pub fn resnet(d: usize, depth: usize, m: usize, activation: &Activation) -> Model {
    let mut layers: Vec<Box<dyn Layer>> = Vec::new();
    for _ in 0..depth {
        let branch = Serial::new(vec![
            Box::new(Dense::new(d, d)),
            Box::new(ActivationLayer::new(activation.clone(), d)),
        ]);
        layers.push(Box::new(Residual::new(Box::new(branch))));
    }
    layers.push(Box::new(Dense::new(d, m)));
    Model::new(
        Box::new(Serial::new(layers)),
        Preset::Resnet,
        activation.clone(),
    )
}

/// GCN (Cor. 3.2.1-3): H^l = σ(Â H^{l−1} W^l + 1 b^lᵀ), F = Â H^{L−1} W^L + 1 b^Lᵀ.
pub fn gcn(
    a_hat: Arc<SparseMatrix>,
    d: usize,
    hidden: &[usize],
    m: usize,
    activation: &Activation,
) -> Model {
    let mut layers: Vec<Box<dyn Layer>> = Vec::new();
    let mut prev = d;
    for &w in hidden {
        layers.push(Box::new(Propagate::new(a_hat.clone(), prev)));
        layers.push(Box::new(Dense::new(prev, w)));
        layers.push(Box::new(ActivationLayer::new(activation.clone(), w)));
        prev = w;
    }
    layers.push(Box::new(Propagate::new(a_hat, prev)));
    layers.push(Box::new(Dense::new(prev, m)));
    Model::new(
        Box::new(Serial::new(layers)),
        Preset::Gcn,
        activation.clone(),
    )
}

/// p for a DNN, by the closed form Σ_l (d_{l−1} + 1)·d_l (plus one slope per PReLU layer).
pub fn dnn_param_count(d: usize, hidden: &[usize], m: usize, activation: &Activation) -> usize {
    let mut widths = vec![d];
    widths.extend_from_slice(hidden);
    widths.push(m);
    widths.windows(2).map(|w| (w[0] + 1) * w[1]).sum::<usize>()
        + hidden.len() * activation.num_params()
}
