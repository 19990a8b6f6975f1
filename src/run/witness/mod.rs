//! Witnesses of rank-deficient Jacobians: a directory anyone can re-check without gradflow.
//!
//! When a run finds J = ∂u/∂θ (nm × p, row i·m + a) exactly rank-deficient although p ≥ nm, the
//! NTK H = J Jᵀ is singular and the paper's Lemma 3.2 ("rank J = nm almost surely") fails for
//! that network. Such a claim should not rest on gradflow's own derivative code, so
//! [`write_witness`] writes everything needed to recompute it independently:
//!
//! - `x.npy` — the inputs (n × d, f64, C order);
//! - `u.npy` — gradflow's outputs u(θ) on them (n × m), for the script to compare against;
//! - `params.safetensors` — θ under the preset's PyTorch names (as in run directories);
//! - `graph_adjacency.npy` — gcn only: the dense n × n propagation matrix Â the network uses;
//! - `claim.json` — rank, nm, p, the gap at the rank cut, the model's description (preset,
//!   sizes, activation and slope) and J's singular values as gradflow computed them;
//! - `witness.py` — a standalone script (numpy and torch only; the safetensors file is parsed by
//!   hand) that rebuilds the network in PyTorch float64 from `claim.json`, loads θ, checks its
//!   outputs against `u.npy`, computes J by autograd and its singular values, applies the same
//!   largest-gap rank rule ([`largest_gap_rank`]) and exits 0 exactly when the rank it finds is
//!   the claimed one;
//! - `README.md` — what this is and how to run it.
//!
//! The presets with witnesses are dnn, resnet and gcn with leaky ReLU (any slope) or ReLU; any
//! other model is refused with an error naming them, and the caller keeps only the numbers.
//! Before anything is written the model is checked against its description: the preset named in
//! the config, rebuilt from it, must have the same tensors and give bit-identical outputs at θ.
//! The claim is checked too: nm and p must be the model's, and the claimed rank must follow
//! from the claimed singular values by [`largest_gap_rank`], the rule the script applies, so a
//! witness never ships numbers its own script would contradict.
//!
//! The directory is assembled under a hidden staging name next to `dir` (each file written to a
//! temporary name and renamed) and renamed into place at the end, so an interrupted or failed
//! write leaves no half-written witness. An existing `dir` is used only when it is empty.

mod files;
mod model;

use crate::activation::Activation;
use crate::batch::Batch;
use crate::config::{ModelConfig, Preset};
use crate::error::{Error, Result};
use crate::io;
use crate::model::Model;
use files::{build_in_staging, check_target, claim_json, gradflow_version, readme, WITNESS_SCRIPT};
use model::{describe_model, propagation_matrix, witness_preset};
use std::collections::BTreeMap;
use std::path::Path;

/// A gap σ_r/σ_{r+1} must reach this for the rank to be cut at r.
pub const MIN_GAP: f64 = crate::ntk::rank::EXACT_GAP;
/// …and σ_{r+1} must be at most this multiple of ε·σ_max (ε the f64 machine epsilon).
pub const TAIL_EPS_MULTIPLE: f64 = crate::ntk::rank::EXACT_TOL_FACTOR;

/// What the witness claims.
#[derive(Clone, Debug, PartialEq)]
pub struct WitnessClaim {
    /// The numerical rank of J by the rule of [`largest_gap_rank`].
    pub rank: usize,
    /// n·m, the number of rows of J.
    pub nm: usize,
    /// p, the number of parameters (columns of J).
    pub p: usize,
    /// σ_r/σ_{r+1} at the rank cut ([`INFINITE_GAP`] or ∞ when σ_{r+1} = 0); None at full rank.
    pub gap: Option<f64>,
    /// J's min(nm, p) singular values, in any order (written in descending order).
    pub singular_values: Vec<f64>,
}

/// Stands in for an infinite gap (σ_{r+1} exactly 0) so that it survives JSON.
pub const INFINITE_GAP: f64 = crate::ntk::rank::INFINITE_GAP;

/// A numerical rank by the largest-gap rule ([`largest_gap_rank`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RankCut {
    pub rank: usize,
    /// σ_r/σ_{r+1} at the largest gap ([`INFINITE_GAP`] when σ_{r+1} = 0); None at full rank.
    pub gap: Option<f64>,
    /// True when the cut is a cliff down to rounding level: J is exactly rank-deficient.
    pub exact: bool,
}

/// The numerical rank of a matrix with singular values `sv` (any order; the full list of
/// min(rows, cols) values): [`crate::ntk::decide_rank`]'s largest-gap rule, which the witness
/// script re-implements in Python.
pub fn largest_gap_rank(sv: &[f64]) -> RankCut {
    let mut s = sv.to_vec();
    s.sort_by(|a, b| b.total_cmp(a));
    let d = crate::ntk::decide_rank(&s, s.len());
    RankCut {
        rank: d.rank,
        gap: d.gap,
        exact: d.exact_deficient,
    }
}

/// The presets [`write_witness`] can rebuild in PyTorch.
pub const WITNESS_PRESETS: [Preset; 3] = [Preset::Dnn, Preset::Resnet, Preset::Gcn];

