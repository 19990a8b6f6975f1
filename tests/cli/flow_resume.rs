//! Flow runs pause and resume: `gradflow train` of a `solver = "flow"` run stopped by a real
//! SIGINT mid-solve (entries sliding on their kinks) writes a checkpoint, and `--resume` ends
//! with metrics.csv, ntk.csv, sliding.csv, params_final.safetensors and summary.json (timings
//! aside) byte-identical to an uninterrupted run — on the compiled route (a dnn preset, with
//! leaky ReLU and with PReLU) and the general layer path (a layer list). The library route
//! pauses twice at chosen steps.

use crate::common;
use crate::resume::read;

use gradflow::config::Config;
use gradflow::error::Error;
use gradflow::run::{self, RunOptions, Status};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The compiled route: a leaky-ReLU dnn preset, with the GD comparison and NTK checkpoints.
const DNN: &str = r#"
seed = 0
[data]
kind = "ball"
n = 40
d = 8
m = 3
[model]
preset = "dnn"
hidden = [32, 32]
activation = "leaky-relu"
init = "torch"
[train]
solver = "flow"
t_end = 20.0
rtol = 1e-8
atol = 1e-10
outputs = 200
compare_gd = true
lr = 0.001
[ntk]
every = 20
"#;

/// The general layer path: the same kind of network as a layer list (no preset, so the flow
/// evaluates it through the layers' controls).
const LAYERS: &str = r#"
seed = 1
[data]
kind = "ball"
n = 24
d = 4
m = 2
[model]
activation = "leaky-relu"
init = "torch"
[[model.layers]]
kind = "dense"
out = 16
[[model.layers]]
kind = "activation"
[[model.layers]]
kind = "dense"
out = 16
[[model.layers]]
kind = "activation"
[[model.layers]]
kind = "dense"
out = 2
[train]
solver = "flow"
t_end = 20.0
rtol = 1e-8
atol = 1e-10
outputs = 100
compare_gd = true
lr = 0.01
[ntk]
every = 10
"#;

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("cfg.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn train(cfg: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gradflow"));
    c.args([
        "train",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
    .arg("--quiet")
    .args(extra);
    c
}

fn assert_same_flow_run(a: &Path, b: &Path) {
    crate::resume::assert_same_files(
        a,
        b,
        &[
            "metrics.csv",
            "ntk.csv",
            "sliding.csv",
            "params_init.safetensors",
            "params_final.safetensors",
            "config.toml",
        ],
    );
}

/// Data rows in the staging directory's ntk.csv of the run writing `out` as process `pid`
/// (flushed at every NTK checkpoint).
pub(crate) fn ntk_rows_written(out: &Path, pid: u32) -> usize {
    let name = out.file_name().unwrap().to_string_lossy();
    let stage = out.with_file_name(format!(".{name}.partial-{pid}"));
    std::fs::read_to_string(stage.join("ntk.csv"))
        .map_or(0, |s| s.lines().count().saturating_sub(1))
}

/// Sends SIGINT to the run writing `out` once its ntk.csv has `rows` rows (training under way),
/// then checks it stopped as interrupted (exit 130, told to `--resume`). Fails if the run ended
/// before the signal: nothing would have been tested.
pub(crate) fn interrupt_mid_run(mut child: Child, out: &Path, rows: usize) {
    let pid = child.id();
    let start = Instant::now();
    while ntk_rows_written(out, pid) < rows {
        if child.try_wait().unwrap().is_some() {
            break; // ended already: the assertion below says so
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "the run never got going"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status();
    let result = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        !result.status.success(),
        "the run finished before SIGINT arrived, so nothing was tested: make it longer ({stderr})"
    );
    assert_eq!(result.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("--resume"), "{stderr}");
}

/// Starts the run, waits until its NTK checkpoints show it at output `rows_before_signal`·every
/// (past t = 5, where entries slide), sends SIGINT, resumes, and compares with an uninterrupted
/// run. Fails if the signal arrives after the run finished (nothing would have been tested).
fn sigint_and_resume(tag: &str, config: &str, rows_before_signal: usize) {
    let dir = common::fresh_dir("flow-resume", tag);
    let cfg = write_config(&dir, config);
    let (a, b) = (dir.join("a"), dir.join("b"));
    let child = train(&cfg, &b, &[]).stderr(Stdio::piped()).spawn().unwrap();
    interrupt_mid_run(child, &b, rows_before_signal);
    let ck: serde_json::Value = serde_json::from_slice(&read(&b.join("checkpoint.json"))).unwrap();
    let pinned = ck["flow"]["solver"]["pinned"]
        .as_array()
        .expect("a flow checkpoint")
        .len();
    assert!(pinned > 0, "entries were sliding when the run paused");
    let s: serde_json::Value = serde_json::from_slice(&read(&b.join("summary.json"))).unwrap();
    assert_eq!(s["status"], "interrupted");
    assert!(!b.join("params_final.safetensors").exists());

    let st = train(&cfg, &b, &["--resume"]).status().unwrap();
    assert!(st.success());
    let st = train(&cfg, &a, &[]).status().unwrap();
    assert!(st.success());
    assert_same_flow_run(&a, &b);
}

#[test]
fn sigint_pauses_a_compiled_flow_run_and_resume_is_bit_identical() {
    // ntk.every = 20 of 200 outputs: four rows mean t = 6 of 20 reached.
    sigint_and_resume("dnn", DNN, 4);
}

#[test]
fn sigint_pauses_a_layer_path_flow_run_and_resume_is_bit_identical() {
    // ntk.every = 10 of 100 outputs: four rows mean t = 6 of 20 reached.
    sigint_and_resume("layers", LAYERS, 4);
}

/// PReLU (a trainable slope per layer, which the checkpoint keeps as the solve last evaluated
/// with it) on the compiled route: the same run as `DNN` with `activation = "prelu"`.
#[test]
fn sigint_pauses_a_prelu_flow_run_and_resume_is_bit_identical() {
    let prelu = DNN.replace(r#"activation = "leaky-relu""#, r#"activation = "prelu""#);
    assert_ne!(prelu, DNN);
    sigint_and_resume("prelu", &prelu, 4);
}

/// Two pauses at chosen accepted steps through the library, then the rest: the same files as
/// one uninterrupted run. A paused run's messages and files say how to continue.
#[test]
fn flow_run_paused_twice_resumes_bit_identically() {
    let _lock = common::parallelism_lock();
    let dir = common::fresh_dir("flow-resume", "lib");
    let cfg = Config::from_path(&write_config(&dir, LAYERS)).unwrap();
    let prep = run::prepare(&cfg).unwrap();
    let (a, b) = (dir.join("a"), dir.join("b"));
    run::execute(&prep, &a, &RunOptions::default()).unwrap();
    let pause = |step| RunOptions {
        stop_after_step: Some(step),
        ..RunOptions::default()
    };
    let err = run::execute(&prep, &b, &pause(60)).unwrap_err();
    assert!(
        matches!(err, Error::Interrupted(ref m) if m.contains("--resume")),
        "{err}"
    );
    assert!(b.join("checkpoint.json").exists());
    let resume = |step| RunOptions {
        resume: true,
        ..pause(step)
    };
    let err = run::execute(&prep, &b, &resume(150)).unwrap_err();
    assert!(matches!(err, Error::Interrupted(_)), "{err}");
    let done = run::execute(
        &prep,
        &b,
        &RunOptions {
            resume: true,
            ..RunOptions::default()
        },
    );
    assert_eq!(done.unwrap().status, Status::Completed);
    assert_same_flow_run(&a, &b);
}

/// The classic solve cannot pause: a flow run with kink_aware = false is refused a resume
/// with a clear error (it leaves no checkpoint when interrupted).
#[test]
fn classic_flow_run_is_not_resumable() {
    let dir = common::fresh_dir("flow-resume", "classic");
    let text = LAYERS
        .replace("lr = 0.01", "lr = 0.01\nkink_aware = false")
        .replace("t_end = 20.0", "t_end = 0.5");
    let cfg = Config::from_path(&write_config(&dir, &text)).unwrap();
    let prep = run::prepare(&cfg).unwrap();
    let b = dir.join("b");
    let opts = RunOptions {
        stop_after_step: Some(3),
        ..RunOptions::default()
    };
    let done = run::execute(&prep, &b, &opts).unwrap();
    assert_eq!(
        done.status,
        Status::Completed,
        "stop_after_step does not pause it"
    );
    let err = run::execute(
        &prep,
        &b,
        &RunOptions {
            resume: true,
            ..RunOptions::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("checkpoint"), "{err}");
}
