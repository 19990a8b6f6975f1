//! Evidence about the Jacobian J itself, next to H's eigenvalues: its numerical rank from its
//! singular values, each parameter tensor's block rank, and a certified lower bound on
//! λ_min(H) = σ_min(J)².
//!
//! H = J Jᵀ squares J's condition number, so an eigensolver on H resolves λ_min only to about
//! ε·λ_max and cannot tell an exactly singular H from an ill-conditioned one. The SVD of J
//! resolves σ_min to about ε·σ_max (λ_min to ε²·λ_max) and shows an exact rank deficiency as a
//! cliff in the singular values ([`super::rank`]); a positive λ_min is then proven, not
//! estimated, by [`super::certify`]. Both need J (nm × p, f64), so they run only where it fits
//! the memory budget; past it the summary says so in `jacobian_note`.

use super::certify::{certify_lambda_min, CertificateArithmetic};
use super::jacobian_error::jacobian_error_bound;
use super::rank::{analyse_jacobian, Persistence};
use crate::batch::Batch;
use crate::layers::ParamSpec;
use crate::model::Model;
use faer::MatRef;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The J-based fields of an NTK summary (`summary.json` → `ntk_initial`, `ntk_final`; stable
/// names other tools read). Every field is None when J was not formed.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct JacobianEvidence {
    /// The numerical rank of J, chosen at the largest gap in log σ.
    pub jacobian_rank: Option<usize>,
    /// min(nm, p): the rank of a full-rank J.
    pub rank_full: Option<usize>,
    /// σ_r/σ_{r+1} at the chosen gap (None when the rank is full).
    pub rank_gap: Option<f64>,
    /// The gap is ≥ 10⁸ and σ_{r+1} is at rounding level: J is exactly rank-deficient.
    pub rank_exact_deficient: Option<bool>,
    /// σ_max(J)² = λ_max(H), from the SVD.
    pub lambda_max_svd: Option<f64>,
    /// σ_nm(J)² = λ_min(H), from the SVD (0 when p < nm).
    pub lambda_min_svd: Option<f64>,
    /// Below this, λ_min cannot be told from 0 by the SVD route.
    pub lambda_min_resolution: Option<f64>,
    /// A proven lower bound λ_min(H) ≥ this > 0, including every rounding error.
    pub lambda_min_lower: Option<f64>,
    /// The arithmetic that proved `lambda_min_lower`, or why nothing was proven.
    pub certificate: Option<String>,
    /// The rank of each parameter tensor's column block of J (safetensors names).
    pub block_ranks: Option<BTreeMap<String, usize>>,
    /// Why J was not analysed (over the memory budget), when it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jacobian_note: Option<String>,
    /// Whether an exact deficiency survives random perturbations of θ (filled in by the run for
    /// the initial state; see [`super::rank::perturbation_persistence`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persistence: Option<Persistence>,
}

impl JacobianEvidence {
    /// J was found exactly rank-deficient.
    pub fn is_exact_deficient(&self) -> bool {
        self.rank_exact_deficient == Some(true)
    }
}

/// Bytes J and its SVD need (J, a copy for the factorisation, singular vectors not kept).
pub fn jacobian_bytes(model: &Model, n: usize) -> u64 {
    let nm = (n * model.out_dim()) as u64;
    let p = model.p() as u64;
    3 * nm * p * 8 + 2 * nm.min(p) * nm.min(p) * 8
}

/// J's rank, the certified λ_min and (with `block_ranks`) each tensor's block rank at θ on
/// inputs x, when J fits `budget` bytes; otherwise a note saying how much it would need.
pub fn jacobian_evidence(
    model: &Model,
    theta: &[f64],
    x: &Batch,
    budget: u64,
    block_ranks: bool,
) -> JacobianEvidence {
    let need = jacobian_bytes(model, x.n());
    if need > budget {
        return JacobianEvidence {
            jacobian_note: Some(format!(
                "J ({} × {}) and its SVD need about {:.2} GB, over the memory budget of {:.2} GB \
                 (ntk.memory_budget_gb): no rank or certificate; λ_min comes from H's eigensolver \
                 alone, resolved only to about nm·ε·λ_max",
                x.n() * model.out_dim(),
                model.p(),
                need as f64 / 1e9,
                budget as f64 / 1e9
            )),
            ..Default::default()
        };
    }
    let j = super::jacobian(model, theta, x);
    let specs = if block_ranks {
        model.param_specs()
    } else {
        Vec::new()
    };
    evidence_of_jacobian(j.as_ref(), &specs, || jacobian_error_bound(model, theta, x))
}

/// J's rank evidence and the certified λ_min from a formed J (block ranks for `specs`, none
/// when empty), with `error_bound` giving e ≥ ‖J − J̃‖_F (or why none exists), asked only when
/// the certificate is attempted.
pub fn evidence_of_jacobian(
    j: MatRef<'_, f64>,
    specs: &[ParamSpec],
    error_bound: impl FnOnce() -> Result<f64, String>,
) -> JacobianEvidence {
    let block_ranks = !specs.is_empty();
    let rank = analyse_jacobian(j, specs);
    let mut ev = JacobianEvidence {
        jacobian_rank: Some(rank.rank),
        rank_full: Some(rank.full),
        rank_gap: rank.gap,
        rank_exact_deficient: Some(rank.exact_deficient),
        lambda_max_svd: Some(rank.sigma_max * rank.sigma_max),
        lambda_min_svd: Some(rank.lambda_min),
        lambda_min_resolution: Some(rank.lambda_min_resolution),
        block_ranks: block_ranks.then(|| rank.block_ranks.clone()),
        ..Default::default()
    };
    let (lower, certificate) = if rank.rows > rank.cols {
        (
            None,
            format!(
                "none: p = {} < nm = {}, so H is singular by the rank bound",
                rank.cols, rank.rows
            ),
        )
    } else if rank.exact_deficient {
        (
            None,
            format!(
                "none: J is exactly rank-deficient (rank {} of {})",
                rank.rank, rank.full
            ),
        )
    } else {
        match error_bound() {
            Err(why) => (None, format!("none: {why}")),
            Ok(err) => {
                let c = certify_lambda_min(j, err, rank.lambda_min);
                match (c.lower, c.arithmetic) {
                    (Some(l), Some(a)) => (
                        Some(l),
                        match a {
                            CertificateArithmetic::F64 => "f64".to_string(),
                            CertificateArithmetic::DoubleDouble => "double-double".to_string(),
                        },
                    ),
                    _ => (
                        None,
                        format!(
                            "none: {}",
                            c.reason.unwrap_or_else(|| "not proven".to_string())
                        ),
                    ),
                }
            }
        }
    };
    ev.lambda_min_lower = lower;
    ev.certificate = Some(certificate);
    ev
}
