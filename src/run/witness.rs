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

use crate::activation::Activation;
use crate::batch::Batch;
use crate::config::{ModelConfig, ModelSpec, Preset};
use crate::error::{Error, Result};
use crate::graph::SparseMatrix;
use crate::io;
use crate::layers::{GraphStructure, Layer, Structure};
use crate::model::Model;
use crate::presets;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// The preset of `config` when a witness script can rebuild it ([`WITNESS_PRESETS`]).
fn witness_preset(config: &ModelConfig) -> Result<Preset> {
    match config.preset() {
        Some(p) if WITNESS_PRESETS.contains(&p) => Ok(p),
        _ => Err(no_witness_script(config)),
    }
}

fn no_witness_script(config: &ModelConfig) -> Error {
    Error::Invalid(format!(
        "no witness script for {}: witnesses exist for presets {} only (write the numbers alone)",
        config.label(),
        WITNESS_PRESETS.map(|p| p.name()).join(", ")
    ))
}

fn gradflow_version() -> String {
    format!("gradflow {}", env!("CARGO_PKG_VERSION"))
}

/// The model's description for `claim.json`, after checking that `model` is the preset `config`
/// describes (same tensors, bit-identical outputs at θ on x) and that the witness script can
/// rebuild it.
fn describe_model(
    preset: Preset,
    config: &ModelConfig,
    model: &Model,
    theta: &[f64],
    x: &Batch,
) -> Result<serde_json::Value> {
    let activation = match config.activation {
        Activation::LeakyRelu { slope } => serde_json::json!({ "kind": "leaky-relu", "slope": slope }),
        Activation::Relu => serde_json::json!({ "kind": "relu" }),
        ref other => {
            return Err(Error::Invalid(format!(
                "no witness script for activation {other}: witnesses support leaky-relu (any slope) and relu only (write the numbers alone)"
            )))
        }
    };
    let mismatch = |what: String| {
        Error::Invalid(format!(
            "cannot write a witness: the model is not the {preset} its config describes ({what})"
        ))
    };
    if model.preset != Some(preset) {
        return Err(mismatch(format!(
            "the model was built as `{}`",
            model.preset_name()
        )));
    }
    if model.activation != config.activation {
        return Err(mismatch(format!("its activation is {}", model.activation)));
    }
    if theta.len() != model.p() {
        return Err(Error::Invalid(format!(
            "cannot write a witness: θ has {} entries but the model has p = {}",
            theta.len(),
            model.p()
        )));
    }
    if x.features() != model.in_dim() || x.n() == 0 {
        return Err(Error::Invalid(format!(
            "cannot write a witness: the inputs are {} × {} (n × d) but the model takes d = {}",
            x.n(),
            x.features(),
            model.in_dim()
        )));
    }
    let (n, d, m) = (x.n(), x.features(), model.out_dim());
    let act = &config.activation;
    let rebuilt = match config.spec() {
        Some(ModelSpec::Dnn { hidden }) => presets::dnn(d, hidden, m, act),
        Some(ModelSpec::Resnet { depth }) => presets::resnet(d, *depth, m, act),
        Some(ModelSpec::Gcn { hidden }) => {
            presets::gcn(propagation_matrix(model)?, d, hidden, m, act)
        }
        _ => return Err(no_witness_script(config)),
    };
    let spec_list = |model: &Model| -> Vec<(String, Vec<usize>)> {
        model
            .param_specs()
            .into_iter()
            .map(|s| (s.name, s.shape))
            .collect()
    };
    let (found, expected) = (spec_list(model), spec_list(&rebuilt));
    if found != expected {
        return Err(mismatch(format!(
            "its tensors are {found:?}, the config's {preset} has {expected:?}"
        )));
    }
    let outputs = model.outputs(theta, x);
    if !outputs.all_finite() {
        return Err(Error::Invalid(
            "cannot write a witness: the model's outputs at θ are not all finite".into(),
        ));
    }
    if outputs != rebuilt.outputs(theta, x) {
        return Err(mismatch(
            "the same tensors give different outputs at θ".to_string(),
        ));
    }
    let mut description = serde_json::json!({
        "preset": preset.name(),
        "n": n,
        "d": d,
        "m": m,
        "activation": activation,
    });
    let sizes = match config.spec() {
        Some(ModelSpec::Resnet { depth }) => serde_json::json!({
            "depth": depth,
            "definition": "h^0 = x; h^l = h^{l-1} + σ(W^l h^{l-1} + b^l), W^l ∈ R^{d×d}, l = 1..depth; f = W h^depth + b",
        }),
        Some(ModelSpec::Gcn { hidden }) => serde_json::json!({
            "hidden": hidden,
            "graph_adjacency": "graph_adjacency.npy",
            "definition": "H^0 = X (n × d); H^l = σ(Â H^{l-1} W^l + 1 b^lᵀ); F = Â H^{L-1} W^L + 1 b^Lᵀ, Â = D̃^{-1/2}(A + I)D̃^{-1/2}",
        }),
        Some(ModelSpec::Dnn { hidden }) => serde_json::json!({
            "hidden": hidden,
            "definition": "h^0 = x; h^l = σ(W^l h^{l-1} + b^l); f = W^L h^{L-1} + b^L",
        }),
        _ => return Err(no_witness_script(config)),
    };
    let obj = description.as_object_mut().expect("a JSON object");
    obj.extend(sizes.as_object().expect("a JSON object").clone());
    obj.insert(
        "sigma".into(),
        "σ(z) = z for z > 0, slope·z otherwise (relu: slope 0); σ'(0) = slope, as PyTorch".into(),
    );
    Ok(description)
}

