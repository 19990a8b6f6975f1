//! Witness directories (`gradflow::run::witness`): written for dnn, resnet and gcn networks whose
//! Jacobian is rank-deficient, then re-checked by their own `witness.py` in PyTorch — the rank
//! it finds must be the one computed here from an SVD of gradflow's J, its outputs must match
//! `model.outputs`, and a wrong claim (rank edited in claim.json, outputs perturbed in u.npy)
//! must make it exit 1. Refusals: a non-empty directory, unsupported presets and activations,
//! a model that is not its config's preset, a claim that does not fit the model.
//!
//! The script needs Python with numpy and torch: `GRADFLOW_PYTHON` names the interpreter (else
//! `python3`); without one, the script runs are skipped with a message on stderr.

use crate::common;

use gradflow::activation::Activation;
use gradflow::config::{ModelConfig, ModelSpec, Preset};
use gradflow::data::Dataset;
use gradflow::graph::Graph;
use gradflow::init::{init_params, InitScheme};
use gradflow::layers::ImageShape;
use gradflow::model::Model;
use gradflow::presets;
use gradflow::run::witness::{largest_gap_rank, write_witness, WitnessClaim, INFINITE_GAP};
use gradflow::Batch;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// A fresh directory for one test, removed when the test passes (kept for inspection if it fails).
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        Self(common::fresh_dir("witness", tag))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn model_config(spec: ModelSpec, act: Activation) -> ModelConfig {
    ModelConfig {
        arch: gradflow::config::Architecture::Preset(spec),
        activation: act,
        init: InitScheme::Torch,
    }
}

/// n samples in the unit ball of R^d with sample `dup` a copy of sample 0: J's rows for the two
/// are then equal, so rank J ≤ nm − m.
fn inputs_with_duplicate(n: usize, d: usize, dup: usize, seed: u64) -> Batch {
    let mut x = Dataset::ball(n, d, 1, seed).x;
    let first = x.col(0).to_vec();
    x.col_mut(dup).copy_from_slice(&first);
    x
}

/// The claim computed here: J by gradflow's per-output vjps, its singular values by faer's SVD,
/// the rank by the largest-gap rule.
fn claim_in_rust(model: &Model, theta: &[f64], x: &Batch) -> WitnessClaim {
    let j = gradflow::ntk::jacobian(model, theta, x);
    let singular_values = j.singular_values().expect("SVD of J");
    let cut = largest_gap_rank(&singular_values);
    WitnessClaim {
        rank: cut.rank,
        nm: j.nrows(),
        p: j.ncols(),
        gap: cut.gap,
        singular_values,
    }
}

