//! Interruption and resumption: a run paused at an epoch boundary and resumed from its
//! checkpoint ends byte-identical to one that never stopped (library route, and the CLI with a
//! real SIGINT); a run killed with SIGKILL at random moments never leaves a directory at `--out`
//! that looks finished.

use crate::common;

use gradflow::config::Config;
use gradflow::error::Error;
use gradflow::run::{self, RunOptions, Status};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn tmp(tag: &str) -> PathBuf {
    common::fresh_dir("resume", tag)
}

const CONFIG: &str = r#"
seed = 3
[data]
kind = "ball"
n = 12
d = 4
m = 2
[model]
preset = "dnn"
hidden = [16, 16]
[train]
lr = 0.2
epochs = 60
[ntk]
every = 7
"#;

fn config(dir: &Path, text: &str) -> (PathBuf, Config) {
    let path = dir.join("cfg.toml");
    std::fs::write(&path, text).unwrap();
    let c = Config::from_path(&path).unwrap();
    (path, c)
}

pub(crate) fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// summary.json without its wall-clock fields.
pub(crate) fn summary_without_times(p: &Path) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_slice(&read(p)).unwrap();
    v.as_object_mut().unwrap().remove("seconds");
    for k in ["ntk_initial", "ntk_final"] {
        if let Some(o) = v[k].as_object_mut() {
            o.remove("seconds");
        }
    }
    // The timing record: its counts must agree, its seconds cannot.
    let t = v["timing"]
        .as_object_mut()
        .expect("summary.json has a timing record");
    for k in ["seconds_training", "seconds_ntk", "seconds_kernel_view"] {
        assert!(t.remove(k).unwrap().as_f64().unwrap() >= 0.0, "{k}");
    }
    v
}

fn assert_same_run(a: &Path, b: &Path) {
    assert_same_files(
        a,
        b,
        &[
            "metrics.csv",
            "ntk.csv",
            "params_init.safetensors",
            "params_final.safetensors",
            "x.npy",
            "y.npy",
            "config.toml",
        ],
    );
}

/// `files` byte for byte, summary.json but for its timings, and no checkpoint left in `b`.
pub(crate) fn assert_same_files(a: &Path, b: &Path, files: &[&str]) {
    for f in files {
        assert!(read(&a.join(f)) == read(&b.join(f)), "{f} differs");
    }
    assert_eq!(
        summary_without_times(&a.join("summary.json")),
        summary_without_times(&b.join("summary.json"))
    );
    assert!(
        !b.join("checkpoint.json").exists(),
        "a finished run keeps no checkpoint"
    );
}

#[test]
fn paused_and_resumed_run_is_bit_identical() {
    let _lock = common::parallelism_lock();
    let dir = tmp("lib");
    let (_, cfg) = config(&dir, CONFIG);
    let prep = run::prepare(&cfg).unwrap();
    let (a, b) = (dir.join("a"), dir.join("b"));
    run::execute(&prep, &a, &RunOptions::default()).unwrap();
    // Pause right after epoch 23 (not a checkpoint epoch of the NTK, not a multiple of 64).
    let err = run::execute(
        &prep,
        &b,
        &RunOptions {
            stop_after_epoch: Some(23),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::Interrupted(ref m) if m.contains("--resume")),
        "{err}"
    );
    let s: serde_json::Value = serde_json::from_slice(&read(&b.join("summary.json"))).unwrap();
    assert_eq!(s["status"], "interrupted");
    assert_eq!(s["last_epoch"], 23);
    assert!(b.join("checkpoint.json").exists());
    let rows = String::from_utf8(read(&b.join("metrics.csv")))
        .unwrap()
        .lines()
        .count();
    assert_eq!(rows, 1 + 24, "header + epochs 0..=23");
    // A second pause, then the rest.
    let resume = RunOptions {
        resume: true,
        ..Default::default()
    };
    let err = run::execute(
        &prep,
        &b,
        &RunOptions {
            stop_after_epoch: Some(41),
            ..resume.clone()
        },
    )
    .unwrap_err();
    assert!(matches!(err, Error::Interrupted(_)));
    let done = run::execute(&prep, &b, &resume).unwrap();
    assert_eq!(done.status, Status::Completed);
    assert_same_run(&a, &b);
}

