//! The run loop for `solver = "flow"`: the kink-aware gradient-flow solve with the same run
//! directory as a GD run — metrics.csv keyed by t (one row per output time), ntk.csv at output
//! checkpoints (`ntk.every` counts outputs here), the paper's bound along the trajectory — plus
//! what only a flow run has: kink events, pinned (sliding) pre-activations and their sliding
//! intervals (`sliding.csv`), the solver's evaluation counts, and on request (`compare_gd`) GD
//! with step lr run to the same time for ‖θ_GD(kη) − θ_GF(kη)‖ / ‖θ_GF(kη)‖ and the loss gap.
//!
//! Ctrl-C/SIGTERM (or `stop_after_step`) pauses the solve after its next accepted step: the run
//! is written with status "interrupted" and a checkpoint holding θ, the run's state and the
//! solver's [`crate::flow::FlowSnapshot`], and `--resume` continues it to a result bit-identical
//! to an uninterrupted run (PReLU networks too: the snapshot keeps the trainable slope of the
//! solve's last forward pass). The classic solve (`kink_aware = false`) cannot pause
//! ([`crate::flow::resumable`]): Ctrl-C stops it at the next output time, keeping the rows
//! written so far, and it starts again.

use super::state::{timed_kernel_view, Checkpoint, FlowRunState};
use super::summary::{
    summarize, FlowRunSummary, GdComparison, RunSummary, Status, FLOW_METRICS_HEADER,
};
use super::writer::{memory_budget, progress_bar, RunWriter};
use super::{Prepared, RunOptions};
use crate::error::{Error, Result};
use crate::flow::{gradient_flow_from, resumable, FlowOptions};
use crate::train::{gradient_descent, Control, GdOptions, GdState};
use std::path::Path;
use std::time::Instant;

/// Resolution of the progress bar in flow time (ticks over [0, T]).
const PROGRESS_TICKS: u64 = 1000;

/// GD's epoch count and (loss, θ) at the epoch nearest each output time.
type GdReference = (usize, Vec<(f64, Vec<f64>)>);

/// Runs GD with step lr to t_end, keeping θ at the epoch nearest each output time.
fn gd_reference(prep: &Prepared, times: &[f64]) -> Result<GdReference> {
    let cfg = &prep.config;
    let lr = cfg.train.lr;
    let epochs = (cfg.train.flow.t_end / lr).round() as usize;
    let want: Vec<usize> = times.iter().map(|t| (t / lr).round() as usize).collect();
    let bytes = (prep.model.p() * 8 * times.len()) as u64;
    if bytes > 2 << 30 {
        return Err(Error::config(
            &cfg.source,
            "train.compare_gd",
            format!(
                "compare_gd keeps θ at every output time: {:.1} GB for p = {} and {} outputs; lower train.outputs",
                bytes as f64 / 1e9,
                prep.model.p(),
                times.len()
            ),
        ));
    }
    let mut kept = Vec::with_capacity(times.len());
    let mut theta = prep.theta0.clone();
    let opts = GdOptions {
        lr,
        epochs,
        loss: cfg.train.loss,
        track_kinks: false,
        precision: cfg.train.precision,
    };
    let mut next = 0;
    gradient_descent(&prep.model, &prep.data, &mut theta, &opts, |rec, th| {
        while next < want.len() && want[next] == rec.epoch {
            kept.push((rec.loss, th.to_vec()));
            next += 1;
        }
        Control::Continue
    })?;
    Ok((epochs, kept))
}

fn rel_gap(a: &[f64], b: &[f64]) -> f64 {
    let d: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
    let n: f64 = b.iter().map(|y| y * y).sum();
    (d / n.max(f64::MIN_POSITIVE)).sqrt()
}

