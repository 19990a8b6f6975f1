//! `reproduce --emit-slurm N`: the written scripts, run by hand with bash (their `#SBATCH` lines
//! are comments there), must reproduce the sweep: every shard task writes its part, the merge
//! job joins them, and the joined index holds each run of the sweep exactly once — the same set
//! `reproduce` without shards produces.

use crate::common::cli::*;
use std::collections::BTreeSet;
use std::process::Command;

fn labels(index: &std::path::Path) -> Vec<String> {
    let idx = read_json(&index.join("reproduce.json"));
    idx["ablations"][0]["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["label"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn emitted_slurm_scripts_run_the_shards_and_merge_them() {
    let tmp = TempDir::new("cli-slurm");
    let out = tmp.join("job");
    let run = gradflow(
        tmp.path(),
        [
            "reproduce",
            "--only",
            "resnet",
            "--no-ntk",
            "--emit-slurm",
            "3",
            "--out",
            out.to_str().unwrap(),
        ],
    )
    .ok();
    assert!(run.stdout.contains("submit.sh"), "{}", run.describe());
    // Nothing ran: only the scripts exist.
    assert_eq!(entries(&out), ["slurm"]);
    let slurm = out.join("slurm");
    assert_eq!(
        entries(&slurm),
        ["merge.sbatch", "shards.sbatch", "submit.sh"]
    );
    let shards = std::fs::read_to_string(slurm.join("shards.sbatch")).unwrap();
    assert!(shards.contains("#SBATCH --array=0-2\n"), "{shards}");
    assert!(
        shards.contains(" --no-ntk "),
        "the shards must repeat the options: {shards}"
    );
    assert!(std::fs::read_to_string(slurm.join("submit.sh"))
        .unwrap()
        .contains("--dependency=afterok:"));

    for task in 0..3 {
        let status = Command::new("bash")
            .arg(slurm.join("shards.sbatch"))
            .env("SLURM_ARRAY_TASK_ID", task.to_string())
            .status()
            .unwrap();
        assert!(status.success(), "shard task {task}");
        // The resnet sweep has 6 depths: 2 per shard.
        assert_eq!(labels(&out.join(format!("shard-{task}"))).len(), 2);
    }
    let status = Command::new("bash")
        .arg(slurm.join("merge.sbatch"))
        .status()
        .unwrap();
    assert!(status.success(), "merge job");
    let merged = labels(&out);
    let unique: BTreeSet<_> = merged.iter().cloned().collect();
    assert_eq!(merged.len(), 6, "{merged:?}");
    assert_eq!(unique.len(), 6, "a run twice: {merged:?}");
    assert!(out.join("report.html").is_file());

    // The same runs as the sweep's own list (`reproduce --shard 0/1` runs everything).
    let whole = tmp.join("whole");
    gradflow(
        tmp.path(),
        [
            "reproduce",
            "--only",
            "resnet",
            "--quiet",
            "--no-ntk",
            "--shard",
            "0/1",
            "--out",
            whole.to_str().unwrap(),
        ],
    )
    .ok();
    let expected: BTreeSet<_> = labels(&whole).into_iter().collect();
    assert_eq!(unique, expected);
}

/// Without `--solver` the job runs the flow at quick scale and GD at paper scale (the flow
/// takes weeks a run there), and says so in the shards' command line.
#[test]
fn emitted_jobs_carry_the_scales_default_solver() {
    let tmp = TempDir::new("cli-slurm-solver");
    for (scale, solver) in [("quick", "flow"), ("paper", "gd")] {
        let out = tmp.join(scale);
        gradflow(
            tmp.path(),
            [
                "reproduce",
                "--scale",
                scale,
                "--emit-slurm",
                "2",
                "--out",
                out.to_str().unwrap(),
            ],
        )
        .ok();
        let script = std::fs::read_to_string(out.join("slurm").join("shards.sbatch")).unwrap();
        assert!(
            script.contains(&format!("--solver {solver}")),
            "{scale}: {script}"
        );
    }
}

#[test]
fn emit_slurm_refuses_zero_shards_and_bad_options_before_writing() {
    let tmp = TempDir::new("cli-slurm-bad");
    for (args, needle) in [
        (vec!["--emit-slurm", "0"], "at least 1"),
        (
            vec!["--emit-slurm", "2", "--scale", "huge"],
            "quick or paper",
        ),
    ] {
        let out = tmp.join("job");
        let mut all = vec!["reproduce", "--out", out.to_str().unwrap()];
        all.extend(args);
        let run = gradflow(tmp.path(), all).failed();
        assert!(run.stderr.contains(needle), "{}", run.describe());
        assert!(!out.join("slurm").join("shards.sbatch").exists());
    }
}
