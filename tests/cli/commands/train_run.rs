//! `train` end to end: a complete, self-consistent run directory; the losses recomputed by a
//! hand-written forward pass from the saved data and parameters; determinism; `log_every` and
//! `--force`.

use super::*;

// ---------------------------------------------------------------------------------------------
// 1. train → a complete, self-consistent run directory.
// ---------------------------------------------------------------------------------------------

#[test]
fn train_writes_a_complete_consistent_run_directory() {
    let tmp = TempDir::new("cli-train");
    let (out, run) = train(&tmp, "small_dnn", SMALL_DNN, "run");
    assert!(run.stdout.contains("results in"), "{}", run.describe());
    // train builds the run's report and prints where.
    let report = out.join("report.html");
    assert!(
        run.stdout
            .contains(&format!("report: {}", report.display())),
        "{}",
        run.describe()
    );
    assert!(std::fs::read_to_string(&report)
        .unwrap()
        .contains("<h2 id=\"verdict\">Verdict</h2>"));

    // Exactly the documented files, and nothing (no staging dir) next to the run directory.
    assert_eq!(entries(&out), RUN_FILES, "{}", out.display());
    assert_eq!(entries(out.parent().unwrap()), ["run"]);

    // metrics.csv: header, one row per epoch 0..=E, t = epoch·lr, finite values.
    let text = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert_eq!(text.lines().next(), Some(METRICS_HEADER));
    let (_, rows) = read_csv(&out.join("metrics.csv"));
    assert_eq!(rows.len(), SMALL_EPOCHS + 1);
    for (k, r) in rows.iter().enumerate() {
        assert_eq!(r[0], k as f64, "epoch column");
        assert!(
            rel_diff(r[1], k as f64 * SMALL_LR) <= 1e-12,
            "t at epoch {k}: {} vs {}",
            r[1],
            k as f64 * SMALL_LR
        );
        assert!(
            r[2].is_finite() && r[2] > 0.0,
            "loss at epoch {k}: {}",
            r[2]
        );
        assert!(r[3].is_finite() && r[3] >= 0.0, "grad_norm at epoch {k}");
        for c in [r[4], r[5]] {
            assert!(
                c >= 0.0 && c.fract() == 0.0,
                "kink counts are counts: {r:?}"
            );
        }
    }
    let loss: Vec<f64> = rows.iter().map(|r| r[2]).collect();
    let t: Vec<f64> = rows.iter().map(|r| r[1]).collect();
    let (l0, l_end) = (loss[0], loss[SMALL_EPOCHS]);
    assert!(l_end < 0.6 * l0, "loss should fall: {l0} → {l_end}");
    let second_half_max = loss[SMALL_EPOCHS / 2..].iter().cloned().fold(0.0, f64::max);
    assert!(second_half_max < l0, "loss not decreasing overall");
    assert!(
        loss[2 * SMALL_EPOCHS / 3..].iter().sum::<f64>()
            < loss[..SMALL_EPOCHS / 3].iter().sum::<f64>(),
        "the last third should lie below the first third"
    );

    // ntk.csv: checkpoints at 0, 100, 200, 300; the bound recomputed from its own columns.
    let nm = 40 * 3;
    let c = 1.0 / nm as f64;
    let text = std::fs::read_to_string(out.join("ntk.csv")).unwrap();
    assert_eq!(text.lines().next(), Some(NTK_HEADER));
    let (_, ntk) = read_csv(&out.join("ntk.csv"));
    let epochs: Vec<f64> = ntk.iter().map(|r| r[0]).collect();
    assert_eq!(epochs, [0.0, 100.0, 200.0, 300.0]);
    let mut integral = 0.0;
    let mut prev: Option<(f64, f64)> = None;
    for r in &ntk {
        let (e, t, l, lmin, lmax, cond, acc, int, bound, holds, stab) = (
            r[0] as usize,
            r[1],
            r[2],
            r[3],
            r[4],
            r[5],
            r[6],
            r[7],
            r[8],
            r[9],
            r[10],
        );
        assert!(rel_diff(t, e as f64 * SMALL_LR) <= 1e-12);
        assert_eq!(l, loss[e], "ntk.csv loss = metrics.csv loss at epoch {e}");
        assert!(lmin <= lmax && lmax > 0.0 && acc >= 0.0);
        // The condition number is ∞ where λ_min cannot be told from 0 (≤ nm·ε·λ_max).
        if lmin > nm as f64 * f64::EPSILON * lmax {
            assert!(rel_diff(cond, lmax / lmin) <= 1e-9, "condition {cond}");
        } else {
            assert!(cond.is_infinite(), "condition {cond} of a singular H");
        }
        if let Some((t0, m0)) = prev {
            integral += 0.5 * (t - t0) * (m0 + lmin);
        }
        prev = Some((t, lmin));
        assert!(
            (int - integral).abs() <= 1e-12 * integral.abs().max(1e-300),
            "∫λ_min at {e}: {int} vs {integral}"
        );
        let want = l0 * (-4.0 * c * integral).exp();
        assert!(
            rel_diff(bound, want) <= 1e-12,
            "bound at {e}: {bound} vs {want}"
        );
        assert_eq!(holds, if l <= want * (1.0 + 1e-9) { 1.0 } else { 0.0 });
        assert!(rel_diff(stab, SMALL_LR * c * lmax) <= 1e-12, "gd_stability");
    }

    // summary.json against the CSVs and a hand-computed p.
    let s = read_json(&out.join("summary.json"));
    assert_eq!(s["status"], "completed");
    assert_eq!(s["preset"], "dnn");
    assert_eq!(s["activation_class"], "theorem-3.1");
    assert_eq!(json_usize(&s, "p"), SMALL_DNN_P);
    assert_eq!(json_usize(&s, "n"), 40);
    assert_eq!(json_usize(&s, "d"), 8);
    assert_eq!(json_usize(&s, "m"), 3);
    assert_eq!(json_usize(&s, "nm"), nm);
    assert_close(
        json_f64(&s, "p_over_nm"),
        SMALL_DNN_P as f64 / nm as f64,
        "p_over_nm",
    );
    assert_eq!(s["overparametrized"], SMALL_DNN_P >= nm);
    assert_close(json_f64(&s, "initial_loss"), l0, "initial_loss");
    assert_close(json_f64(&s, "final_loss"), l_end, "final_loss");
    assert_eq!(json_usize(&s, "epochs"), SMALL_EPOCHS);
    assert_eq!(json_usize(&s, "last_epoch"), SMALL_EPOCHS);
    assert_close(json_f64(&s, "lr"), SMALL_LR, "lr");
    assert!(rel_diff(json_f64(&s, "t_final"), SMALL_EPOCHS as f64 * SMALL_LR) <= 1e-12);
    assert_close(json_f64(&s, "loss_constant"), c, "loss_constant");
    assert_eq!(json_usize(&s, "gradient_evaluations"), SMALL_EPOCHS + 1);
    assert_eq!(json_usize(&s, "bound_checks"), ntk.len());
    let violations = ntk.iter().filter(|r| r[9] == 0.0).count();
    assert_eq!(s["bound_violations"].as_array().unwrap().len(), violations);
    let min_lambda = ntk.iter().map(|r| r[3]).fold(f64::INFINITY, f64::min);
    assert!(rel_diff(json_f64(&s, "certified_rate"), 4.0 * c * min_lambda) <= 1e-12);
    let max_stab = ntk.iter().map(|r| r[10]).fold(0.0, f64::max);
    assert!(rel_diff(json_f64(&s, "gd_stability_max"), max_stab) <= 1e-12);
    assert_close(
        json_f64(&s["ntk_initial"], "lambda_min"),
        ntk[0][3],
        "ntk_initial.lambda_min",
    );
    assert_close(
        json_f64(&s["ntk_final"], "lambda_max"),
        ntk[3][4],
        "ntk_final.lambda_max",
    );
    assert_eq!(s["ntk_initial"]["dim"].as_u64(), Some(nm as u64));
    let half = t.len() / 2;
    let rate = fitted_rate(&t[half..], &loss[half..]);
    assert!(
        rel_diff(json_f64(&s, "fitted_rate_tail"), rate) <= 1e-9,
        "fitted_rate_tail {} vs {rate}",
        s["fitted_rate_tail"]
    );

    // Data: shapes, f64 C order, inputs in the unit ball.
    let x = read_npy(&out.join("x.npy"));
    let y = read_npy(&out.join("y.npy"));
    assert_eq!(
        (x.descr.as_str(), x.fortran_order, x.dims()),
        ("<f8", false, (40, 8))
    );
    assert_eq!(
        (y.descr.as_str(), y.fortran_order, y.dims()),
        ("<f8", false, (40, 3))
    );
    for i in 0..40 {
        let r2: f64 = (0..8).map(|j| x.at(i, j).powi(2)).sum();
        assert!(r2 <= 1.0 + 1e-12, "x_{i} outside the unit ball");
    }

    // Parameters: PyTorch Sequential names and shapes, metadata.
    let want: BTreeMap<&str, Vec<usize>> = [
        ("0.weight", vec![32, 8]),
        ("0.bias", vec![32]),
        ("2.weight", vec![16, 32]),
        ("2.bias", vec![16]),
        ("4.weight", vec![3, 16]),
        ("4.bias", vec![3]),
    ]
    .into_iter()
    .collect();
    for f in ["params_init.safetensors", "params_final.safetensors"] {
        let (t, md) = read_safetensors(&out.join(f));
        let got: BTreeMap<&str, Vec<usize>> = t
            .iter()
            .map(|(k, v)| (k.as_str(), v.shape.clone()))
            .collect();
        assert_eq!(got, want, "{f}");
        assert_eq!(md.get("preset").map(String::as_str), Some("dnn"), "{f}");
        assert_eq!(md.get("p"), Some(&SMALL_DNN_P.to_string()), "{f}");
        let total: usize = t.values().map(|v| v.data.len()).sum();
        assert_eq!(total, SMALL_DNN_P);
    }

    // config.toml re-parses, describes the same model, and re-running it reproduces the run.
    let cfg = out.join("config.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    for key in ["lr = 0.2", "epochs = 300", "hidden = [32, 16]", "seed = 7"] {
        assert!(text.contains(key), "resolved config lacks {key:?}:\n{text}");
    }
    let inspect = gradflow(tmp.path(), ["inspect".as_ref(), cfg.as_os_str()]).ok();
    assert!(
        inspect.stdout.contains(&format!("p = {SMALL_DNN_P}\n")),
        "{}",
        inspect.describe()
    );
    let again = tmp.join("again");
    gradflow(
        tmp.path(),
        [
            "train".as_ref(),
            cfg.as_os_str(),
            "--out".as_ref(),
            again.as_os_str(),
            "--quiet".as_ref(),
        ],
    )
    .ok();
    assert_eq!(
        std::fs::read(again.join("metrics.csv")).unwrap(),
        std::fs::read(out.join("metrics.csv")).unwrap(),
        "the resolved config.toml must reproduce the run"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. The losses, recomputed from the saved data and parameters by a hand-written forward pass.
// ---------------------------------------------------------------------------------------------

#[test]
fn losses_recomputed_by_hand_from_saved_data_and_parameters() {
    let tmp = TempDir::new("cli-loss");
    let (out, _) = train(&tmp, "small_dnn", SMALL_DNN, "run");
    let x = read_npy(&out.join("x.npy"));
    let y = read_npy(&out.join("y.npy"));
    let (_, rows) = read_csv(&out.join("metrics.csv"));

    let (init, _) = read_safetensors(&out.join("params_init.safetensors"));
    let layers = affine_layers(&init, 2, 0);
    assert_eq!(layers.len(), 3);
    // init = "torch": every weight and bias of a layer lies in U(±1/√fan_in).
    for (l, a) in layers.iter().enumerate() {
        let bound = 1.0 / (a.fan_in as f64).sqrt();
        let max = a.w.iter().chain(&a.b).fold(0.0_f64, |m, v| m.max(v.abs()));
        assert!(max <= bound, "layer {l}: |θ| = {max} > 1/√fan_in = {bound}");
        assert!(
            max > 0.5 * bound,
            "layer {l}: suspiciously small init {max}"
        );
    }
    let u0 = dnn_outputs(&layers, 0.01, &x);
    let l0 = mse(&u0, &y.data);
    assert!(
        rel_diff(l0, rows[0][2]) <= 1e-12,
        "epoch-0 loss: by hand {l0}, metrics.csv {}",
        rows[0][2]
    );

    let (fin, _) = read_safetensors(&out.join("params_final.safetensors"));
    let layers = affine_layers(&fin, 2, 0);
    let l_end = mse(&dnn_outputs(&layers, 0.01, &x), &y.data);
    let last = rows.last().unwrap();
    assert_eq!(last[0], SMALL_EPOCHS as f64);
    assert!(
        rel_diff(l_end, last[2]) <= 1e-12,
        "final loss: by hand {l_end}, metrics.csv {}",
        last[2]
    );
    // And the parameters did move.
    assert_ne!(init, fin);
}

// ---------------------------------------------------------------------------------------------
// 5. Determinism.
// ---------------------------------------------------------------------------------------------

#[test]
fn same_config_and_seed_give_byte_identical_results() {
    let tmp = TempDir::new("cli-determinism");
    let (a, _) = train(&tmp, "small_dnn", SMALL_DNN, "a");
    let (b, _) = train(&tmp, "small_dnn", SMALL_DNN, "b");
    for f in ["metrics.csv", "ntk.csv", "x.npy", "y.npy", "config.toml"] {
        assert!(
            std::fs::read(a.join(f)).unwrap() == std::fs::read(b.join(f)).unwrap(),
            "{f} differs between two identical runs"
        );
    }
    // The parameters: same names, shapes, bit-identical values and metadata. (The files
    // themselves are not byte-identical: see the ignored test below.)
    for f in ["params_init.safetensors", "params_final.safetensors"] {
        let (ta, ma) = read_safetensors(&a.join(f));
        let (tb, mb) = read_safetensors(&b.join(f));
        assert_eq!(
            ta.keys().collect::<Vec<_>>(),
            tb.keys().collect::<Vec<_>>(),
            "{f}"
        );
        for (k, x) in &ta {
            let y = &tb[k];
            assert_eq!(x.shape, y.shape, "{f}: {k}");
            let bits = |t: &Tensor| t.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(x), bits(y), "{f}: {k} differs between identical runs");
        }
        assert_eq!(ma, mb, "{f}: metadata");
    }
    // A different seed changes the data and the initialisation.
    let (c, _) = train(
        &tmp,
        "seed8",
        &SMALL_DNN.replace("seed = 7", "seed = 8"),
        "c",
    );
    assert_ne!(
        read_safetensors(&a.join("params_init.safetensors")).0,
        read_safetensors(&c.join("params_init.safetensors")).0
    );
    assert_ne!(read_npy(&a.join("x.npy")), read_npy(&c.join("x.npy")));
}

#[test]
fn params_files_are_byte_identical_across_identical_runs() {
    let tmp = TempDir::new("cli-determinism-bytes");
    let cfg = SMALL_DNN
        .replace("epochs = 300", "epochs = 2")
        .replace("every = 100", "every = 0");
    let runs: Vec<_> = ["a", "b", "c", "d"]
        .iter()
        .map(|o| train(&tmp, "small_dnn", &cfg, o).0)
        .collect();
    for f in ["params_init.safetensors", "params_final.safetensors"] {
        let first = std::fs::read(runs[0].join(f)).unwrap();
        for r in &runs[1..] {
            let other = std::fs::read(r.join(f)).unwrap();
            assert!(
                first == other,
                "{f} differs between identical runs; headers:\n{}\n{}",
                String::from_utf8_lossy(&first[8..200]),
                String::from_utf8_lossy(&other[8..200])
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Extra: log_every and --force.
// ---------------------------------------------------------------------------------------------

#[test]
fn log_every_keeps_every_kth_row_and_the_last() {
    let tmp = TempDir::new("cli-log-every");
    let cfg = SMALL_DNN
        .replace("log_every = 1", "log_every = 7")
        .replace("epochs = 300", "epochs = 20")
        .replace("every = 100", "every = 0");
    let (out, _) = train(&tmp, "log7", &cfg, "run");
    let (_, rows) = read_csv(&out.join("metrics.csv"));
    let epochs: Vec<f64> = rows.iter().map(|r| r[0]).collect();
    assert_eq!(epochs, [0.0, 7.0, 14.0, 20.0]);
    let (_, ntk) = read_csv(&out.join("ntk.csv"));
    assert_eq!(ntk.iter().map(|r| r[0]).collect::<Vec<_>>(), [0.0, 20.0]);
    let s = read_json(&out.join("summary.json"));
    assert_close(json_f64(&s, "final_loss"), rows[3][2], "final_loss");
}

#[test]
fn force_replaces_an_existing_run_directory() {
    let tmp = TempDir::new("cli-force");
    let out = tmp.mkdir("runs/run");
    tmp.write("runs/run/stale.txt", "old");
    let cfg = tmp.write("cfg.toml", SMALL_DNN.replace("epochs = 300", "epochs = 5"));
    // A non-empty directory that is not a gradflow run is never deleted, even with --force.
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_gradflow"))
        .args([
            "train".as_ref(),
            cfg.as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
            "--force".as_ref(),
            "--quiet".as_ref(),
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("does not look like a gradflow run"));
    assert_eq!(entries(&out), ["stale.txt"]);
    // A stale run (it has a summary.json) is replaced.
    tmp.write("runs/run/summary.json", "{}");
    gradflow(
        tmp.path(),
        [
            "train".as_ref(),
            cfg.as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
            "--force".as_ref(),
            "--quiet".as_ref(),
        ],
    )
    .ok();
    assert_eq!(entries(&out), RUN_FILES);
    assert_eq!(entries(&tmp.join("runs")), ["run"]);
}

// ---------------------------------------------------------------------------------------------
// The flow on a Siamese network (a shared tower applied to both halves of each sample).
// ---------------------------------------------------------------------------------------------

/// `preset = "siamese"` with `solver = "flow"` trains (both combinations) and writes a complete
/// run: the solve crosses kinks, and GD at a small η (compare_gd, the ordinary network) stays
/// close to it — an independent route to the same trajectory.
#[test]
fn siamese_flow_run_trains_and_writes_its_run() {
    let tmp = TempDir::new("cli-siamese-flow");
    for combine in ["abs-diff", "concat"] {
        let config = format!(
            r#"
seed = 1
[data]
kind = "pairs"
n = 10
d = 3
m = 2
[model]
preset = "siamese"
hidden = [8]
combine = "{combine}"
activation = "leaky-relu"
[train]
solver = "flow"
t_end = 5.0
outputs = 50
compare_gd = true
lr = 0.0005
[ntk]
every = 10
"#
        );
        let (out, run) = train(&tmp, combine, &config, combine);
        assert_eq!(entries(&out), RUN_FILES, "{}", run.describe());
        let s = read_json(&out.join("summary.json"));
        println!("{combine}: {}", s["flow"]);
        assert_eq!(s["status"], "completed", "{combine}");
        assert!(json_f64(&s, "final_loss") < json_f64(&s, "initial_loss"));
        let f = &s["flow"];
        // 2·n·8 tower entries (both applications), plus n·8 of |·| for abs-diff.
        let tracked = if combine == "abs-diff" {
            3 * 10 * 8
        } else {
            2 * 10 * 8
        };
        assert_eq!(
            f["events"]["tracked"].as_u64(),
            Some(tracked),
            "{combine}: {f}"
        );
        assert!(
            f["events"]["crossings"].as_u64().unwrap() > 0,
            "{combine}: {f}"
        );
        assert!(
            f["events"]["slides"].as_u64().unwrap() > 0,
            "{combine}: {f}"
        );
        let (_, sliding) = read_csv(&out.join("sliding.csv"));
        assert!(
            !sliding.is_empty(),
            "{combine}: sliding.csv has no interval"
        );
        let gap = f["gd_comparison"]["max_relative_loss_gap"]
            .as_f64()
            .unwrap();
        assert!(gap < 1e-3, "{combine}: GD (η = 5e-4) vs flow {gap:e}");
    }
}