/// Writes (or, from a checkpoint, continues) the flow run in `dir`.
pub(super) fn write_flow_run(
    prep: &Prepared,
    dir: &Path,
    opts: &RunOptions,
    resume: Option<Checkpoint>,
) -> Result<RunSummary> {
    let start = Instant::now();
    let cfg = &prep.config;
    let fc = &cfg.train.flow;
    let (model, data) = (&prep.model, &prep.data);
    let mut flow_opts = FlowOptions::new(fc.t_end, fc.rtol, fc.atol, fc.outputs, cfg.train.loss);
    flow_opts.kink_aware = fc.kink_aware;
    let resuming = resume.is_some();
    let mut ck = resume.unwrap_or_else(|| Checkpoint::fresh(prep));
    let resumed = ck.flow.take();
    if resuming && resumed.is_none() {
        return Err(Error::Invalid(
            "--resume: the checkpoint holds no flow solver state; start the run again without --resume"
                .into(),
        ));
    }
    let mut writer = RunWriter::open(prep, dir, &FLOW_METRICS_HEADER, resuming)?;
    let ((lin, drift), kernel_view_seconds) = timed_kernel_view(prep, memory_budget(prep));
    let gd = if fc.compare_gd {
        Some(gd_reference(prep, &flow_opts.outputs)?)
    } else {
        None
    };
    // The bar runs in flow time t (in thousandths of T), updated after every accepted step.
    let bar = progress_bar(
        opts.progress,
        PROGRESS_TICKS,
        "{spinner} [{elapsed_precise}] {wide_bar} flow {msg} ETA {eta}",
    );
    let solve_start = Instant::now();
    let mut last_draw = 0u64;
    // Pausable solves pause after an accepted step; the others stop at the next output time.
    let can_pause = resumable(model, &flow_opts);
    let steps_before = resumed
        .as_ref()
        .map_or(0, |r| r.solver.position.steps_accepted);
    let mut progress = |p: &crate::flow::FlowProgress| {
        let pause = crate::interrupt::requested() || opts.stop_after_step == Some(p.steps_accepted);
        let control = if can_pause && pause {
            Control::Pause
        } else {
            Control::Continue
        };
        let tick = ((p.t / p.t_end).clamp(0.0, 1.0) * PROGRESS_TICKS as f64) as u64;
        let steps = p.steps_accepted;
        // The message only when the bar moved or every 64 steps (formatting costs).
        if tick == bar.position() && steps < last_draw + 64 {
            return control;
        }
        last_draw = steps;
        let rate = (steps - steps_before) as f64 / solve_start.elapsed().as_secs_f64().max(1e-9);
        bar.set_position(tick);
        bar.set_message(format!(
            "t {:.4}/{} · loss {:.3e} · pinned {} · {:.0} steps/s",
            p.t, p.t_end, p.loss, p.pinned, rate
        ));
        control
    };
    ck.kernel_view_seconds += kernel_view_seconds;
    let mut cmp = GdComparison {
        lr: cfg.train.lr,
        epochs: gd.as_ref().map_or(0, |g| g.0),
        max_theta_gap: 0.0,
        final_theta_gap: f64::NAN,
        max_relative_loss_gap: 0.0,
        final_loss_gd: f64::NAN,
        stability_max: None,
    };
    if let Some(r) = &resumed {
        let [max_gap, final_gap, max_loss_gap, final_loss] = r.gd_comparison.map(f64::from_bits);
        cmp.max_theta_gap = max_gap;
        cmp.final_theta_gap = final_gap;
        cmp.max_relative_loss_gap = max_loss_gap;
        cmp.final_loss_gd = final_loss;
    }
    let mut io_error = None;
    let mut interrupted = false;
    let every = cfg.ntk.every;
    let mut final_theta = std::mem::take(&mut ck.theta);
    let last_index = fc.outputs;
    let outcome = gradient_flow_from(
        model,
        data,
        &mut final_theta,
        &flow_opts,
        resumed.as_ref().map(|r| &r.solver),
        |rec, theta| {
            ck.series_t.push(rec.t);
            ck.series_loss.push(rec.loss);
            let l_lin = lin.as_ref().map_or(f64::NAN, |l| l.loss(rec.t));
            ck.kernel.observe_linearised(rec.loss, l_lin);
            let (gd_loss, gd_gap) = match gd.as_ref().and_then(|g| g.1.get(rec.index)) {
                Some((l, th)) => {
                    let gap = rel_gap(th, theta);
                    cmp.max_theta_gap = cmp.max_theta_gap.max(gap);
                    cmp.final_theta_gap = gap;
                    cmp.final_loss_gd = *l;
                    let lg = (l - rec.loss).abs() / rec.loss.abs().max(f64::MIN_POSITIVE);
                    cmp.max_relative_loss_gap = cmp.max_relative_loss_gap.max(lg);
                    (*l, gap)
                }
                None => (f64::NAN, f64::NAN),
            };
            let row = [
                rec.index as f64,
                rec.t,
                rec.loss,
                rec.speed,
                rec.crossings as f64,
                rec.pinned as f64,
                rec.slides as f64,
                rec.releases as f64,
                rec.gradient_evaluations as f64,
                l_lin,
                gd_loss,
                gd_gap,
            ];
            if let Err(e) = writer.metrics_row(&row) {
                io_error = Some(e);
                return Control::Stop;
            }
            let last = rec.index == last_index;
            let due = rec.index == 0 || last || (every > 0 && rec.index % every == 0);
            if writer.has_ntk() && due {
                bar.set_message(format!("t {} · loss {:.3e} · NTK λ_min …", rec.t, rec.loss));
                let at = (rec.index, rec.t, rec.loss);
                if let Err(e) =
                    writer.ntk_checkpoint(&mut ck, theta, drift.as_ref(), at, None, &rec.sliding)
                {
                    io_error = Some(e);
                    return Control::Stop;
                }
            }
            if !can_pause && crate::interrupt::requested() {
                interrupted = true;
                return Control::Stop;
            }
            Control::Continue
        },
        &mut progress,
    );
    bar.finish_and_clear();
    writer.flush()?;
    if let Some(e) = io_error {
        return Err(e);
    }
    ck.seconds += start.elapsed().as_secs_f64();
    let (status, message, outcome) = match outcome {
        Ok(o) if o.paused.is_some() => (
            Status::Interrupted,
            Some(format!(
                "interrupted at t = {:.4} of {}: resume with `gradflow train {} --out <this run> --resume`",
                o.t_reached,
                fc.t_end,
                cfg.source.display()
            )),
            Some(o),
        ),
        Ok(o) if interrupted => (
            Status::Interrupted,
            Some(format!(
                "interrupted at t = {:.4} of {}: this flow run cannot be resumed (the classic solve, \
                 kink_aware = false); run it again",
                o.t_reached, fc.t_end
            )),
            Some(o),
        ),
        Ok(o) => (Status::Completed, None, Some(o)),
        Err(Error::Diverged(msg)) => (Status::Diverged, Some(msg), None),
        Err(e) => return Err(e),
    };
    if let Some(o) = &outcome {
        ck.gradient_evaluations = o.counts.gradients;
    }
    let sliding: Option<Vec<[f64; 3]>> = outcome.as_ref().map(|o| {
        let rows = o.events.intervals.iter();
        rows.map(|iv| [iv.entry as f64, iv.start, iv.end]).collect()
    });
    let mut summary = summarize(prep, &ck, status, message, None, &GdState::default());
    summary.epochs = 0;
    summary.last_epoch = ck.series_t.len().saturating_sub(1);
    // The flow has no step; GD's stability at η along the flow's own NTK goes with the comparison.
    let gd_stability = summary.gd_stability_max.take();
    summary.kernel = Some(ck.kernel.clone());
    summary.flow = outcome.as_ref().map(|o| {
        let mut events = o.events.clone();
        events.intervals.clear();
        FlowRunSummary {
            t_end: fc.t_end,
            rtol: fc.rtol,
            atol: fc.atol,
            kink_aware: fc.kink_aware,
            steps_accepted: o.steps_accepted,
            steps_rejected: o.steps_rejected,
            counts: o.counts,
            gradient_equivalents: o.gradient_equivalents,
            events,
            gd_comparison: gd.is_some().then(|| GdComparison {
                stability_max: gd_stability,
                ..cmp.clone()
            }),
        }
    });
    let snapshot = outcome.and_then(|o| o.paused);
    let checkpoint = snapshot.map(|solver| {
        let gaps = [
            cmp.max_theta_gap,
            cmp.final_theta_gap,
            cmp.max_relative_loss_gap,
            cmp.final_loss_gd,
        ];
        ck.theta = final_theta.clone();
        ck.flow = Some(FlowRunState {
            solver: *solver,
            gd_comparison: gaps.map(f64::to_bits),
        });
        ck
    });
    writer.finish(
        summary,
        &final_theta,
        sliding.as_deref(),
        checkpoint.as_ref(),
    )
}
