//! The Siamese preset (Taigman et al. 2014): one tower [dense → σ] per hidden width, shared by
//! both halves of an input pair [a; b], combined by |f(a) − f(b)| or [f(a); f(b)], then a dense
//! head to m outputs. The tower's weights appear once in θ (tensor names `0.tower.*`).

use crate::activation::Activation;
use crate::config::Preset;
use crate::layers::{ActivationLayer, Dense, Layer, PairCombine, Serial, SharedPair};
use crate::model::Model;

/// `d` is the size of one half (the input has 2d features).
pub fn siamese(
    d: usize,
    hidden: &[usize],
    combine: PairCombine,
    m: usize,
    a: &Activation,
) -> Model {
    let mut tower: Vec<Box<dyn Layer>> = Vec::new();
    let mut prev = d;
    for &w in hidden {
        tower.push(Box::new(Dense::new(prev, w)));
        tower.push(Box::new(ActivationLayer::new(a.clone(), w)));
        prev = w;
    }
    let pair = SharedPair::new(Box::new(Serial::new(tower)), combine);
    let out = pair.out_dim();
    let layers: Vec<Box<dyn Layer>> = vec![Box::new(pair), Box::new(Dense::new(out, m))];
    Model::new(Box::new(Serial::new(layers)), Preset::Siamese, a.clone())
}