#[test]
fn resume_refuses_another_config_and_a_run_without_checkpoint() {
    let dir = tmp("refuse");
    let (_, cfg) = config(&dir, CONFIG);
    let prep = run::prepare(&cfg).unwrap();
    let b = dir.join("b");
    let _ = run::execute(
        &prep,
        &b,
        &RunOptions {
            stop_after_epoch: Some(5),
            ..Default::default()
        },
    );
    let (_, other) = config(&dir, &CONFIG.replace("lr = 0.2", "lr = 0.1"));
    let other = run::prepare(&other).unwrap();
    let err = run::execute(
        &other,
        &b,
        &RunOptions {
            resume: true,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("different config"), "{err}");
    assert!(
        b.join("checkpoint.json").exists(),
        "the interrupted run is left as it was"
    );
    let fresh = dir.join("fresh");
    std::fs::create_dir_all(&fresh).unwrap();
    let err = run::execute(
        &prep,
        &fresh,
        &RunOptions {
            resume: true,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("checkpoint"), "{err}");
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_gradflow")
}

fn long_config(dir: &Path) -> PathBuf {
    let (path, _) = config(
        dir,
        &CONFIG
            .replace("epochs = 60", "epochs = 400000\nlog_every = 1000")
            .replace("every = 7", "every = 50000"),
    );
    path
}

#[test]
fn sigint_checkpoints_and_resume_matches_an_uninterrupted_run() {
    let dir = tmp("sigint");
    let cfg = long_config(&dir);
    let (a, b) = (dir.join("a"), dir.join("b"));
    let st = Command::new(bin())
        .args([
            "train",
            cfg.to_str().unwrap(),
            "--out",
            a.to_str().unwrap(),
            "--quiet",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let child = Command::new(bin())
        .args([
            "train",
            cfg.to_str().unwrap(),
            "--out",
            b.to_str().unwrap(),
            "--quiet",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Signal once training is under way (ntk.csv has its epoch-0 and epoch-50,000 rows, of 9),
    // so the signal lands mid-run rather than during set-up or after the end.
    crate::flow_resume::interrupt_mid_run(child, &b, 2);
    assert!(b.join("checkpoint.json").exists());
    let st = Command::new(bin())
        .args([
            "train",
            cfg.to_str().unwrap(),
            "--out",
            b.to_str().unwrap(),
            "--quiet",
            "--resume",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    assert_same_run(&a, &b);
}

#[test]
fn sigkill_at_random_moments_never_leaves_a_finished_looking_directory() {
    let dir = tmp("sigkill");
    let cfg = long_config(&dir);
    for (i, ms) in [5u64, 40, 120, 250].into_iter().enumerate() {
        let out = dir.join(format!("run{i}"));
        let mut child = Command::new(bin())
            .args([
                "train",
                cfg.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
                "--quiet",
            ])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(ms));
        let _ = child.kill();
        let status = child.wait().unwrap();
        if status.success() {
            assert!(out.join("summary.json").exists());
            continue;
        }
        // Killed: no directory at --out at all (only the hidden staging directory may remain).
        assert!(!out.exists(), "a killed run left {} behind", out.display());
    }
}

/// summary.json's timing record: the training work is 6·n·p per evaluated epoch (by hand for
/// this 4 → [16, 16] → 2 network), the NTK checkpoints are the ones ntk.csv lists, and the
/// three parts of the wall-clock time add up to `seconds`.
#[test]
fn timing_record_counts_work_and_checkpoints() {
    let dir = tmp("timing");
    let (_, cfg) = config(&dir, CONFIG);
    let prep = run::prepare(&cfg).unwrap();
    let out = dir.join("run");
    run::execute(&prep, &out, &RunOptions::default()).unwrap();
    let s: serde_json::Value = serde_json::from_slice(&read(&out.join("summary.json"))).unwrap();
    let t = &s["timing"];
    let p = (4 * 16 + 16) + (16 * 16 + 16) + (16 * 2 + 2);
    assert_eq!(s["p"], p);
    let work = 6.0 * 12.0 * p as f64 * 61.0; // epochs 0..=60 each evaluate the gradient
    assert_eq!(t["training_work_flop"].as_f64().unwrap(), work);
    assert_eq!(t["precision"], "f64");
    let ntk_rows = String::from_utf8(read(&out.join("ntk.csv")))
        .unwrap()
        .lines()
        .count()
        - 1;
    // every = 7 over 60 epochs: 0, 7, …, 56 and the last epoch 60.
    assert_eq!(ntk_rows, 10);
    assert_eq!(t["ntk_checkpoints"], ntk_rows);
    let parts: f64 = ["seconds_training", "seconds_ntk", "seconds_kernel_view"]
        .iter()
        .map(|k| t[*k].as_f64().unwrap())
        .sum();
    let total = s["seconds"].as_f64().unwrap();
    assert!(
        (parts - total).abs() <= 1e-9 * total.max(1.0),
        "{parts} vs {total}"
    );
    assert!(t["seconds_ntk"].as_f64().unwrap() > 0.0);
}