/// The interpreter to run witness scripts with, if it has numpy and torch.
fn python() -> Option<String> {
    let py = std::env::var("GRADFLOW_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&py)
        .args(["-c", "import torch, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipped: python with torch and numpy not found (set GRADFLOW_PYTHON)");
    }
    ok.then_some(py)
}

/// Runs `witness.py` in `dir`: (exit code, stdout).
fn run_script(py: &str, dir: &Path) -> (i32, String) {
    let out = Command::new(py)
        .arg("witness.py")
        .current_dir(dir)
        .output()
        .expect("run witness.py");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let code = out.status.code().unwrap_or(-1);
    eprintln!(
        "witness.py in {} → exit {code}\n{stdout}{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    (code, stdout)
}

/// The number after `prefix` on the script's line starting with it.
fn printed(stdout: &str, prefix: &str) -> f64 {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no line `{prefix}…` in:\n{stdout}"));
    let number: String = line
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'))
        .collect();
    number
        .parse()
        .unwrap_or_else(|_| panic!("`{line}` does not start with a number"))
}

fn set_claimed_rank(dir: &Path, rank: usize) {
    let path = dir.join("claim.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    v["rank"] = rank.into();
    std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

/// Writes the witness of `model` at θ on x into a fresh directory and checks it: the files, the
/// claim, and (with Python) the script's verdict, rank and outputs, then that a wrong claimed
/// rank makes it fail. Returns the directory and the claim.
fn witness_round_trip(
    tag: &str,
    config: &ModelConfig,
    model: &Model,
    theta: &[f64],
    x: &Batch,
) -> (Scratch, PathBuf, WitnessClaim) {
    let claim = claim_in_rust(model, theta, x);
    let scratch = Scratch::new(tag);
    let parent = scratch.0.clone();
    let dir = parent.join("witness");
    write_witness(&dir, config, model, theta, x, &claim).unwrap();

    let mut files = common_entries(&dir);
    files.sort();
    let mut expected = vec![
        "README.md",
        "claim.json",
        "params.safetensors",
        "u.npy",
        "witness.py",
        "x.npy",
    ];
    if config.preset() == Some(Preset::Gcn) {
        expected.push("graph_adjacency.npy");
    }
    expected.sort();
    assert_eq!(files, expected);
    assert_eq!(
        common_entries(&parent),
        vec!["witness"],
        "staging left behind"
    );

    // The data files hold what the model saw and gave.
    let (xs, rows, cols) = gradflow::io::read_matrix(&dir.join("x.npy")).unwrap();
    assert_eq!((rows, cols), (x.n(), x.features()));
    assert_eq!(xs, x.as_slice());
    let (us, rows, cols) = gradflow::io::read_matrix(&dir.join("u.npy")).unwrap();
    assert_eq!((rows, cols), (x.n(), model.out_dim()));
    assert_eq!(us, model.outputs(theta, x).as_slice());
    let loaded = gradflow::params::load(&dir.join("params.safetensors"), &model.param_specs());
    assert_eq!(loaded.unwrap(), theta);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("claim.json")).unwrap()).unwrap();
    assert_eq!(json["rank"], claim.rank);
    assert_eq!(json["nm"], claim.nm);
    assert_eq!(json["p"], claim.p);
    assert_eq!(json["model"]["preset"], config.preset().unwrap().name());

    if let Some(py) = python() {
        let (code, out) = run_script(&py, &dir);
        assert_eq!(code, 0, "witness.py did not confirm:\n{out}");
        assert_eq!(
            printed(&out, "numerical rank of J:") as usize,
            claim.rank,
            "{out}"
        );
        let rel = printed(&out, "max |u_torch - u_given| =");
        assert!(
            rel <= 1e-12,
            "torch outputs differ from gradflow's by {rel}:\n{out}"
        );
        let last = out.lines().last().unwrap_or_default();
        if claim.rank < claim.nm && claim.p >= claim.nm {
            assert!(last.contains("counterexample to Lemma 3.2"), "{out}");
        }

        // The script must be able to fail: a wrong claimed rank is not confirmed.
        let wrong = if claim.rank > 0 { claim.rank - 1 } else { 1 };
        set_claimed_rank(&dir, wrong);
        let (code, out) = run_script(&py, &dir);
        assert_eq!(code, 1, "a wrong claimed rank was confirmed:\n{out}");
        assert!(out.contains("NOT CONFIRMED"), "{out}");
        set_claimed_rank(&dir, claim.rank);
    }
    (scratch, dir, claim)
}

fn common_entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn dnn_with_a_repeated_sample_has_a_witness_torch_confirms() {
    let (n, d, m, slope) = (8, 3, 2, 0.2);
    let act = Activation::LeakyRelu { slope };
    let config = model_config(ModelSpec::Dnn { hidden: vec![6] }, act.clone());
    let model = presets::dnn(d, &[6], m, &act);
    let theta = init_params(&model.param_specs(), &InitScheme::Torch, 1);
    let x = inputs_with_duplicate(n, d, 5, 1);
    let (_scratch, dir, claim) = witness_round_trip("dnn", &config, &model, &theta, &x);
    assert!(claim.p >= claim.nm, "the example must be over-parametrised");
    assert!(
        claim.rank <= claim.nm - m,
        "two equal samples give equal rows of J, yet rank J = {} > nm − m = {}",
        claim.rank,
        claim.nm - m
    );

    // Outputs that are not the network's are not confirmed either.
    if let Some(py) = python() {
        let (mut u, rows, cols) = gradflow::io::read_matrix(&dir.join("u.npy")).unwrap();
        u[0] *= 1.0 + 1e-6;
        gradflow::io::write_matrix(&dir.join("u.npy"), &u, rows, cols).unwrap();
        let (code, out) = run_script(&py, &dir);
        assert_eq!(code, 1, "perturbed outputs were confirmed:\n{out}");
        assert!(out.contains("differ from u.npy"), "{out}");
    }
}

#[test]
fn resnet_relu_with_a_repeated_sample_has_a_witness_torch_confirms() {
    let (n, d, m) = (8, 3, 2);
    let act = Activation::Relu;
    let config = model_config(ModelSpec::Resnet { depth: 2 }, act.clone());
    let model = presets::resnet(d, 2, m, &act);
    let theta = init_params(&model.param_specs(), &InitScheme::Torch, 2);
    let x = inputs_with_duplicate(n, d, 3, 2);
    let (_scratch, _, claim) = witness_round_trip("resnet", &config, &model, &theta, &x);
    assert!(claim.p >= claim.nm, "the example must be over-parametrised");
    assert!(claim.rank <= claim.nm - m, "rank J = {}", claim.rank);
}

#[test]
fn gcn_on_a_knn_graph_has_a_witness_torch_confirms() {
    let (n, d, m, k) = (8, 3, 2, 2);
    let act = Activation::LeakyRelu { slope: 0.1 };
    let x = Dataset::ball(n, d, 1, 3).x;
    let a_hat = Graph::knn(&x, k).unwrap().normalized_adjacency();
    let config = model_config(ModelSpec::Gcn { hidden: vec![6] }, act.clone());
    let model = presets::gcn(Arc::new(a_hat.clone()), d, &[6], m, &act);
    let theta = init_params(&model.param_specs(), &InitScheme::Torch, 3);
    let (_scratch, dir, claim) = witness_round_trip("gcn", &config, &model, &theta, &x);
    assert!(claim.p >= claim.nm, "the example must be over-parametrised");
    let (a, rows, cols) = gradflow::io::read_matrix(&dir.join("graph_adjacency.npy")).unwrap();
    assert_eq!((rows, cols), (n, n));
    assert_eq!(
        a,
        a_hat.to_dense(),
        "graph_adjacency.npy is not the Â the gcn uses"
    );
}

#[test]
fn refuses_a_non_empty_directory_and_writes_nothing() {
    let act = Activation::leaky_relu();
    let config = model_config(ModelSpec::Dnn { hidden: vec![6] }, act.clone());
    let model = presets::dnn(3, &[6], 2, &act);
    let theta = init_params(&model.param_specs(), &InitScheme::Torch, 4);
    let x = Dataset::ball(4, 3, 1, 4).x;
    let claim = claim_in_rust(&model, &theta, &x);
    let scratch = Scratch::new("nonempty");
    let parent = scratch.0.clone();
    let dir = parent.join("taken");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), "mine").unwrap();
    let err = write_witness(&dir, &config, &model, &theta, &x, &claim)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("refusing") && err.contains("not empty") && err.contains("taken"),
        "{err}"
    );
    assert_eq!(common_entries(&dir), vec!["notes.txt"]);
    assert_eq!(common_entries(&parent), vec!["taken"]);

    // An existing empty directory is fine.
    std::fs::remove_file(dir.join("notes.txt")).unwrap();
    write_witness(&dir, &config, &model, &theta, &x, &claim).unwrap();
    assert!(dir.join("witness.py").is_file());
    assert_eq!(common_entries(&parent), vec!["taken"]);
}

