//! The numerical rank of the Jacobian J = ∂u/∂θ (nm × p, row i·m + a) from its singular values,
//! to tell an *exactly* rank-deficient J (H = J Jᵀ singular: Lemma 3.2 fails) from a merely
//! ill-conditioned one, with per-tensor block ranks and a test of whether a deficiency survives
//! random perturbations of θ (an open set of θ, or a measure-zero coincidence).
//!
//! Why the SVD of J and not the eigenvalues of H: a backward-stable eigensolver resolves λ(H)
//! only to about ε·λ_max, i.e. σ(J) = √λ only to √ε·σ_max ≈ 1.5e-8·σ_max; the SVD of J resolves
//! σ to a small multiple of ε·σ_max, so an exact zero (σ ≈ 1e-16·σ_max after rounding) and a
//! small but real σ (say 1e-9·σ_max) fall on opposite sides of the threshold.
//!
//! Activation patterns live in [`super::patterns`], the rescaling symmetries (directions with
//! J v = 0 for every input) in [`super::symmetry`], a rigorous bound on ‖J − J̃‖_F for the
//! computed J̃ in [`super::jacobian_error`].

use super::gram::jacobian;
use crate::batch::Batch;
use crate::layers::ParamSpec;
use crate::model::Model;
use faer::MatRef;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// σ at or below `EXACT_TOL_FACTOR · ε · σ_max` cannot be told from 0: the SVD's backward error
/// and the rounding of J̃'s entries are each a modest multiple of ε·σ_max (see
/// [`super::jacobian_error::jacobian_error_bound`] for a rigorous bound on the latter).
pub const EXACT_TOL_FACTOR: f64 = 100.0;

/// The smallest σ_r/σ_{r+1} that counts as a cliff (an exact deficiency, not a smooth decay).
pub const EXACT_GAP: f64 = 1e8;

/// Stands in for an infinite gap (σ_{r+1} exactly 0), so that it survives JSON.
pub const INFINITE_GAP: f64 = f64::MAX;

/// Numerical rank of a sorted-descending list of singular values, chosen at the largest gap in
/// log σ (see [`decide_rank`] for the rule).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RankDecision {
    pub rank: usize,
    /// σ_r/σ_{r+1} at the chosen gap ([`INFINITE_GAP`] when σ_{r+1} = 0 exactly); None when the
    /// rank is full (= len).
    pub gap: Option<f64>,
    /// gap ≥ [`EXACT_GAP`] and σ_{r+1} ≤ [`EXACT_TOL_FACTOR`]·ε·σ_max: J is exactly rank
    /// deficient up to rounding, not just ill-conditioned.
    pub exact_deficient: bool,
}

/// The numerical rank of `singular_values` (descending; entries past `full` are ignored, missing
/// ones count as 0) out of `full` = min(nm, p).
///
/// Rule, with tol = [`EXACT_TOL_FACTOR`]·ε·σ_max:
/// 1. among consecutive pairs (σ_k, σ_{k+1}) whose upper value σ_k is above tol (a cliff whose
///    top is itself rounding noise says nothing), take the largest ratio σ_k/σ_{k+1} (an exact
///    zero below counts as an infinite ratio; the first pair wins ties);
/// 2. if that ratio is ≥ [`EXACT_GAP`] and σ_{k+1} ≤ tol, the rank is k and `exact_deficient`;
/// 3. otherwise the rank is the number of σ above tol (usually `full`), not exact, and `gap` is
///    the ratio of step 1 only when that rank is below `full`.
///
/// All σ zero (J = 0): rank 0, exact (when full > 0).
pub fn decide_rank(singular_values: &[f64], full: usize) -> RankDecision {
    let mut s: Vec<f64> = singular_values.iter().take(full).copied().collect();
    s.resize(full, 0.0);
    let sigma_max = s.first().copied().unwrap_or(0.0);
    if full == 0 {
        return RankDecision {
            rank: 0,
            gap: None,
            exact_deficient: false,
        };
    }
    if sigma_max == 0.0 {
        return RankDecision {
            rank: 0,
            gap: Some(INFINITE_GAP),
            exact_deficient: true,
        };
    }
    let tol = EXACT_TOL_FACTOR * f64::EPSILON * sigma_max;
    let mut best: Option<(usize, f64)> = None;
    for k in 1..full {
        let (hi, lo) = (s[k - 1], s[k]);
        if hi <= tol {
            break;
        }
        let ratio = if lo == 0.0 { INFINITE_GAP } else { hi / lo };
        if best.is_none_or(|(_, g)| ratio > g) {
            best = Some((k, ratio));
        }
    }
    if let Some((k, g)) = best {
        if g >= EXACT_GAP && s[k] <= tol {
            return RankDecision {
                rank: k,
                gap: Some(g),
                exact_deficient: true,
            };
        }
    }
    let rank = s.iter().filter(|&&v| v > tol).count();
    RankDecision {
        rank,
        gap: if rank < full {
            best.map(|(_, g)| g)
        } else {
            None
        },
        exact_deficient: false,
    }
}

