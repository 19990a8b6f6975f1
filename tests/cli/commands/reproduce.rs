//! `reproduce` end to end: the dnn sweep's verdicts against p vs nm, resuming, the NTK
//! schedule and timing record, and shards merged into the whole sweep.

use super::*;

// ---------------------------------------------------------------------------------------------
// 8. reproduce --only dnn, and resuming it.
// ---------------------------------------------------------------------------------------------

#[test]
fn reproduce_dnn_verdicts_follow_p_vs_nm_and_rerun_resumes() {
    let tmp = TempDir::new("cli-reproduce");
    let out = tmp.join("rep");
    // GD, so the whole sweep takes seconds (the flow's w = 96 run alone takes minutes).
    let args = [
        "reproduce".as_ref(),
        "--only".as_ref(),
        "dnn".as_ref(),
        "--solver".as_ref(),
        "gd".as_ref(),
        "--out".as_ref(),
        out.as_os_str(),
        "--quiet".as_ref(),
    ];
    let first = gradflow(tmp.path(), args).ok();
    let idx = read_json(&out.join("reproduce.json"));
    let ablations = idx["ablations"].as_array().unwrap();
    assert_eq!(ablations.len(), 1);
    assert_eq!(ablations[0]["name"], "dnn");
    let runs = ablations[0]["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 6, "{idx}");

    let (n, d, m) = (100, 20, 5);
    let mut labels = Vec::new();
    for r in runs {
        let label = r["label"].as_str().unwrap().to_string();
        let s = &r["summary"];
        let v = &r["verdict"];
        let w = json_usize(r, "value");
        assert_eq!(label, format!("w={w}-seed0"));
        // p by hand for d → [w, w] → m.
        let p = dense_param_count(d, &[w, w], m);
        assert_eq!(json_usize(s, "p"), p, "{label}");
        assert_eq!((json_usize(s, "n"), json_usize(s, "m")), (n, m), "{label}");
        assert_eq!(s["overparametrized"], p >= n * m, "{label}");
        assert_eq!(v["overparametrized"], p >= n * m, "{label}");
        assert_eq!(s["status"], "completed", "{label}");
        // λ_min(H(0)) "positive" means proven: a certified lower bound, at most the eigensolver's
        // λ_min plus its accuracy (an independent route).
        let ntk0 = &s["ntk_initial"];
        let certified = !ntk0["lambda_min_lower"].is_null();
        assert_eq!(v["lambda_min_positive"], certified, "{label}");
        if certified {
            let lower = json_f64(ntk0, "lambda_min_lower");
            let (lmin, acc) = (
                json_f64(ntk0, "lambda_min"),
                json_f64(ntk0, "lambda_min_accuracy"),
            );
            assert!(
                lower > 0.0 && lower <= lmin + acc,
                "{label}: {lower} vs {lmin} ± {acc}"
            );
        }
        if p < n * m {
            // rank H ≤ p < nm: nothing positive can be proven, and the theorem is silent.
            assert!(
                !certified,
                "{label}: λ_min(H) > 0 with p < nm is impossible"
            );
            assert!(json_usize(ntk0, "jacobian_rank") <= p, "{label}");
            assert_eq!(v["kind"], "under-parametrised", "{label}");
            assert_eq!(v["consistent"], true, "{label}");
        }
        if p as f64 / (n * m) as f64 >= 7.0 {
            assert_eq!(v["kind"], "confirmed", "{label}: {}", v["line"]);
            assert_eq!(v["consistent"], true, "{label}");
        }
        // The index's summary is the run directory's summary.json.
        let dir = out.join(r["dir"].as_str().unwrap());
        let on_disk = read_json(&dir.join("summary.json"));
        assert_eq!(&on_disk, s, "{label}");
        labels.push(label);
    }
    let mut want = labels.clone();
    want.sort();
    assert_eq!(
        entries(&out.join("dnn")),
        want,
        "run directories (no staging dirs)"
    );
    for l in &labels {
        assert!(first.stdout.contains(l.as_str()), "{}", first.describe());
    }

    // Re-running resumes: no run directory is rewritten.
    let snapshot = |f: &str| -> Vec<(Vec<u8>, std::time::SystemTime)> {
        labels
            .iter()
            .map(|l| {
                let p = out.join("dnn").join(l).join(f);
                (
                    std::fs::read(&p).unwrap(),
                    std::fs::metadata(&p).unwrap().modified().unwrap(),
                )
            })
            .collect()
    };
    let before = (snapshot("summary.json"), snapshot("metrics.csv"));
    let second = gradflow(tmp.path(), args).ok();
    let after = (snapshot("summary.json"), snapshot("metrics.csv"));
    assert!(before == after, "resumed runs must not be rewritten");
    let idx2 = read_json(&out.join("reproduce.json"));
    let runs2 = idx2["ablations"][0]["runs"].as_array().unwrap();
    assert_eq!(runs2.len(), 6);
    for (a, b) in runs.iter().zip(runs2) {
        assert_eq!(a["verdict"], b["verdict"]);
        assert_json_close(&a["summary"], &b["summary"], "summary");
    }
    assert_eq!(
        first.stdout.lines().filter(|l| l.contains('✓')).count(),
        second.stdout.lines().filter(|l| l.contains('✓')).count()
    );
}

#[test]
fn resumed_reproduce_index_is_identical_to_the_first() {
    let tmp = TempDir::new("cli-reproduce-roundtrip");
    let out = tmp.join("rep");
    // Shard 0 of 6 is the single run w=6 (a few seconds), by the default solver: the flow.
    let args = [
        "reproduce".as_ref(),
        "--only".as_ref(),
        "dnn".as_ref(),
        "--shard".as_ref(),
        "0/6".as_ref(),
        "--out".as_ref(),
        out.as_os_str(),
        "--quiet".as_ref(),
    ];
    let run = gradflow(tmp.path(), args).ok();
    assert!(
        run.stderr
            .contains("by the gradient-flow solver (the default at quick scale"),
        "{}",
        run.describe()
    );
    let first = std::fs::read_to_string(out.join("reproduce.json")).unwrap();
    let index: serde_json::Value = serde_json::from_str(&first).unwrap();
    let summary = &index["ablations"][0]["runs"][0]["summary"];
    assert_eq!(summary["solver"], "flow", "{summary}");
    gradflow(tmp.path(), args).ok();
    let second = std::fs::read_to_string(out.join("reproduce.json")).unwrap();
    let diff: Vec<(&str, &str)> = first
        .lines()
        .zip(second.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert!(
        diff.is_empty(),
        "resuming changed reproduce.json: {diff:#?}"
    );
}

/// `--ntk-every 0` leaves only the first and last NTK checkpoints in every run, and the timing
/// record (timing.json, printed) counts exactly the runs' work and checkpoints.
#[test]
fn reproduce_ntk_every_and_timing_record() {
    let tmp = TempDir::new("cli-reproduce-timing");
    let out = tmp.join("rep");
    let run = gradflow(
        tmp.path(),
        [
            "reproduce".as_ref(),
            "--only".as_ref(),
            "dnn".as_ref(),
            "--shard".as_ref(),
            "0/6".as_ref(),
            "--ntk-every".as_ref(),
            "0".as_ref(),
            "--out".as_ref(),
            out.as_os_str(),
            "--quiet".as_ref(),
        ],
    )
    .ok();
    assert!(run.stdout.contains("TFLOP"), "{}", run.stdout);
    let index = read_json(&out.join("reproduce.json"));
    let r = &index["ablations"][0]["runs"][0];
    let dir = out.join(r["dir"].as_str().unwrap());
    let ntk_rows = std::fs::read_to_string(dir.join("ntk.csv"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(ntk_rows, 1 + 2, "header + the start and the end");
    let s = &r["summary"];
    let t = read_json(&out.join("timing.json"));
    assert_eq!(t["runs"], 1);
    assert_eq!(t["ntk_checkpoints"], 2);
    let (n, p, evals) = (
        s["n"].as_f64().unwrap(),
        s["p"].as_f64().unwrap(),
        s["gradient_evaluations"].as_f64().unwrap(),
    );
    assert_eq!(
        t["training_work_flop"].as_f64().unwrap(),
        6.0 * n * p * evals
    );
    let at_peak =
        t["training_work_flop"].as_f64().unwrap() / (t["peak_gflops"].as_f64().unwrap() * 1e9);
    assert!((t["seconds_at_peak"].as_f64().unwrap() - at_peak).abs() <= 1e-12 * at_peak);
    assert!(
        index.get("timing").is_none(),
        "timing stays out of reproduce.json"
    );
}

// ---------------------------------------------------------------------------------------------
// 9. Shards and merge: the two halves of a sweep, merged, are the whole sweep.
// ---------------------------------------------------------------------------------------------

#[test]
fn shards_partition_the_sweep_and_merge_joins_them() {
    let tmp = TempDir::new("cli-shards");
    let mut labels = Vec::new();
    for i in 0..2 {
        let out = tmp.join(format!("shard{i}"));
        let shard = format!("{i}/2");
        let run = gradflow(
            tmp.path(),
            [
                "reproduce",
                "--only",
                "resnet",
                "--quiet",
                "--shard",
                &shard,
                "--out",
                out.to_str().unwrap(),
            ],
        );
        assert!(run.success, "{}", run.describe());
        let idx: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("reproduce.json")).unwrap())
                .unwrap();
        let runs = idx["ablations"][0]["runs"].as_array().unwrap();
        // The resnet sweep has 6 depths; shard i takes runs with index ≡ i (mod 2).
        assert_eq!(runs.len(), 3, "shard {i}");
        labels.extend(
            runs.iter()
                .map(|r| r["label"].as_str().unwrap().to_string()),
        );
    }
    let unique: BTreeSet<_> = labels.iter().cloned().collect();
    assert_eq!(unique.len(), 6, "the shards overlap: {labels:?}");
    let merged = tmp.join("merged");
    let run = gradflow(
        tmp.path(),
        [
            "merge",
            tmp.join("shard0").to_str().unwrap(),
            tmp.join("shard1").to_str().unwrap(),
            "--out",
            merged.to_str().unwrap(),
        ],
    );
    assert!(run.success, "{}", run.describe());
    let idx: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(merged.join("reproduce.json")).unwrap())
            .unwrap();
    let runs = idx["ablations"][0]["runs"].as_array().unwrap();
    let merged_labels: BTreeSet<_> = runs
        .iter()
        .map(|r| r["label"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(merged_labels, unique);
    // Sorted by depth, and every run directory it points to holds that run's summary.
    let depths: Vec<u64> = runs.iter().map(|r| r["value"].as_u64().unwrap()).collect();
    assert!(depths.windows(2).all(|w| w[0] <= w[1]), "{depths:?}");
    for r in runs {
        assert!(Path::new(r["dir"].as_str().unwrap())
            .join("summary.json")
            .exists());
    }
    assert!(merged.join("report.html").exists());
}
