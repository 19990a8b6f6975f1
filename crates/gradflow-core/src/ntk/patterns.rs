//! Activation patterns: which polynomial piece of σ each unit of each activation layer uses on
//! each sample. A unit that keeps one piece on every sample acts as one polynomial on the data
//! (for piecewise-linear σ: linearly), and a layer whose units all do makes the network locally
//! a composition with a polynomial layer — the mechanism behind Jacobians that are exactly rank
//! deficient on an open set of θ (see [`super::rank`]).

use crate::batch::Batch;
use crate::layers::{Layer, PreActivation, Structure};
use crate::model::Model;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// The piece patterns of one activation layer over a batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActivationPatterns {
    /// The layer's path as tensor names nest ("1", "0.fn.1"); `activation layer k` (k-th in
    /// visiting order) when the network holds a composite other than serial and residual.
    pub layer: String,
    pub units: usize,
    pub samples: usize,
    /// Distinct piece patterns (vectors of piece indices over the layer's units) across the
    /// samples.
    pub patterns: usize,
    /// Units whose piece is the same on every sample.
    pub constant_units: usize,
}

/// The patterns of every activation layer at θ on inputs x, in the order of
/// `visit_pre_activations`. Pieces are read from the pre-activations by σ's breakpoints with the
/// library's convention (z on a kink b belongs to the piece left of b); a smooth σ (sigmoid) has
/// one piece, so all its units count as constant. Pieces imposed by a running flow solve's
/// control are not consulted.
pub fn activation_patterns(model: &Model, theta: &[f64], x: &Batch) -> Vec<ActivationPatterns> {
    let ev = model.evaluate(theta, x);
    let mut out = Vec::new();
    model.visit_pre_activations(x, &ev, &mut |pa: PreActivation<'_>| {
        out.push(patterns_of(&pa, out.len()));
    });
    let mut paths = Vec::new();
    if activation_paths(model.net.as_ref(), "", &mut paths) && paths.len() == out.len() {
        for (p, name) in out.iter_mut().zip(paths) {
            p.layer = name;
        }
    }
    out
}

fn patterns_of(pa: &PreActivation<'_>, index: usize) -> ActivationPatterns {
    let kinks = pa.activation.kinks();
    let (units, samples) = (pa.z.features(), pa.z.n());
    let piece = |z: f64| kinks.partition_point(|&b| b < z) as u16;
    let mut seen: HashSet<Vec<u16>> = HashSet::new();
    let mut first: Vec<u16> = Vec::new();
    let mut constant = vec![true; units];
    for i in 0..samples {
        let pat: Vec<u16> = pa.z.col(i).iter().map(|&z| piece(z)).collect();
        if i == 0 {
            first = pat.clone();
        } else {
            for (c, (a, b)) in constant.iter_mut().zip(pat.iter().zip(&first)) {
                *c &= a == b;
            }
        }
        seen.insert(pat);
    }
    ActivationPatterns {
        layer: format!("activation layer {index}"),
        units,
        samples,
        patterns: seen.len(),
        constant_units: constant.iter().filter(|&&c| c).count(),
    }
}

/// The paths of the activation layers under `layer` (at `path`) in visiting order; false when a
/// composite other than serial or residual is met (its children's names are not known here).
fn activation_paths(layer: &dyn Layer, path: &str, out: &mut Vec<String>) -> bool {
    let join = |sub: &str| {
        if path.is_empty() {
            sub.to_string()
        } else {
            format!("{path}.{sub}")
        }
    };
    match layer.structure() {
        Structure::Elementwise(_) => {
            out.push(path.to_string());
            true
        }
        Structure::Serial(children) => children
            .into_iter()
            .enumerate()
            .all(|(k, c)| activation_paths(c, &join(&k.to_string()), out)),
        Structure::Residual(inner) => activation_paths(inner, &join("fn"), out),
        _ => layer.children().is_empty(),
    }
}