/// The rank analysis of one Jacobian.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JacobianRank {
    /// nm.
    pub rows: usize,
    /// p.
    pub cols: usize,
    pub rank: usize,
    /// min(nm, p).
    pub full: usize,
    /// As [`RankDecision::gap`].
    pub gap: Option<f64>,
    /// As [`RankDecision::exact_deficient`].
    pub exact_deficient: bool,
    /// σ_max(J).
    pub sigma_max: f64,
    /// σ_{nm}(J) (0 when p < nm).
    pub sigma_min: f64,
    /// σ_min(J)² = λ_min(H) by the SVD route.
    pub lambda_min: f64,
    /// ([`EXACT_TOL_FACTOR`]·ε·σ_max)²: below this λ_min cannot be told from 0.
    pub lambda_min_resolution: f64,
    /// Rank of each parameter tensor's column block of J, by the same rule on the block's own
    /// singular values; keys are the tensor names of `param_specs` (as in safetensors).
    pub block_ranks: BTreeMap<String, usize>,
    /// All min(nm, p) singular values of J, descending.
    #[serde(skip)]
    pub singular_values: Vec<f64>,
}

/// Singular values of `j`, descending; None when J has a non-finite entry or the SVD fails.
fn singular_values(j: MatRef<'_, f64>) -> Option<Vec<f64>> {
    let finite = (0..j.ncols()).all(|c| j.col(c).iter().all(|v| v.is_finite()));
    if !finite {
        return None;
    }
    // A wide (or tall) J is first reduced to the square triangular factor of its QR
    // decomposition: Householder QR is backward stable, so R's singular values are J's to the
    // same ε·σ_max, at a fraction of the cost of bidiagonalising J itself.
    let (rows, cols) = (j.nrows(), j.ncols());
    if cols > 2 * rows {
        let jt = j.transpose().to_owned();
        let qr = jt.qr();
        return qr.R().singular_values().ok();
    }
    if rows > 2 * cols {
        let qr = j.qr();
        return qr.R().singular_values().ok();
    }
    j.singular_values().ok()
}

/// Builds J̃ by [`jacobian`] (one vjp per output) and analyses it with [`analyse_jacobian`].
///
/// ```
/// use gradflow_core::activation::Activation;
/// use gradflow_core::data::Dataset;
/// use gradflow_core::init::{init_params, InitScheme};
/// use gradflow_core::ntk::jacobian_rank;
/// use gradflow_core::presets::dnn;
///
/// // Under-parametrised: p = 3·2 + 2 + 2·1 + 1 = 11 < nm = 20, so rank J ≤ 11 and H is singular.
/// let data = Dataset::ball(20, 3, 1, 0);
/// let model = dnn(3, &[2], 1, &Activation::LeakyRelu { slope: 0.01 });
/// let theta = init_params(&model.param_specs(), &InitScheme::Torch, 0);
/// let r = jacobian_rank(&model, &theta, &data.x);
/// assert_eq!((r.rows, r.cols, r.full), (20, 11, 11));
/// assert!(r.rank <= 11);
/// ```
pub fn jacobian_rank(model: &Model, theta: &[f64], x: &Batch) -> JacobianRank {
    let j = jacobian(model, theta, x);
    analyse_jacobian(j.as_ref(), &model.param_specs())
}

