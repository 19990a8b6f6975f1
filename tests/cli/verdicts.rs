//! Verdicts that say what is proven: the quick sweeps' own runs classified from J's singular
//! values (exact rank deficiency that persists under perturbation = counterexample; a certified
//! λ_min > 0 = confirmed), never from H's eigenvalues against a rounding threshold.
//!
//! Each run is the quick sweep's configuration at θ(0) with a short training (the verdict's rank
//! and persistence are about θ(0)); the expected ranks are checked against an independent SVD
//! of an explicitly built Jacobian, not against gradflow's own earlier output.

use crate::common;

use gradflow::experiment::{ablation, Scale, VerdictKind};
use gradflow::run::{self, RunOptions};

/// The quick sweep's run `label` of ablation `name`, shortened to `epochs` epochs with NTK
/// checkpoints at the start and the end.
fn quick_run(name: &str, value: usize, epochs: usize) -> gradflow::config::Config {
    let ab = ablation(name, Scale::Quick, 1).unwrap();
    let mut c = ab
        .runs
        .into_iter()
        .find(|r| r.value == value)
        .unwrap_or_else(|| panic!("{name} has no run with value {value}"))
        .config;
    c.train.epochs = epochs;
    c.ntk.every = 0;
    c
}

/// Singular values of J by faer's SVD of the explicit Jacobian, descending.
fn singular_values(prep: &run::Prepared, theta: &[f64]) -> Vec<f64> {
    let j = gradflow::ntk::jacobian(&prep.model, theta, &prep.data.x);
    let mut s = j.singular_values().expect("SVD converges");
    s.sort_by(|a, b| b.total_cmp(a));
    s
}

#[test]
fn quick_dnn_w14_is_a_counterexample_with_a_witness() {
    let config = quick_run("dnn", 14, 20);
    let prep = run::prepare(&config).unwrap();
    assert!(prep.model.p() >= prep.nm(), "w = 14 is over-parametrised");
    // Independent: the cliff in J's singular values.
    let s = singular_values(&prep, &prep.theta0);
    let cliff = (0..s.len() - 1)
        .max_by(|&a, &b| (s[a] / s[a + 1]).total_cmp(&(s[b] / s[b + 1])))
        .unwrap();
    let independent_rank = cliff + 1;
    assert!(s[cliff] / s[cliff + 1] > 1e8, "a cliff of > 1e8 in σ(J)");
    assert!(independent_rank < prep.nm());

    let out = common::fresh_dir("verdicts", "dnn14");
    let dir = out.join("run");
    let summary = run::execute(&prep, &dir, &RunOptions::default()).unwrap();
    let v = summary
        .verdict
        .as_ref()
        .expect("summary carries its verdict");
    assert_eq!(v.kind, VerdictKind::Counterexample, "{}", v.line);
    assert!(v.line.starts_with("counterexample:"), "{}", v.line);
    let n0 = summary.ntk_initial.as_ref().unwrap();
    assert_eq!(n0.jacobian.jacobian_rank, Some(independent_rank));
    assert!(n0.jacobian.rank_gap.unwrap() >= 1e8);
    assert_eq!(n0.jacobian.lambda_min_lower, None);
    let persistence = n0.jacobian.persistence.as_ref().unwrap();
    assert!(persistence.persistent && persistence.draws >= 3);
    // summary.json holds the stable field names other tools read.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(json["verdict"]["kind"], "counterexample");
    assert_eq!(json["ntk_initial"]["jacobian_rank"], independent_rank);
    assert!(json["ntk_initial"]["block_ranks"]["0.weight"].is_u64());
    assert!(json["activation_patterns"]
        .as_array()
        .is_some_and(|a| !a.is_empty()));
    // The witness directory is there, with the script and the data to re-check the claim.
    for f in ["x.npy", "params.safetensors", "witness.py", "claim.json"] {
        assert!(dir.join("witness").join(f).is_file(), "witness/{f}");
    }
    let ntk_csv = std::fs::read_to_string(dir.join("ntk.csv")).unwrap();
    assert!(ntk_csv
        .lines()
        .next()
        .unwrap()
        .ends_with("rank,lambda_min_lower"));
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn full_rank_near_threshold_resnet_is_never_a_counterexample() {
    // The quick ResNet at depth 4: p/nm = 1.10, J of full rank but ill-conditioned.
    let config = quick_run("resnet", 4, 20);
    let prep = run::prepare(&config).unwrap();
    let s = singular_values(&prep, &prep.theta0);
    let nm = prep.nm();
    assert!(
        s[nm - 1] > 0.0 && s[nm - 1] / s[0] > 1e-12,
        "full rank by an independent SVD"
    );

    let out = common::fresh_dir("verdicts", "resnet4");
    let summary = run::execute(&prep, &out.join("run"), &RunOptions::default()).unwrap();
    let v = summary.verdict.as_ref().unwrap();
    assert!(
        matches!(v.kind, VerdictKind::Confirmed | VerdictKind::Undecided),
        "{}",
        v.line
    );
    let n0 = summary.ntk_initial.as_ref().unwrap();
    assert_eq!(n0.jacobian.jacobian_rank, Some(nm));
    assert_eq!(n0.jacobian.rank_exact_deficient, Some(false));
    // λ_min from the SVD agrees with the independent σ_min² to rounding.
    let l = n0.jacobian.lambda_min_svd.unwrap();
    let expect = s[nm - 1] * s[nm - 1];
    assert!((l - expect).abs() <= 1e-6 * expect, "{l} vs {expect}");
    if let Some(lower) = n0.jacobian.lambda_min_lower {
        assert!(lower > 0.0 && lower <= expect * (1.0 + 1e-9));
    }
    if v.kind == VerdictKind::Undecided {
        assert!(v.reason.is_some(), "undecided says why");
    }
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn under_parametrised_runs_show_zero_with_the_rank_not_a_negative_lambda() {
    let config = quick_run("dnn", 6, 5);
    let prep = run::prepare(&config).unwrap();
    assert!(prep.model.p() < prep.nm());
    let out = common::fresh_dir("verdicts", "dnn6");
    let summary = run::execute(&prep, &out.join("run"), &RunOptions::default()).unwrap();
    let v = summary.verdict.as_ref().unwrap();
    assert_eq!(v.kind, VerdictKind::UnderParametrised, "{}", v.line);
    let n0 = summary.ntk_initial.as_ref().unwrap();
    let rank = n0.jacobian.jacobian_rank.unwrap();
    assert!(rank <= prep.model.p());
    let text = gradflow::experiment::verdict::lambda_min_text(n0, prep.nm());
    assert_eq!(text, format!("0 (rank {rank} of {})", prep.nm()));
    let _ = std::fs::remove_dir_all(&out);
}