/// Writes the witness directory `dir` for `claim` about `model` (built from `config`) at θ on
/// inputs `x` (see the module docs for its files). `dir` is created; an existing `dir` must be an
/// empty directory. Errors, before anything is written, for presets other than dnn, resnet and
/// gcn, activations other than leaky ReLU and ReLU, a model that is not the preset `config`
/// describes, and a claim inconsistent with the model (nm, p, rank, singular values).
pub fn write_witness(
    dir: &Path,
    config: &ModelConfig,
    model: &Model,
    theta: &[f64],
    x: &Batch,
    claim: &WitnessClaim,
) -> Result<()> {
    let preset = witness_preset(config)?;
    let description = describe_model(preset, config, model, theta, x)?;
    check_claim(claim, model, x)?;
    check_target(dir)?;

    let a_hat = match preset {
        Preset::Gcn => Some(propagation_matrix(model)?),
        _ => None,
    };
    let outputs = model.outputs(theta, x);
    let mut sv = claim.singular_values.clone();
    sv.sort_by(|a, b| b.total_cmp(a));
    let claim_json = claim_json(claim, &sv, description);

    let (n, d, m) = (x.n(), x.features(), model.out_dim());
    let mut metadata = BTreeMap::new();
    metadata.insert("preset".to_string(), preset.name().to_string());
    metadata.insert("written_by".to_string(), gradflow_version());
    let readme = readme(preset, claim);

    build_in_staging(dir, |staging| {
        io::write_matrix(&staging.join("x.npy"), x.as_slice(), n, d)?;
        io::write_matrix(&staging.join("u.npy"), outputs.as_slice(), n, m)?;
        crate::params::save(
            &staging.join("params.safetensors"),
            &model.param_specs(),
            theta,
            &metadata,
        )?;
        if let Some(a) = &a_hat {
            io::write_matrix(&staging.join("graph_adjacency.npy"), &a.to_dense(), n, n)?;
        }
        io::write_atomic(&staging.join("claim.json"), claim_json.as_bytes())?;
        io::write_atomic(&staging.join("witness.py"), WITNESS_SCRIPT.as_bytes())?;
        io::write_atomic(&staging.join("README.md"), readme.as_bytes())
    })
}

/// Refuses a claim whose numbers do not belong to this model and data.
fn check_claim(claim: &WitnessClaim, model: &Model, x: &Batch) -> Result<()> {
    let bad = |what: String| {
        Err(Error::Invalid(format!(
            "inconsistent witness claim: {what}"
        )))
    };
    let (nm, p) = (x.n() * model.out_dim(), model.p());
    if claim.nm != nm {
        return bad(format!("nm = {} but n·m = {nm}", claim.nm));
    }
    if claim.p != p {
        return bad(format!("p = {} but the model has p = {p}", claim.p));
    }
    let k = nm.min(p);
    if claim.rank > k {
        return bad(format!("rank = {} exceeds min(nm, p) = {k}", claim.rank));
    }
    if claim.singular_values.len() != k {
        return bad(format!(
            "{} singular values given; J ({nm} × {p}) has min(nm, p) = {k}",
            claim.singular_values.len()
        ));
    }
    if let Some(v) = claim
        .singular_values
        .iter()
        .find(|v| !(v.is_finite() && **v >= 0.0))
    {
        return bad(format!("singular value {v} is not finite and non-negative"));
    }
    let cut = largest_gap_rank(&claim.singular_values);
    if cut.rank != claim.rank {
        return bad(format!(
            "rank = {} but the largest-gap rule gives {} on the claimed singular values \
             (the witness script would not confirm it)",
            claim.rank, cut.rank
        ));
    }
    if claim.gap.is_some_and(|g| g.is_nan() || g < 1.0) {
        return bad(format!("gap {:?} is not a ratio ≥ 1", claim.gap));
    }
    Ok(())
}

/// The witness of a prepared run's network at θ: J's singular values by faer's SVD of the
/// explicit Jacobian, the rank by [`largest_gap_rank`], then [`write_witness`] into `dir`.
/// Returns the claim written, or None (nothing written) for a model without a witness script
/// (presets other than [`WITNESS_PRESETS`], activations other than (leaky) ReLU).
pub fn write_prepared_witness(
    prep: &super::Prepared,
    theta: &[f64],
    dir: &Path,
) -> Result<Option<WitnessClaim>> {
    let supported = witness_preset(&prep.config.model).is_ok()
        && matches!(
            prep.model.activation,
            Activation::LeakyRelu { .. } | Activation::Relu
        );
    if !supported {
        return Ok(None);
    }
    let x = &prep.data.x;
    let j = crate::ntk::jacobian(&prep.model, theta, x);
    let singular_values = j
        .singular_values()
        .map_err(|e| Error::Invalid(format!("the SVD of J did not converge: {e:?}")))?;
    let cut = largest_gap_rank(&singular_values);
    let claim = WitnessClaim {
        rank: cut.rank,
        nm: prep.nm(),
        p: prep.model.p(),
        gap: cut.gap,
        singular_values,
    };
    write_witness(dir, &prep.config.model, &prep.model, theta, x, &claim)?;
    Ok(Some(claim))
}

/// A counterexample run's `witness/`: the network at θ(0), where the rank deficiency was found.
pub fn write_run_witness(prep: &super::Prepared, dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    write_prepared_witness(prep, &prep.theta0, dir).map(|_| ())
}
