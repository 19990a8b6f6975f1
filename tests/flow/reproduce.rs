//! `reproduce --solver flow`: the paper's DNN sweep integrated by the kink-aware flow solver
//! instead of GD, shrunk to n = 10 so it runs in about a second (the quick scale takes many
//! minutes with the flow solver: t = 600 at n = 100). Checks that every run is a flow run to the
//! GD horizon lr·epochs, that the index and report are built from flow metrics, and that the loss
//! figure leaves out the ablation's `skip_epochs` by time (t < skip·η), not by output index, and
//! draws GD at the sweep's step dashed beside each flow curve, checked against the same sweep
//! run by GD (`--solver gd`, the engine's own route).

use crate::common;

use gradflow::config::Solver;
use gradflow::experiment::{as_flow, reproduce_ablations, RunRecord};
use gradflow::report::plots::figure::Style;
use gradflow::report::plots::{loss_figure, RunInput};
use gradflow::report::tables::Table;
use gradflow::run::GdComparison;
use std::path::PathBuf;

fn tmp(tag: &str) -> PathBuf {
    common::fresh_dir("reproduce-flow", tag)
}

fn gd_comparison(r: &RunRecord) -> &GdComparison {
    let flow = r.summary.flow.as_ref().expect("a flow run");
    let cmp = flow.gd_comparison.as_ref();
    cmp.expect("reproduce's flow runs compare against GD")
}

#[test]
fn a_small_dnn_sweep_by_the_flow_solver_has_flow_summaries_and_a_time_based_loss_plot() {
    // The quick DNN sweep's first two runs, shrunk: n = 10, d = 3, m = 2 (nm = 20); width 1
    // (p = 10 < nm) and width 8 (p = 122 ≥ nm); 400 GD epochs at η = 0.005, so t_end = 2 with
    // 200 outputs (one every 2 epochs), NTK every 100 epochs = every 50 outputs.
    let mut ab = common::tiny_dnn_sweep(&[1, 8], 10, 400, 0.005);
    for r in ab.runs.iter_mut() {
        r.config.ntk.every = 100;
    }
    ab.skip_epochs = 100;
    let gd_ab = ab.clone();
    let ab = as_flow(ab);
    let out = tmp("dnn");
    let opts = common::dnn_sweep_options(out.clone(), Solver::Flow, false);
    let start = std::time::Instant::now();
    let index = reproduce_ablations(&opts, vec![ab]).unwrap();
    eprintln!("two flow runs in {:.2} s", start.elapsed().as_secs_f64());
    let runs: &[RunRecord] = &index.ablations[0].runs;
    assert_eq!(runs.len(), 2);
    for r in runs {
        let s = common::cli::read_json(&out.join(&r.dir).join("summary.json"));
        let f = &s["flow"];
        assert!(
            f.is_object(),
            "{}: no flow section in summary.json",
            r.label
        );
        assert!((f["t_end"].as_f64().unwrap() - 2.0).abs() < 1e-12);
        assert!(f["counts"]["gradients"].as_u64().unwrap() > 0);
        assert_eq!(s["solver"], "flow");
        // GD's stability ratio along the flow: η·c·max λ_max over the run's own ntk.csv.
        let ntk = Table::read(&out.join(&r.dir).join("ntk.csv")).unwrap();
        let lmax = ntk.column("lambda_max").unwrap();
        let lmax = lmax.into_iter().fold(f64::NAN, f64::max);
        let want = 0.005 * s["loss_constant"].as_f64().unwrap() * lmax;
        let got = f["gd_comparison"]["stability_max"].as_f64().unwrap();
        assert!((got - want).abs() <= 1e-12 * want, "{got} vs {want}");
        assert!(
            s["gd_stability_max"].is_null(),
            "the flow itself has no step"
        );
        assert_eq!(s["t_final"].as_f64().unwrap(), 2.0);
        assert!(r.summary.flow.is_some());
        // NTK at outputs 0, 50, 100, 150, 200.
        assert_eq!(r.summary.bound_checks, 5, "{}", r.label);
        assert!(out.join(&r.dir).join("sliding.csv").is_file());
    }
    assert!(!runs[0].summary.overparametrized && runs[1].summary.overparametrized);

    // The loss figure: rows at t ≥ skip_epochs·η = 0.5 (outputs 50..=200), drawn at t/η.
    let tables: Vec<Table> = runs
        .iter()
        .map(|r| Table::read(&out.join(&r.dir).join("metrics.csv")).unwrap())
        .collect();
    let inputs: Vec<RunInput> = runs
        .iter()
        .zip(&tables)
        .map(|(r, t)| RunInput {
            record: r,
            metrics: Some(t),
            ntk: None,
        })
        .collect();
    let mut warnings = Vec::new();
    let fig = loss_figure(&index.ablations[0], &inputs, &mut warnings);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(fig.x_label, "epoch (flow: t/η)");
    let loss = tables[1].column("loss").unwrap();
    // Per run: the flow (solid), then GD at η (dashed, no legend); then the dashed key.
    let styles: Vec<Style> = fig.series.iter().map(|s| s.style).collect();
    assert_eq!(
        styles,
        [
            Style::Line,
            Style::Dashed,
            Style::Line,
            Style::Dashed,
            Style::Dashed
        ]
    );
    let pts = &fig.series[2].points;
    assert_eq!(pts.len(), 151);
    assert!((pts[0].0 - 100.0).abs() < 1e-9 && pts[0].1 == loss[50]);
    assert!((pts[150].0 - 400.0).abs() < 1e-9 && pts[150].1 == loss[200]);
    let key = fig.series[4].legend.as_deref().unwrap();
    assert!(key.contains("GD at the paper's step η = 0.005"), "{key}");

    // The dashed curves against the same sweep run by GD itself (another route: the engine).
    let gd_out = tmp("dnn-gd");
    let gd_opts = common::dnn_sweep_options(gd_out.clone(), Solver::Gd, true);
    let gd_index = reproduce_ablations(&gd_opts, vec![gd_ab]).unwrap();
    for (k, r) in gd_index.ablations[0].runs.iter().enumerate() {
        let gd = Table::read(&gd_out.join(&r.dir).join("metrics.csv")).unwrap();
        let (epochs, gd_loss) = (gd.column("epoch").unwrap(), gd.column("loss").unwrap());
        let dashed = &fig.series[2 * k + 1].points;
        assert_eq!(dashed.len(), 151, "{}", r.label);
        for &(epoch, l) in dashed {
            let row = epochs
                .iter()
                .position(|e| (e - epoch).abs() < 1e-6)
                .unwrap();
            let want = gd_loss[row];
            assert!(
                (l - want).abs() <= 1e-10 * want,
                "{} epoch {epoch}: dashed {l} vs GD run {want}",
                r.label
            );
        }
        // And the flow summary's own account of the comparison.
        let cmp = gd_comparison(&runs[k]);
        assert!((cmp.lr - 0.005).abs() < 1e-15 && cmp.epochs == 400);
        let last = *gd_loss.last().unwrap();
        assert!((cmp.final_loss_gd - last).abs() <= 1e-10 * last);
        let s = common::cli::read_json(&gd_out.join(&r.dir).join("summary.json"));
        assert_eq!(s["solver"], "gd");
    }

    // The reproduce report is built from the flow runs.
    let files = gradflow::report::build_report(&out).unwrap();
    assert!(files.warnings.is_empty(), "{:?}", files.warnings);
    let html = std::fs::read_to_string(&files.html).unwrap();
    assert!(html.contains("DNN (gradient flow):"));
    let slides = runs[1].summary.flow.as_ref().unwrap().events.slides;
    assert!(
        html.contains(&format!(" / {slides} slides</td>")),
        "run table"
    );
    let gap = gd_comparison(&runs[1]).max_relative_loss_gap;
    assert!(
        html.contains(&format!("(loss gap {gap:.3e})</td>")),
        "the run table's GD column"
    );
}

