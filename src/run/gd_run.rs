//! The run loop for `solver = "gd"`: gradient descent epoch by epoch, a metrics.csv row every
//! `log_every` epochs, NTK checkpoints every `ntk.every` epochs, GD's discrete trace of sliding
//! (runs of consecutive kink flips) in sliding.csv. Everything that changes between epochs lives
//! in the run's [`Checkpoint`], so Ctrl-C/SIGTERM pauses at the next epoch boundary and
//! `--resume` continues bit-identically.

use super::state::{timed_kernel_view, Checkpoint};
use super::summary::{summarize, RunSummary, Status, METRICS_HEADER};
use super::writer::{memory_budget, progress_bar, RunWriter};
use super::{Prepared, RunOptions};
use crate::error::{Error, Result};
use crate::train::{gradient_descent_from, Control, GdOptions};
use std::path::Path;
use std::time::Instant;

/// Writes (or, from a checkpoint, continues) the GD run in `dir`.
pub(super) fn write_gd_run(
    prep: &Prepared,
    dir: &Path,
    opts: &RunOptions,
    resume: Option<Checkpoint>,
) -> Result<RunSummary> {
    let start = Instant::now();
    let cfg = &prep.config;
    let (model, data) = (&prep.model, &prep.data);
    let mut writer = RunWriter::open(prep, dir, &METRICS_HEADER, resume.is_some())?;
    let mut ck = resume.unwrap_or_else(|| Checkpoint::fresh(prep));
    let gd = GdOptions {
        lr: cfg.train.lr,
        epochs: cfg.train.epochs,
        loss: cfg.train.loss,
        track_kinks: model.activation.has_kinks(),
        precision: cfg.train.precision,
    };
    let bar = progress_bar(
        opts.progress,
        gd.epochs as u64 + 1,
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} epochs {per_sec} ETA {eta} {msg}",
    );
    bar.set_position(ck.gd.epoch as u64);
    let mut io_error = None;
    let every = cfg.ntk.every;
    let log_every = cfg.train.log_every.max(1);
    let ((lin, drift), seconds) = timed_kernel_view(prep, memory_budget(prep));
    ck.kernel_view_seconds += seconds;
    let mut theta = std::mem::take(&mut ck.theta);
    let mut gd_state = std::mem::take(&mut ck.gd);
    // On a worker of the pool (as the flow solve): the engine's joins then keep one half on
    // this thread instead of blocking the caller at every epoch.
    let outcome = rayon::scope(|_| {
        gradient_descent_from(model, data, &mut theta, &gd, &mut gd_state, |rec, theta| {
            let last = rec.epoch == gd.epochs;
            ck.series_t.push(rec.t);
            ck.series_loss.push(rec.loss);
            if rec.epoch % log_every == 0 || last {
                let l_lin = lin.as_ref().map_or(f64::NAN, |l| l.loss(rec.t));
                ck.kernel.observe_linearised(rec.loss, l_lin);
                let row = [
                    rec.epoch as f64,
                    rec.t,
                    rec.loss,
                    rec.grad_norm,
                    rec.kinks.crossings as f64,
                    rec.kinks.chattering as f64,
                    l_lin,
                ];
                if let Err(e) = writer.metrics_row(&row) {
                    io_error = Some(e);
                    return Control::Stop;
                }
            }
            let due = rec.epoch == 0 || last || (every > 0 && rec.epoch % every == 0);
            if writer.has_ntk() && due {
                bar.set_message(format!("loss {:.3e} · NTK λ_min …", rec.loss));
                let at = (rec.epoch, rec.t, rec.loss);
                let written =
                    writer.ntk_checkpoint(&mut ck, theta, drift.as_ref(), at, Some(gd.lr), &[]);
                if let Err(e) = written {
                    io_error = Some(e);
                    return Control::Stop;
                }
            }
            if rec.epoch % 64 == 0 || last {
                bar.set_message(format!("loss {:.3e}", rec.loss));
                writer.flush_metrics_lazily();
            }
            bar.inc(1);
            if crate::interrupt::requested() || opts.stop_after_epoch == Some(rec.epoch) {
                return Control::Pause;
            }
            Control::Continue
        })
    });
    bar.finish_and_clear();
    writer.flush()?;
    if let Some(e) = io_error {
        return Err(e);
    }
    ck.seconds += start.elapsed().as_secs_f64();
    let (status, message, outcome) = match outcome {
        Ok(o) if o.paused => {
            let msg = format!(
                "interrupted after epoch {} of {}: resume with `gradflow train {} --out <this run> --resume`",
                o.last_epoch,
                gd.epochs,
                cfg.source.display()
            );
            (Status::Interrupted, Some(msg), Some(o))
        }
        Ok(o) => (Status::Completed, None, Some(o)),
        Err(Error::Diverged(msg)) => (Status::Diverged, Some(msg), None),
        Err(e) => return Err(e),
    };
    ck.gradient_evaluations += outcome.as_ref().map_or(0, |o| o.gradient_evaluations);
    let last_epoch = outcome.as_ref().map(|o| o.last_epoch);
    let summary = summarize(prep, &ck, status, message, last_epoch, &gd_state);
    // GD's discrete trace of sliding: runs of consecutive flips, in flow time.
    let sliding: Vec<[f64; 3]> = gd_state
        .tracker
        .chatter_runs()
        .into_iter()
        .map(|(k, a, b)| [k as f64, a as f64 * gd.lr, b as f64 * gd.lr])
        .collect();
    let checkpoint = (status == Status::Interrupted).then(|| {
        ck.theta = theta.clone();
        ck.gd = gd_state;
        ck
    });
    writer.finish(summary, &theta, Some(&sliding), checkpoint.as_ref())
}
