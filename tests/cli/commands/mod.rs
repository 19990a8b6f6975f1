//! End-to-end tests of the `gradflow` binary: every test runs the real executable on a small
//! config in a fresh temporary directory and checks what it wrote by reading the files with the
//! independent readers of `tests/common/cli.rs` and recomputing numbers by hand (forward passes,
//! finite-difference Jacobians, trapezoid integrals, parameter counts, k-NN graphs).

mod data;
mod examples;
mod inspect_ntk;
mod reproduce;
mod train_run;

use crate::common::cli as support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use support::*;

/// A reduced copy of examples/dnn.toml: p = 9·32 + 33·16 + 17·3 = 867 ≥ nm = 120.
const SMALL_DNN: &str = r#"# reduced examples/dnn.toml
seed = 7

[data]
kind = "ball"
n = 40
d = 8
m = 3

[model]
preset = "dnn"
hidden = [32, 16]
activation = "leaky-relu"
init = "torch"

[train]
solver = "gd"
lr = 0.2
epochs = 300
loss = "mse"
log_every = 1

[ntk]
every = 100
"#;
const SMALL_DNN_P: usize = 9 * 32 + 33 * 16 + 17 * 3;
const SMALL_EPOCHS: usize = 300;
const SMALL_LR: f64 = 0.2;

const RUN_FILES: [&str; 12] = [
    "config.toml",
    "metrics.csv",
    "ntk.csv",
    "params_final.safetensors",
    "params_init.safetensors",
    "plots",
    "report.html",
    "report.md",
    "sliding.csv",
    "summary.json",
    "x.npy",
    "y.npy",
];
const METRICS_HEADER: &str = "epoch,t,loss,grad_norm,kink_crossings,chattering,loss_linearised";
const NTK_HEADER: &str = "epoch,t,loss,lambda_min,lambda_max,condition,lambda_min_accuracy,integral_lambda_min,bound,bound_holds,gd_stability,ntk_drift,rank,lambda_min_lower";

/// Σ_l (d_{l−1} + 1)·d_l for the widths d → hidden → m.
fn dense_param_count(d: usize, hidden: &[usize], m: usize) -> usize {
    let mut w = vec![d];
    w.extend_from_slice(hidden);
    w.push(m);
    w.windows(2).map(|p| (p[0] + 1) * p[1]).sum()
}

/// Writes `config` to `<tmp>/cfg/<name>.toml` and trains it into `<tmp>/runs/<out>`.
fn train(tmp: &TempDir, name: &str, config: &str, out: &str) -> (std::path::PathBuf, Run) {
    let cfg = tmp.write(format!("cfg/{name}.toml"), config);
    let out = tmp.mkdir("runs").join(out);
    let run = gradflow(
        tmp.path(),
        [
            "train".as_ref(),
            cfg.as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
            "--quiet".as_ref(),
        ],
    )
    .ok();
    (out, run)
}

fn json_f64(v: &serde_json::Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("summary field {key} is not a number: {v}"))
}

fn json_usize(v: &serde_json::Value, key: &str) -> usize {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("summary field {key} is not an integer: {v}")) as usize
}

/// serde_json (without its `float_roundtrip` feature) may parse a float 1 ulp off the value
/// that was written, so numbers read from JSON are compared to a few ulps.
fn assert_close(a: f64, b: f64, what: &str) {
    assert!(rel_diff(a, b) <= 1e-15, "{what}: {a} vs {b}");
}

/// Structural equality of two JSON values, numbers to a few ulps (see [`assert_close`]).
fn assert_json_close(a: &serde_json::Value, b: &serde_json::Value, path: &str) {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            assert_close(x.as_f64().unwrap(), y.as_f64().unwrap(), path)
        }
        (Value::Object(x), Value::Object(y)) => {
            assert_eq!(
                x.keys().collect::<Vec<_>>(),
                y.keys().collect::<Vec<_>>(),
                "{path}"
            );
            for (k, v) in x {
                assert_json_close(v, &y[k], &format!("{path}.{k}"));
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{path}");
            for (i, (u, v)) in x.iter().zip(y).enumerate() {
                assert_json_close(u, v, &format!("{path}[{i}]"));
            }
        }
        _ => assert_eq!(a, b, "{path}"),
    }
}

/// Least-squares slope r of ln L ≈ a − r t (independent reimplementation of the README's
/// "fitted linear rate of log L").
fn fitted_rate(t: &[f64], l: &[f64]) -> f64 {
    let pts: Vec<(f64, f64)> = t
        .iter()
        .zip(l)
        .filter(|(_, l)| **l > 0.0)
        .map(|(t, l)| (*t, l.ln()))
        .collect();
    let k = pts.len() as f64;
    let mt = pts.iter().map(|p| p.0).sum::<f64>() / k;
    let ml = pts.iter().map(|p| p.1).sum::<f64>() / k;
    let stt: f64 = pts.iter().map(|p| (p.0 - mt) * (p.0 - mt)).sum();
    let stl: f64 = pts.iter().map(|p| (p.0 - mt) * (p.1 - ml)).sum();
    -stl / stt
}