/// Where the flow holds entries on kinks at an NTK checkpoint, the checkpoint is the Filippov
/// kernel's (`sliding_entries` = the pinned count the metrics report at that output), it is
/// certified where f64's pieces would leave the held entries' pieces undecided, and the verdict
/// says how many checkpoints were sliding.
#[test]
fn sliding_checkpoints_of_a_flow_sweep_use_the_filippov_kernel() {
    // One over-parametrised width, t = 8 (1600 epochs at η = 0.005), NTK every 400 epochs.
    let mut ab = common::tiny_dnn_sweep(&[8], 10, 1600, 0.005);
    ab.runs[0].config.ntk.every = 400;
    let ab = as_flow(ab);
    let out = tmp("filippov");
    let opts = common::dnn_sweep_options(out.clone(), Solver::Flow, false);
    let index = reproduce_ablations(&opts, vec![ab]).unwrap();
    let r = &index.ablations[0].runs[0];
    let s = &r.summary;
    let metrics = Table::read(&out.join(&r.dir).join("metrics.csv")).unwrap();
    let pinned_last = *metrics.column("pinned").unwrap().last().unwrap();
    let tally = &s.certification;
    println!(
        "{}: {} of {} checkpoints sliding, {} certified; last pinned {pinned_last}; {}",
        r.label, tally.filippov, tally.checkpoints, tally.certified, r.verdict.line
    );
    assert!(tally.filippov > 0, "no checkpoint was at a sliding point");
    let last = s.ntk_final.as_ref().unwrap();
    assert_eq!(
        last.sliding_entries.unwrap_or(0) as f64,
        pinned_last,
        "the last checkpoint's held entries are the pinned ones"
    );
    assert!(
        tally.certified == tally.checkpoints,
        "{:?}",
        tally.first_uncertified
    );
    assert!(r.verdict.line.contains("sliding: H of the Filippov field"));
}