/// The propagation matrix Â of a gcn: the one sparse matrix all its propagation layers share.
fn propagation_matrix(model: &Model) -> Result<Arc<SparseMatrix>> {
    fn collect(layer: &dyn Layer, out: &mut Vec<Arc<SparseMatrix>>) {
        if let Structure::Graph(GraphStructure::Propagate(a)) = layer.structure() {
            out.push(a);
        }
        for child in layer.children() {
            collect(child, out);
        }
    }
    let mut found = Vec::new();
    collect(model.net.as_ref(), &mut found);
    let Some(first) = found.first().cloned() else {
        return Err(Error::Invalid(
            "cannot write a witness: the gcn has no graph propagation layer".into(),
        ));
    };
    if found.iter().any(|a| **a != *first) {
        return Err(Error::Invalid(
            "cannot write a witness: the gcn's propagation layers use different matrices".into(),
        ));
    }
    Ok(first)
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

/// Refuses a `dir` that exists and is not an empty directory (nothing is ever overwritten).
fn check_target(dir: &Path) -> Result<()> {
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
fn build_in_staging(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
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
fn claim_json(claim: &WitnessClaim, sorted_sv: &[f64], model: serde_json::Value) -> String {
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

fn readme(preset: Preset, claim: &WitnessClaim) -> String {
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

/// `witness.py`: reads everything from its own directory; see the module docs.
const WITNESS_SCRIPT: &str = r#"#!/usr/bin/env python3
"""Re-checks a gradflow witness without gradflow: the rank of J = du/dtheta.

Rebuilds the network described in claim.json in PyTorch (float64), loads theta from
params.safetensors (parsed by hand: no safetensors package needed), checks the outputs against
u.npy, computes J by autograd, prints its singular values and numerical rank (the rule in
claim.json) and exits 0 exactly when that rank is the claimed one. Needs numpy and torch only.
"""
import json
import struct
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
U_REL_TOL = 1e-9  # |u_torch - u_given| / max|u_given| allowed


def load_safetensors(path):
    """[(name, float64 tensor)] in data order: 8-byte LE header length, JSON header, LE data."""
    raw = Path(path).read_bytes()
    (hlen,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + hlen])
    header.pop("__metadata__", None)
    base, dtypes, out = 8 + hlen, {"F64": "<f8", "F32": "<f4"}, []
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        if info["dtype"] not in dtypes:
            raise ValueError(f"tensor {name}: dtype {info['dtype']} is not F64/F32")
        lo, hi = info["data_offsets"]
        arr = np.frombuffer(raw[base + lo:base + hi], dtype=dtypes[info["dtype"]])
        out.append((name, torch.from_numpy(arr.astype(np.float64).reshape(info["shape"]))))
    return out


class Sigma(torch.nn.Module):
    """gradflow's activation: z for z > 0, slope*z otherwise (derivative at 0: slope)."""

    def __init__(self, slope):
        super().__init__()
        self.slope = slope

    def forward(self, z):
        return torch.where(z > 0, z, self.slope * z)


class Residual(torch.nn.Module):
    """h + fn(h); the branch's tensors are named fn.*"""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, h):
        return h + self.fn(h)


class Propagate(torch.nn.Module):
    """Graph propagation across samples (rows): A_hat @ H. No parameters."""

    def __init__(self, a_hat):
        super().__init__()
        self.register_buffer("a_hat", a_hat, persistent=False)

    def forward(self, h):
        return self.a_hat @ h


def build(model, a_hat):
    """The network of claim.json's model, as nn.Sequential with gradflow's tensor names."""
    act = model["activation"]
    slope = {"leaky-relu": lambda: float(act["slope"]), "relu": lambda: 0.0}[act["kind"]]()
    d, m, preset = model["d"], model["m"], model["preset"]

    def linear(i, o):
        return torch.nn.Linear(i, o, dtype=torch.float64)

    layers, prev = [], d
    if preset == "dnn":
        for w in model["hidden"]:
            layers += [linear(prev, w), Sigma(slope)]
            prev = w
        layers.append(linear(prev, m))
    elif preset == "resnet":
        layers = [Residual(torch.nn.Sequential(linear(d, d), Sigma(slope)))
                  for _ in range(model["depth"])]
        layers.append(linear(d, m))
    elif preset == "gcn":
        for w in model["hidden"]:
            layers += [Propagate(a_hat), linear(prev, w), Sigma(slope)]
            prev = w
        layers += [Propagate(a_hat), linear(prev, m)]
    else:
        raise ValueError(f"unknown preset {preset}")
    return torch.nn.Sequential(*layers)


def jacobian(net, params, names, x):
    """J (nm x p, row i*m + a, columns in theta's order) by reverse-mode autograd."""
    def u_of(prm):
        return torch.func.functional_call(net, prm, (x,)).reshape(-1)
    try:
        jac = torch.func.jacrev(u_of)(params)
        nm = next(iter(jac.values())).shape[0]
        return torch.cat([jac[k].reshape(nm, -1) for k in names], dim=1)
    except (AttributeError, RuntimeError):  # old torch without torch.func: one grad per row
        leaves = [params[k].clone().requires_grad_(True) for k in names]
        u = u_of(dict(zip(names, leaves)))
        rows = [torch.cat([g.reshape(-1) for g in
                           torch.autograd.grad(u[r], leaves, retain_graph=True, allow_unused=False)])
                for r in range(u.numel())]
        return torch.stack(rows)


def largest_gap_rank(s, min_gap, tail_multiple):
    """(rank, gap, exact) by claim.json's rank_rule (gap None at full rank, inf for an exact 0)."""
    s = sorted((float(v) for v in s), reverse=True)
    full = len(s)
    if full == 0 or s[0] <= 0:
        return 0, (float("inf") if full else None), full > 0
    tol = tail_multiple * np.finfo(np.float64).eps * s[0]
    best = None
    for r in range(1, full):
        hi, lo = s[r - 1], s[r]
        if hi <= tol:
            break
        ratio = float("inf") if lo == 0 else hi / lo
        if best is None or ratio > best[1]:
            best = (r, ratio)
    if best is not None and best[1] >= min_gap and s[best[0]] <= tol:
        return best[0], best[1], True
    rank = sum(1 for v in s if v > tol)
    return rank, (best[1] if best is not None and rank < full else None), False


def summary(s, rank):
    k, show = len(s), set(range(min(5, len(s)))) | set(range(max(0, len(s) - 3), len(s)))
    show |= {r for r in (rank - 2, rank - 1, rank, rank + 1) if 0 <= r < k}
    out, last = [], -1
    for i in sorted(show):
        if i > last + 1:
            out.append("...")
        out.append(f"s_{i + 1} = {s[i]:.6e}")
        last = i
    return ", ".join(out)


def main():
    claim = json.loads((HERE / "claim.json").read_text(encoding="utf-8"))
    model = claim["model"]
    x = torch.from_numpy(np.load(HERE / "x.npy").astype(np.float64))
    u_given = np.load(HERE / "u.npy").astype(np.float64)
    a_hat = None
    if model["preset"] == "gcn":
        a_hat = torch.from_numpy(np.load(HERE / model["graph_adjacency"]).astype(np.float64))
    net = build(model, a_hat)
    tensors = load_safetensors(HERE / "params.safetensors")
    net.load_state_dict(dict(tensors), strict=True)
    names = [k for k, _ in tensors]
    params = {k: t for k, t in tensors}
    p = sum(t.numel() for t in params.values())
    problems = []

    with torch.no_grad():
        u = net(x)
    n, m = u.shape
    nm = n * m
    print(f"model: {model['preset']}, n = {n}, d = {model['d']}, m = {m}, "
          f"activation = {model['activation']}; nm = {nm}, p = {p}")
    if not torch.isfinite(u).all():
        problems.append("the outputs are not all finite")
    if (nm, p) != (claim["nm"], claim["p"]):
        problems.append(f"nm, p = {nm}, {p} here but claim.json says {claim['nm']}, {claim['p']}")
    if u_given.shape != tuple(u.shape):
        problems.append(f"u.npy has shape {u_given.shape}, the network gives {tuple(u.shape)}")
    else:
        diff = float(np.max(np.abs(u.numpy() - u_given)))
        rel = diff / max(float(np.max(np.abs(u_given))), np.finfo(np.float64).tiny)
        print(f"max |u_torch - u_given| = {diff:.3e} (relative {rel:.3e}, allowed {U_REL_TOL:.0e})")
        if not rel <= U_REL_TOL:
            problems.append(f"the outputs differ from u.npy (relative {rel:.3e} > {U_REL_TOL:.0e})")

    J = jacobian(net, params, names, x)
    if not torch.isfinite(J).all():
        problems.append("J is not all finite")
    s = torch.linalg.svdvals(J).numpy()
    rule = claim["rank_rule"]
    rank, gap, exact = largest_gap_rank(s, rule["min_gap"], rule["tail_eps_multiple"])
    print(f"J: {J.shape[0]} x {J.shape[1]}, {len(s)} singular values (descending): {summary(s, rank)}")
    claimed_s = np.array(claim["singular_values"], dtype=np.float64)
    if claimed_s.shape == s.shape and s[0] > 0:
        print(f"max |s_torch - s_claimed| / s_1 = {np.max(np.abs(s - claimed_s)) / s[0]:.3e}")
    if gap is None:
        gap_text = "no gap: full rank"
    else:
        kind = "a cliff to rounding level" if exact else "no cliff: rank = count above tolerance"
        gap_text = f"gap s_{rank}/s_{rank + 1} = {gap:.3e}, {kind}"
    print(f"numerical rank of J: {rank} ({gap_text}); claim.json: {claim['rank']}")
    if rank != claim["rank"]:
        problems.append(f"rank J = {rank} here but claim.json says {claim['rank']}")

    if problems:
        print("NOT CONFIRMED: " + "; ".join(problems))
        return 1
    if rank < nm and p >= nm and exact:
        print(f"rank J = {rank} < nm = {nm} although p = {p} >= nm: H = J J^T is singular "
              f"— a counterexample to Lemma 3.2")
    elif rank < nm and p >= nm:
        print(f"rank J = {rank} < nm = {nm} although p = {p} >= nm, but without a clear cliff: "
              f"H = J J^T is singular to working precision, not shown exactly singular")
    elif rank < nm:
        print(f"rank J = {rank} < nm = {nm} with p = {p} < nm: H = J J^T is singular, "
              f"as it must be (no counterexample: Lemma 3.2 needs p >= nm)")
    else:
        print(f"rank J = nm = {nm} (p = {p}): H = J J^T is positive definite here (no counterexample)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # any failure to re-check is a failure of the witness
        print(f"NOT CONFIRMED: {type(e).__name__}: {e}")
        sys.exit(1)
"#;

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
