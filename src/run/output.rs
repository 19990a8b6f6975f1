//! The run directory on disk: which directories `--out` may name ([`check_output_dir`]), the
//! hidden staging directory a run is built in and renamed from when it ends ([`execute`]), so a
//! killed run never leaves a directory that looks finished, and the checkpoint a resumed run
//! starts from ([`CHECKPOINT_FILE`]).

use super::state::Checkpoint;
use super::{flow_run, gd_run, Prepared, RunOptions, RunSummary};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// Files whose presence marks a directory as a gradflow run (safe to replace with `--force`).
const RUN_MARKERS: [&str; 3] = ["summary.json", "metrics.csv", "config.toml"];

/// Refuses an output directory that cannot be (re)placed: the working directory or a root,
/// a file, or a non-empty directory without `force` — and, even with `force`, a non-empty
/// directory that is not a gradflow run (nothing of the user's is ever deleted).
pub fn check_output_dir(out: &Path, force: bool) -> Result<()> {
    let named = out.file_name().is_some() && !out.ends_with("..");
    let is_cwd = std::fs::canonicalize(out)
        .ok()
        .zip(std::env::current_dir().ok())
        .is_some_and(|(a, b)| a == b);
    if !named || is_cwd {
        return Err(Error::Invalid(format!(
            "--out {} must name a directory of its own (e.g. --out runs/my-run), not the current or a parent directory",
            out.display()
        )));
    }
    if out.exists() && !out.is_dir() {
        return Err(Error::Invalid(format!(
            "{} exists and is not a directory: choose another --out",
            out.display()
        )));
    }
    let non_empty = out
        .read_dir()
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    if non_empty && !force {
        return Err(Error::Invalid(format!(
            "{} already exists and is not empty: choose another --out, or pass --force to replace it",
            out.display()
        )));
    }
    if non_empty && !RUN_MARKERS.iter().any(|m| out.join(m).exists()) {
        return Err(Error::Invalid(format!(
            "{} is not empty and does not look like a gradflow run directory: --force only replaces runs; choose another --out",
            out.display()
        )));
    }
    Ok(())
}

fn staging_dir(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "run".into());
    out.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

/// The checkpoint a paused run leaves in its directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.json";

/// Trains `prep` (gradient descent or the flow solve, by `train.solver`) and writes the run
/// directory `out`.
///
/// On divergence the directory is still written (metrics so far, status "diverged") and the
/// error is returned. On interruption (Ctrl-C, SIGTERM, [`crate::interrupt::request`],
/// `opts.stop_after_epoch` or `opts.stop_after_step`) it is written with status "interrupted"
/// and a checkpoint, and `Error::Interrupted` says how to resume; with `opts.resume` a run
/// continues from that checkpoint and ends bit-identical to one that was never interrupted.
pub fn execute(prep: &Prepared, out: &Path, opts: &RunOptions) -> Result<RunSummary> {
    let resume = if opts.resume {
        Some(load_checkpoint(prep, out)?)
    } else {
        None
    };
    if resume.is_none() {
        check_output_dir(out, opts.force)?;
    }
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let stage = staging_dir(out);
    if stage.exists() {
        std::fs::remove_dir_all(&stage).map_err(|e| Error::io(&stage, e))?;
    }
    if resume.is_some() {
        std::fs::rename(out, &stage).map_err(|e| Error::io(out, e))?;
    } else {
        std::fs::create_dir_all(&stage).map_err(|e| Error::io(&stage, e))?;
    }
    let result = if prep.config.train.solver == crate::config::Solver::Flow {
        flow_run::write_flow_run(prep, &stage, opts, resume)
    } else {
        gd_run::write_gd_run(prep, &stage, opts, resume)
    };
    let result = result.map_err(|e| match e {
        Error::Interrupted(msg) => {
            Error::Interrupted(msg.replace("<this run>", &out.display().to_string()))
        }
        other => other,
    });
    let keep =
        result.is_ok() || matches!(result, Err(Error::Diverged(_)) | Err(Error::Interrupted(_)));
    if keep {
        if out.exists() {
            std::fs::remove_dir_all(out).map_err(|e| Error::io(out, e))?;
        }
        std::fs::rename(&stage, out).map_err(|e| Error::io(out, e))?;
    } else if opts.resume {
        // Put the interrupted run back as it was.
        let _ = std::fs::rename(&stage, out);
    } else {
        let _ = std::fs::remove_dir_all(&stage);
    }
    result
}

/// Reads the checkpoint of the interrupted run in `out`, checking it belongs to this config.
fn load_checkpoint(prep: &Prepared, out: &Path) -> Result<Checkpoint> {
    let path = out.join(CHECKPOINT_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Error::Invalid(format!(
            "--resume: cannot read {} ({e}): only a run stopped by Ctrl-C/SIGTERM can be resumed; \
             start a new run without --resume",
            path.display()
        ))
    })?;
    let ck: Checkpoint = serde_json::from_str(&text)
        .map_err(|e| Error::input(&path, format!("not a gradflow checkpoint: {e}")))?;
    if ck.config_toml != prep.config.to_toml() {
        return Err(Error::Invalid(format!(
            "--resume: {} was started from a different config (its config.toml differs from {}): \
             resume with the config it was started with",
            out.display(),
            prep.config.source.display()
        )));
    }
    if ck.theta.len() != prep.model.p() {
        return Err(Error::input(
            &path,
            "the checkpoint's θ does not match the model's p",
        ));
    }
    Ok(ck)
}
