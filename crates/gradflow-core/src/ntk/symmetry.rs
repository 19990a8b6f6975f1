//! Continuous symmetries of θ that leave every output unchanged, hence directions v with
//! J v = 0 on every input: the rescaling of a positively homogeneous unit (σ(cz) = cσ(z), c > 0)
//! between the affine layer that produces it and the affine layer that consumes it. Scaling the
//! unit's in-weights and bias by c and its out-weights by 1/c changes nothing, so each such unit
//! lowers the rank J can reach from p to p − 1, whatever the data — one reason the paper's
//! p ≥ nm is not enough for a positive-definite H.
//!
//! The structure is read through [`Layer::structure`] only: parameter-free per-feature linear
//! maps between the two affine layers (a GCN's propagation Â, the identity) commute with the
//! scaling; a residual block h + σ(Wh + b) breaks it (its branch has no consumer weight), and so
//! does any layer whose structure is not known.

use crate::layers::{Affine, GraphStructure, Layer, Structure};
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
    /// An affine map whose θ slice starts at `offset` in the model's θ.
    Affine {
        offset: usize,
        map: Affine,
    },
    /// Commutes with every per-feature scaling (a propagation over the samples).
    Commutes,
    /// An element-wise σ with σ(cz) = cσ(z) for c > 0.
    Homogeneous,
    Breaks,
}

fn flatten(layer: &dyn Layer, offset: usize, out: &mut Vec<Atom>) {
    match layer.structure() {
        Structure::Serial(children) => {
            let mut at = offset;
            for c in children {
                flatten(c, at, out);
                at += c.num_params();
            }
        }
        Structure::Affine(map) => out.push(Atom::Affine { offset, map }),
        Structure::Graph(GraphStructure::Propagate(_)) => out.push(Atom::Commutes),
        Structure::Elementwise(a) if a.activation.is_positively_homogeneous() => {
            out.push(Atom::Homogeneous)
        }
        Structure::Elementwise(_)
        | Structure::Residual(_)
        | Structure::Graph(GraphStructure::Affine { .. })
        | Structure::Opaque => out.push(Atom::Breaks),
    }
}

/// An affine map and where its θ slice starts in the model's θ.
type Placed = (usize, Affine);

/// A producer–consumer pair of affine maps.
type Pair = (Placed, Placed);

/// Affine layers A, B with only commuting layers and at least one homogeneous activation
/// between them.
fn pairs(model: &Model) -> Vec<Pair> {
    let mut atoms = Vec::new();
    flatten(model.net.as_ref(), 0, &mut atoms);
    let mut out = Vec::new();
    let mut open: Option<(Placed, bool)> = None;
    for a in atoms {
        match a {
            Atom::Affine { offset, map } => {
                if let Some((prod, true)) = open {
                    out.push((prod, (offset, map)));
                }
                open = Some(((offset, map), false));
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
    let units: usize = pairs(model).iter().map(|((_, prod), _)| prod.out).sum();
    Symmetries {
        rescaling_units: units,
        rank_bound: model.p().saturating_sub(units),
    }
}

/// The tangent direction of each rescaling at θ, in the order of the layers and units: the
/// unit's in-weights and bias as in θ, its out-weight column negated, zero elsewhere.
pub fn rescaling_directions(model: &Model, theta: &[f64]) -> Vec<Vec<f64>> {
    let mut dirs = Vec::new();
    for ((po, prod), (co, cons)) in pairs(model) {
        for u in 0..prod.out {
            let mut v = vec![0.0; theta.len()];
            let row = po + prod.weight + u * prod.inp..po + prod.weight + (u + 1) * prod.inp;
            v[row.clone()].copy_from_slice(&theta[row]);
            if let Some(b) = prod.bias {
                let bias = po + b + u;
                v[bias] = theta[bias];
            }
            for r in 0..cons.out {
                let k = co + cons.weight + r * cons.inp + u;
                v[k] = -theta[k];
            }
            dirs.push(v);
        }
    }
    dirs
}
