//! Continuous symmetries of θ that leave every output unchanged, hence directions v with
//! J v = 0 on every input: the rescaling of a positively homogeneous unit (σ(cz) = cσ(z), c > 0)
//! between the affine layer that produces it and the affine layer that consumes it. Scaling the
//! unit's in-weights and bias by c and its out-weights by 1/c changes nothing, so each such unit
//! lowers the rank J can reach from p to p − 1, whatever the data — one reason the paper's
//! p ≥ nm is not enough for a positive-definite H.
//!
//! The structure is read through [`Layer::feature_scaling`] only: parameter-free per-feature
//! linear maps between the two affine layers (a GCN's propagation Â) commute with the scaling;
//! a residual block h + σ(Wh + b) breaks it (its branch has no consumer weight).

use crate::layers::{FeatureScaling, Layer};
use crate::model::Model;
use serde::{Deserialize, Serialize};

/// The rescaling symmetries of a model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Symmetries {
    /// Units that can be rescaled: the widths of the affine-to-affine gaps that hold a
    /// positively homogeneous activation and otherwise only commuting layers.
    pub rescaling_units: usize,
    /// p − rescaling_units: rank J ≤ this on every input when the directions are independent —
    /// true whenever every counted unit has a non-zero bias (each direction alone moves its
    /// unit's bias), so for almost every θ.
    pub rank_bound: usize,
}

/// One element of the flattened layer sequence.
#[derive(Clone, Copy, Debug)]
enum Atom {
    Affine {
        offset: usize,
        inputs: usize,
        outputs: usize,
    },
    Commutes,
    Homogeneous,
    Breaks,
}

fn flatten(layer: &dyn Layer, offset: usize, out: &mut Vec<Atom>) {
    match layer.feature_scaling() {
        FeatureScaling::Serial(children) => {
            let mut at = offset;
            for c in children {
                flatten(c, at, out);
                at += c.num_params();
            }
        }
        FeatureScaling::Affine { inputs, outputs } => out.push(Atom::Affine {
            offset,
            inputs,
            outputs,
        }),
        FeatureScaling::Commutes => out.push(Atom::Commutes),
        FeatureScaling::Homogeneous { .. } => out.push(Atom::Homogeneous),
        FeatureScaling::Residual(_) | FeatureScaling::Breaks => out.push(Atom::Breaks),
    }
}

/// A producer–consumer pair: (offset, inputs, outputs) of each affine layer.
type Pair = ((usize, usize, usize), (usize, usize, usize));

/// Affine layers A, B with only commuting layers and at least one homogeneous activation
/// between them.
fn pairs(model: &Model) -> Vec<Pair> {
    let mut atoms = Vec::new();
    flatten(model.net.as_ref(), 0, &mut atoms);
    let mut out = Vec::new();
    let mut open: Option<((usize, usize, usize), bool)> = None;
    for a in atoms {
        match a {
            Atom::Affine {
                offset,
                inputs,
                outputs,
            } => {
                if let Some((prod, true)) = open {
                    out.push((prod, (offset, inputs, outputs)));
                }
                open = Some(((offset, inputs, outputs), false));
            }
            Atom::Commutes => {}
            Atom::Homogeneous => {
                if let Some((_, seen)) = open.as_mut() {
                    *seen = true;
                }
            }
            Atom::Breaks => open = None,
        }
    }
    out
}

/// The rescaling symmetries of `model` (see the module docs).
pub fn symmetries(model: &Model) -> Symmetries {
    let units: usize = pairs(model).iter().map(|(prod, _)| prod.2).sum();
    Symmetries {
        rescaling_units: units,
        rank_bound: model.p().saturating_sub(units),
    }
}

/// The tangent direction of each rescaling at θ, in the order of the layers and units: the
/// unit's in-weights and bias as in θ, its out-weight column negated, zero elsewhere.
pub fn rescaling_directions(model: &Model, theta: &[f64]) -> Vec<Vec<f64>> {
    let mut dirs = Vec::new();
    for ((po, pi, pn), (co, ci, cn)) in pairs(model) {
        for u in 0..pn {
            let mut v = vec![0.0; theta.len()];
            let row = po + u * pi..po + (u + 1) * pi;
            v[row.clone()].copy_from_slice(&theta[row]);
            let bias = po + pn * pi + u;
            v[bias] = theta[bias];
            for r in 0..cn {
                let k = co + r * ci + u;
                v[k] = -theta[k];
            }
            dirs.push(v);
        }
    }
    dirs
}
