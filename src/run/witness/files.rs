//! The files of a witness directory as text — `claim.json`, `README.md`, the standalone
//! `witness.py` (kept verbatim in `witness.py` next to this file) — and how the directory is put
//! on disk: only into an empty or new `dir`, assembled under a hidden staging name and renamed.

use super::{largest_gap_rank, WitnessClaim, INFINITE_GAP, MIN_GAP, TAIL_EPS_MULTIPLE};
use crate::config::Preset;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// `witness.py`: reads everything from its own directory; see the module docs of `witness`.
pub(super) const WITNESS_SCRIPT: &str = include_str!("witness.py");

pub(super) fn gradflow_version() -> String {
    format!("gradflow {}", env!("CARGO_PKG_VERSION"))
}

/// Refuses a `dir` that exists and is not an empty directory (nothing is ever overwritten).
pub(super) fn check_target(dir: &Path) -> Result<()> {
    if dir.file_name().is_none() {
        return Err(Error::Invalid(format!(
            "witness directory {} must name a directory of its own",
            dir.display()
        )));
    }
    if !dir.exists() {
        return Ok(());
    }
    if !dir.is_dir() {
        return Err(Error::Invalid(format!(
            "refusing to write a witness to {}: it exists and is not a directory",
            dir.display()
        )));
    }
    let mut entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    if let Some(entry) = entries.next() {
        let name = entry
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .unwrap_or_default();
        return Err(Error::Invalid(format!(
            "refusing to write a witness into {}: the directory exists and is not empty (it holds `{name}`); \
             choose a new directory or empty this one",
            dir.display()
        )));
    }
    Ok(())
}

/// Runs `fill` on a fresh hidden staging directory next to `dir`, then renames it to `dir`
/// (replacing `dir` if it is an empty directory). On any error the staging directory is removed.
pub(super) fn build_in_staging(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
    let name = dir
        .file_name()
        .expect("checked by check_target")
        .to_string_lossy();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let staging = parent.join(format!(".{name}.witness-{}-{nanos}", std::process::id()));
    std::fs::create_dir(&staging).map_err(|e| Error::io(&staging, e))?;
    /// Removes the staging directory unless disarmed.
    struct Cleanup(Option<PathBuf>);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            if let Some(p) = self.0.take() {
                let _ = std::fs::remove_dir_all(p);
            }
        }
    }
    let mut cleanup = Cleanup(Some(staging.clone()));
    fill(&staging)?;
    if dir.is_dir() {
        // Empty (checked before): remove_dir refuses anything else.
        std::fs::remove_dir(dir).map_err(|e| Error::io(dir, e))?;
    }
    std::fs::rename(&staging, dir).map_err(|e| Error::io(dir, e))?;
    cleanup.0 = None;
    Ok(())
}

/// `claim.json`: the claim, the rank rule, the model and the singular values (descending).
pub(super) fn claim_json(
    claim: &WitnessClaim,
    sorted_sv: &[f64],
    model: serde_json::Value,
) -> String {
    let gap = match claim.gap {
        None => serde_json::Value::Null,
        Some(g) => g.min(INFINITE_GAP).into(),
    };
    let statement = if claim.rank < claim.nm
        && claim.p >= claim.nm
        && largest_gap_rank(sorted_sv).exact
    {
        format!(
            "rank J = {} < nm = {} although p = {} >= nm: H = J J^T is singular (Lemma 3.2 claims rank J = nm almost surely)",
            claim.rank, claim.nm, claim.p
        )
    } else {
        format!(
            "rank J = {} (nm = {}, p = {})",
            claim.rank, claim.nm, claim.p
        )
    };
    let value = serde_json::json!({
        "statement": statement,
        "rank": claim.rank,
        "nm": claim.nm,
        "p": claim.p,
        "gap": gap,
        "exact": largest_gap_rank(sorted_sv).exact,
        "rank_rule": {
            "description": "singular values descending, tol = tail_eps_multiple * eps * sigma_max (eps: f64 machine epsilon). Among consecutive pairs whose upper value is above tol, take the largest ratio sigma_r / sigma_{r+1} (an exact 0 below: gap 1.7976931348623157e308, i.e. infinite). If it is >= min_gap and sigma_{r+1} <= tol, the rank is r (exactly rank-deficient); otherwise the rank is the number of singular values above tol.",
            "min_gap": MIN_GAP,
            "tail_eps_multiple": TAIL_EPS_MULTIPLE,
        },
        "jacobian": "J = du/dtheta, nm x p, row i*m + a (sample i, output a), columns in the order of params.safetensors' data offsets",
        "model": model,
        "written_by": gradflow_version(),
        "singular_values": sorted_sv,
    });
    let mut text = serde_json::to_string_pretty(&value).expect("JSON of plain values");
    text.push('\n');
    text
}

pub(super) fn readme(preset: Preset, claim: &WitnessClaim) -> String {
    let graph = if preset == Preset::Gcn {
        ", the propagation matrix Â (graph_adjacency.npy)"
    } else {
        ""
    };
    format!(
        "# Witness: rank J = {rank} for a {preset} with nm = {nm}, p = {p}\n\
         \n\
         Written by {by}: the network's description (claim.json), its parameters θ (params.safetensors, PyTorch names), \
         its inputs (x.npy){graph} and gradflow's outputs (u.npy).\n\
         `python witness.py` (numpy and torch only) rebuilds the network in PyTorch float64, checks its outputs against u.npy, \
         computes the Jacobian J = ∂u/∂θ by autograd and its singular values, and finds the numerical rank by the rule in claim.json.\n\
         It exits 0 when that rank is the claimed {rank}, 1 otherwise, and prints a one-line conclusion.\n",
        rank = claim.rank,
        nm = claim.nm,
        p = claim.p,
        by = gradflow_version(),
    )
}