#[test]
fn refuses_presets_and_activations_without_a_script() {
    let scratch = Scratch::new("unsupported");
    let parent = scratch.0.clone();
    let dir = parent.join("w");
    let act = Activation::leaky_relu();
    let model = presets::cnn(ImageShape::new(1, 4, 4), &[2], 3, 2, &act);
    let theta = init_params(&model.param_specs(), &InitScheme::Torch, 5);
    let x = Dataset::ball(3, 16, 1, 5).x;
    let claim = claim_in_rust(&model, &theta, &x);
    let cnn = ModelSpec::Cnn {
        channels: vec![2],
        kernel: 3,
    };
    let config = model_config(cnn, act);
    let err = write_witness(&dir, &config, &model, &theta, &x, &claim)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cnn") && err.contains("dnn, resnet, gcn"),
        "{err}"
    );

    let sigmoid = Activation::Sigmoid;
    let model = presets::dnn(3, &[4], 2, &sigmoid);
    let theta = init_params(&model.param_specs(), &InitScheme::Torch, 5);
    let x = Dataset::ball(3, 3, 1, 5).x;
    let claim = claim_in_rust(&model, &theta, &x);
    let config = model_config(ModelSpec::Dnn { hidden: vec![4] }, sigmoid);
    let err = write_witness(&dir, &config, &model, &theta, &x, &claim)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sigmoid") && err.contains("leaky-relu") && err.contains("relu"),
        "{err}"
    );
    assert!(common_entries(&parent).is_empty(), "something was written");
}