/// The rank analysis of a given J (nm × p) whose columns are the tensors of `specs` in order.
/// A J with a non-finite entry gives NaN σ's, rank 0 and no block ranks.
pub fn analyse_jacobian(j: MatRef<'_, f64>, specs: &[ParamSpec]) -> JacobianRank {
    let (rows, cols) = (j.nrows(), j.ncols());
    let full = rows.min(cols);
    let Some(sv) = singular_values(j) else {
        return JacobianRank {
            rows,
            cols,
            rank: 0,
            full,
            gap: None,
            exact_deficient: false,
            sigma_max: f64::NAN,
            sigma_min: f64::NAN,
            lambda_min: f64::NAN,
            lambda_min_resolution: f64::NAN,
            block_ranks: BTreeMap::new(),
            singular_values: vec![f64::NAN; full],
        };
    };
    let decision = decide_rank(&sv, full);
    let sigma_max = sv.first().copied().unwrap_or(0.0);
    let sigma_min = if cols >= rows {
        sv.last().copied().unwrap_or(0.0)
    } else {
        0.0
    };
    let mut block_ranks = BTreeMap::new();
    let mut at = 0;
    for s in specs {
        let len = s.len();
        assert!(
            at + len <= cols,
            "analyse_jacobian: the tensors need more than J's {cols} columns"
        );
        let block = j.subcols(at, len);
        let r = singular_values(block).map_or(0, |b| decide_rank(&b, rows.min(len)).rank);
        block_ranks.insert(s.name.clone(), r);
        at += len;
    }
    let resolution = EXACT_TOL_FACTOR * f64::EPSILON * sigma_max;
    JacobianRank {
        rows,
        cols,
        rank: decision.rank,
        full,
        gap: decision.gap,
        exact_deficient: decision.exact_deficient,
        sigma_max,
        sigma_min,
        lambda_min: sigma_min * sigma_min,
        lambda_min_resolution: resolution * resolution,
        block_ranks,
        singular_values: sv,
    }
}

/// Does the deficiency persist when θ is perturbed at random (relative `rel`, each entry
/// θ_k(1 + rel·g), g ~ N(0,1), seeded)? Zero entries of θ stay zero.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Persistence {
    pub draws: usize,
    pub rel: f64,
    /// The rank at each perturbed θ.
    pub ranks: Vec<usize>,
    /// Draws whose J is exactly deficient.
    pub deficient_draws: usize,
    /// Every draw exact_deficient (false when draws = 0).
    pub persistent: bool,
}

/// [`Persistence`] over `draws` perturbations of θ drawn from one generator seeded by `seed`.
pub fn perturbation_persistence(
    model: &Model,
    theta: &[f64],
    x: &Batch,
    rel: f64,
    draws: usize,
    seed: u64,
) -> Persistence {
    let mut rng = StdRng::seed_from_u64(seed);
    let full = (x.n() * model.out_dim()).min(model.p());
    let mut ranks = Vec::with_capacity(draws);
    let mut deficient_draws = 0;
    for _ in 0..draws {
        let t: Vec<f64> = theta
            .iter()
            .map(|&v| {
                let g: f64 = StandardNormal.sample(&mut rng);
                v * (1.0 + rel * g)
            })
            .collect();
        let j = jacobian(model, &t, x);
        let d = singular_values(j.as_ref()).map(|sv| decide_rank(&sv, full));
        ranks.push(d.as_ref().map_or(0, |d| d.rank));
        deficient_draws += d.is_some_and(|d| d.exact_deficient) as usize;
    }
    Persistence {
        draws,
        rel,
        ranks,
        deficient_draws,
        persistent: draws > 0 && deficient_draws == draws,
    }
}
