//! `reproduce --no-ntk` on a tiny DNN sweep: the report is built with one note for the runs
//! that tracked no NTK (not a warning per run), and `timing.json` accounts for runs packed one
//! per core by at least their share of the machine.

use crate::common;

use gradflow::config::Solver;
use gradflow::experiment::reproduce_ablations;
use std::path::PathBuf;

fn tmp(tag: &str) -> PathBuf {
    common::fresh_dir("reproduce-no-ntk", tag)
}

#[test]
fn no_ntk_sweep_has_one_note_and_packed_runs_count_by_their_cores() {
    let _lock = common::parallelism_lock();
    let mut ab = common::tiny_dnn_sweep(&[2, 4, 8], 12, 300, 0.01);
    for r in ab.runs.iter_mut() {
        r.config.ntk.enabled = false; // what `reproduce --no-ntk` sets before reproduce_ablations
    }
    ab.skip_epochs = 0;
    let out = tmp("dnn");
    let opts = common::dnn_sweep_options(out.clone(), Solver::Gd, true);
    let index = reproduce_ablations(&opts, vec![ab]).unwrap();
    let runs = &index.ablations[0].runs;
    assert_eq!(runs.len(), 3);
    for r in runs {
        assert!(r.summary.ntk_initial.is_none(), "{}: NTK was off", r.label);
        assert!(!out.join(&r.dir).join("ntk.csv").exists());
        // Tiny runs (6·n·p far below the packing threshold) ran one per core.
        let t = r.summary.timing.as_ref().unwrap();
        assert_eq!(t.cores, 1, "{}", r.label);
        // Packed or not, a run records the pool it trained in (the engine's cut follows it).
        assert_eq!(t.threads, rayon::current_num_threads(), "{}", r.label);
    }
    let files = gradflow::report::build_report(&out).unwrap();
    assert_eq!(files.warnings.len(), 1, "{:?}", files.warnings);
    assert!(
        files.warnings[0].starts_with("3 run(s) tracked no NTK"),
        "{:?}",
        files.warnings
    );
    // timing.json: each packed run counts its seconds × 1 / (the machine's cores).
    let timing: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("timing.json")).unwrap()).unwrap();
    let cores = match faer::get_global_parallelism() {
        faer::Par::Seq => 1,
        faer::Par::Rayon(n) => n.get(),
    } as f64;
    let seconds: f64 = runs
        .iter()
        .map(|r| r.summary.timing.as_ref().unwrap().seconds_training)
        .sum();
    let machine = timing["machine_seconds_training"].as_f64().unwrap();
    let wall = timing["wall_seconds"].as_f64().unwrap();
    // At least the runs' shares of the machine; at most the invocation's wall clock (the
    // packed phase's wall clock, scaled by the share of the runs' time spent training).
    assert!(
        machine >= seconds / cores * (1.0 - 1e-12) && machine <= wall,
        "{machine} vs {seconds} / {cores}, wall {wall}"
    );
    let ratio = timing["ratio_to_peak"].as_f64().unwrap();
    let at_peak = timing["seconds_at_peak"].as_f64().unwrap();
    assert!((ratio - machine / at_peak).abs() <= 1e-9 * ratio);
}