#[test]
fn refuses_a_model_or_claim_that_does_not_fit() {
    let scratch = Scratch::new("mismatch");
    let parent = scratch.0.clone();
    let dir = parent.join("w");
    let act = Activation::LeakyRelu { slope: 0.3 };
    let model = presets::dnn(3, &[6], 2, &act);
    let theta = init_params(&model.param_specs(), &InitScheme::Torch, 6);
    let x = Dataset::ball(4, 3, 1, 6).x;
    let claim = claim_in_rust(&model, &theta, &x);

    // The config's widths, preset or slope are not the model's.
    for config in [
        model_config(ModelSpec::Dnn { hidden: vec![5] }, act.clone()),
        model_config(ModelSpec::Resnet { depth: 1 }, act.clone()),
        model_config(
            ModelSpec::Dnn { hidden: vec![6] },
            Activation::LeakyRelu { slope: 0.2 },
        ),
    ] {
        let err = write_witness(&dir, &config, &model, &theta, &x, &claim)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not the"), "{err}");
    }

    // The claim's numbers are not this model's.
    let config = model_config(ModelSpec::Dnn { hidden: vec![6] }, act);
    let bad_claims = [
        WitnessClaim {
            nm: claim.nm + 1,
            ..claim.clone()
        },
        WitnessClaim {
            p: claim.p - 1,
            ..claim.clone()
        },
        WitnessClaim {
            rank: claim.nm.min(claim.p) + 1,
            ..claim.clone()
        },
        WitnessClaim {
            singular_values: claim.singular_values[1..].to_vec(),
            ..claim.clone()
        },
    ];
    for bad in bad_claims {
        let err = write_witness(&dir, &config, &model, &theta, &x, &bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("inconsistent witness claim"), "{err}");
    }
    assert!(common_entries(&parent).is_empty(), "something was written");
}

/// Asserts `largest_gap_rank(sv)` gives `rank`, `exact`, and a gap within 1e-12 (relative) of `gap`.
fn assert_rule(sv: &[f64], rank: usize, gap: Option<f64>, exact: bool) {
    let cut = largest_gap_rank(sv);
    assert_eq!((cut.rank, cut.exact), (rank, exact), "rank of {sv:?}");
    match (cut.gap, gap) {
        (None, None) => {}
        (Some(g), Some(e)) if g == e || (g - e).abs() <= 1e-12 * e => {}
        (g, _) => panic!("gap of {sv:?}: {g:?}, expected {gap:?}"),
    }
}

#[test]
fn largest_gap_rule() {
    let inf = INFINITE_GAP;
    // A clear cliff with a tail at rounding level: cut there.
    assert_rule(&[3.0, 1.0, 1e-17, 1e-18], 2, Some(1e17), true);
    // Order does not matter; an exact zero below is an infinite gap.
    assert_rule(&[0.0, 2.0, 1.0], 2, Some(inf), true);
    // Ratios among rounding-level values do not count (here 1e-17/0 would be the largest).
    assert_rule(&[1.0, 0.1, 3e-16, 1e-17, 0.0], 2, Some(0.1 / 3e-16), true);
    // No gap of 1e8: full rank.
    assert_rule(&[1.0, 0.5, 0.25], 3, None, false);
    // A gap of 1e9 whose tail is far above 100·ε·σ_max: full rank, no cliff.
    assert_rule(&[1.0, 1e-9], 2, None, false);
    // A slow decay into rounding level: the rank counts the values above tol, no cliff.
    assert_rule(&[1.0, 1e-7, 1e-14, 1e-16], 2, Some(1e7), false);
    // The tail bound is inclusive at 100·ε·σ_max.
    let tail = 100.0 * f64::EPSILON;
    assert_rule(&[1.0, tail], 1, Some(1.0 / tail), true);
    assert_rule(&[1.0, 1.01 * tail], 2, None, false);
    // The largest gap wins over an earlier, smaller one.
    assert_rule(&[1.0, 1e-9, 1e-9, 1e-30], 3, Some(1e21), true);
    assert_rule(&[0.0, 0.0], 0, Some(inf), true);
    assert_rule(&[], 0, None, false);
}
