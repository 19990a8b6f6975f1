//! The run loop for `solver = "flow"`: the kink-aware gradient-flow solve with the same run
//! directory as a GD run — metrics.csv keyed by t (one row per output time), ntk.csv at output
//! checkpoints (`ntk.every` counts outputs here), the paper's bound along the trajectory — plus
//! what only a flow run has: kink events, pinned (sliding) pre-activations and their sliding
//! intervals (`sliding.csv`), the solver's evaluation counts, and on request (`compare_gd`) GD
//! with step lr run to the same time for ‖θ_GD(kη) − θ_GF(kη)‖ / ‖θ_GF(kη)‖ and the loss gap.
//!
//! A flow run cannot be paused and resumed (a GD run can): Ctrl-C stops it at the next output
//! time with status "interrupted", keeping the rows written so far.

use super::progress::{summarize, timed_kernel_view, write_inputs, Checkpoint};
use super::{param_metadata, Prepared, RunOptions, RunSummary, Status, NTK_HEADER};
use crate::error::{Error, Result};
use crate::flow::{gradient_flow_with_progress, Counts, EventSummary, FlowOptions};
use crate::io::CsvWriter;
use crate::ntk::NtkOptions;
use crate::params;
use crate::train::{gradient_descent, Control, GdOptions, GdState};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;

/// Resolution of the progress bar in flow time (ticks over [0, T]).
const PROGRESS_TICKS: u64 = 1000;

/// metrics.csv of a flow run: one row per output time.
pub const FLOW_METRICS_HEADER: [&str; 12] = [
    "epoch",
    "t",
    "loss",
    "grad_norm",
    "kink_crossings",
    "pinned",
    "slides",
    "releases",
    "gradient_evaluations",
    "loss_linearised",
    "gd_loss",
    "gd_theta_gap",
];

/// GD against the flow over a run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GdComparison {
    pub lr: f64,
    pub epochs: usize,
    /// max over output times of ‖θ_GD − θ_GF‖ / ‖θ_GF‖ (GD at the epoch nearest each time).
    pub max_theta_gap: f64,
    pub final_theta_gap: f64,
    /// max over output times of |L_GD − L_GF| / L_GF.
    pub max_relative_loss_gap: f64,
    pub final_loss_gd: f64,
}

/// The flow part of `summary.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FlowRunSummary {
    pub t_end: f64,
    pub rtol: f64,
    pub atol: f64,
    pub kink_aware: bool,
    pub steps_accepted: u64,
    pub steps_rejected: u64,
    pub counts: Counts,
    /// All the work in units of one full-batch gradient.
    pub gradient_equivalents: f64,
    /// Kink events (the intervals themselves are in sliding.csv).
    pub events: EventSummary,
    pub gd_comparison: Option<GdComparison>,
}

/// The kernel-regime view (both solvers), when the dense NTK is small enough.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct KernelSummary {
    /// L_lin at the last row, and max over rows of |L − L_lin| / L.
    pub final_loss_linearised: Option<f64>,
    pub max_relative_gap_linearised: Option<f64>,
    /// ‖H(t) − H(0)‖_F / ‖H(0)‖_F at the last NTK checkpoint, and its maximum.
    pub ntk_drift_final: Option<f64>,
    pub ntk_drift_max: Option<f64>,
}

impl KernelSummary {
    /// Records L_lin at a metrics row with loss L (no-op when L_lin is not computed).
    pub(super) fn observe_linearised(&mut self, loss: f64, l_lin: f64) {
        if l_lin.is_finite() {
            self.final_loss_linearised = Some(l_lin);
            let gap = (loss - l_lin).abs() / loss.abs().max(f64::MIN_POSITIVE);
            self.max_relative_gap_linearised =
                Some(self.max_relative_gap_linearised.map_or(gap, |g| g.max(gap)));
        }
    }
    /// Records the NTK drift at a checkpoint (no-op when it is not computed).
    pub(super) fn observe_drift(&mut self, drift: f64) {
        if drift.is_finite() {
            self.ntk_drift_final = Some(drift);
            self.ntk_drift_max = Some(self.ntk_drift_max.map_or(drift, |v| v.max(drift)));
        }
    }
}

/// Runs GD with step lr to t_end, keeping θ at the epoch nearest each output time.
/// GD's epoch count and (loss, θ) at the epoch nearest each output time.
type GdReference = (usize, Vec<(f64, Vec<f64>)>);

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

/// Writes the flow run in `dir` (a fresh staging directory).
pub(super) fn write_flow_run(prep: &Prepared, dir: &Path, opts: &RunOptions) -> Result<RunSummary> {
    let start = Instant::now();
    let cfg = &prep.config;
    let fc = &cfg.train.flow;
    let (model, data) = (&prep.model, &prep.data);
    let (n, m) = (data.n(), data.m());
    let loss_kind = cfg.train.loss;
    let c = loss_kind.c(n, m);
    write_inputs(prep, dir)?;
    let budget = (cfg.ntk.memory_budget_gb * (1u64 << 30) as f64) as u64;
    let ntk_opts = NtkOptions {
        memory_budget_bytes: budget,
        ..NtkOptions::default()
    };
    let mut flow_opts = FlowOptions::new(fc.t_end, fc.rtol, fc.atol, fc.outputs, loss_kind);
    flow_opts.kink_aware = fc.kink_aware;
    let ((lin, drift), kernel_view_seconds) = timed_kernel_view(prep, budget);
    let gd = if fc.compare_gd {
        Some(gd_reference(prep, &flow_opts.outputs)?)
    } else {
        None
    };
    let mut metrics = CsvWriter::create(&dir.join("metrics.csv"), &FLOW_METRICS_HEADER)?;
    let mut ntk_csv = if cfg.ntk.enabled {
        Some(CsvWriter::create(&dir.join("ntk.csv"), &NTK_HEADER)?)
    } else {
        None
    };
    // The bar runs in flow time t (in thousandths of T), updated after every accepted step.
    let bar = if opts.progress {
        ProgressBar::new(PROGRESS_TICKS)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} flow {msg} ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let solve_start = Instant::now();
    let mut last_draw = 0u64;
    let mut progress = |p: &crate::flow::FlowProgress| {
        let tick = ((p.t / p.t_end).clamp(0.0, 1.0) * PROGRESS_TICKS as f64) as u64;
        let steps = p.steps_accepted;
        // The message only when the bar moved or every 64 steps (formatting costs).
        if tick == bar.position() && steps < last_draw + 64 {
            return;
        }
        last_draw = steps;
        let rate = steps as f64 / solve_start.elapsed().as_secs_f64().max(1e-9);
        bar.set_position(tick);
        bar.set_message(format!(
            "t {:.4}/{} · loss {:.3e} · pinned {} · {:.0} steps/s",
            p.t, p.t_end, p.loss, p.pinned, rate
        ));
    };
    let mut ck = Checkpoint::fresh(prep);
    ck.kernel_view_seconds = kernel_view_seconds;
    let mut cmp = GdComparison {
        lr: cfg.train.lr,
        epochs: gd.as_ref().map_or(0, |g| g.0),
        max_theta_gap: 0.0,
        final_theta_gap: f64::NAN,
        max_relative_loss_gap: 0.0,
        final_loss_gd: f64::NAN,
    };
    let mut io_error = None;
    let mut interrupted = false;
    let every = cfg.ntk.every;
    let mut final_theta = prep.theta0.clone();
    let last_index = fc.outputs;
    let outcome = gradient_flow_with_progress(
        model,
        data,
        &mut final_theta,
        &flow_opts,
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
            if let Err(e) = metrics.row(&row) {
                io_error = Some(e);
                return Control::Stop;
            }
            let last = rec.index == last_index;
            if let Some(csv) = ntk_csv.as_mut() {
                if rec.index == 0 || last || (every > 0 && rec.index % every == 0) {
                    bar.set_message(format!("t {} · loss {:.3e} · NTK λ_min …", rec.t, rec.loss));
                    let drift = drift.as_ref();
                    let row = ck.ntk_checkpoint(
                        model,
                        theta,
                        &data.x,
                        &ntk_opts,
                        drift,
                        c,
                        (rec.index, rec.t, rec.loss),
                        None,
                    );
                    if let Err(e) = row.and_then(|row| csv.row(&row).and_then(|_| csv.flush())) {
                        io_error = Some(e);
                        return Control::Stop;
                    }
                }
            }
            if crate::interrupt::requested() {
                interrupted = true;
                return Control::Stop;
            }
            Control::Continue
        },
        &mut progress,
    );
    bar.finish_and_clear();
    metrics.flush()?;
    if let Some(csv) = ntk_csv.as_mut() {
        csv.flush()?;
    }
    if let Some(e) = io_error {
        return Err(e);
    }
    ck.seconds = start.elapsed().as_secs_f64();
    let (status, message, outcome) = match outcome {
        Ok(o) if interrupted => (
            Status::Interrupted,
            Some(format!(
                "interrupted at t = {:.4} of {}: a flow run cannot be resumed; run it again",
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
        let mut sliding = CsvWriter::create(&dir.join("sliding.csv"), &["entry", "start", "end"])?;
        for iv in &o.events.intervals {
            sliding.row(&[iv.entry as f64, iv.start, iv.end])?;
        }
        sliding.flush()?;
    }
    let mut summary = summarize(
        prep,
        &ck,
        status,
        message.clone(),
        None,
        &GdState::default(),
    );
    summary.epochs = 0;
    summary.last_epoch = ck.series_t.len().saturating_sub(1);
    summary.gd_stability_max = None;
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
            gd_comparison: gd.is_some().then(|| cmp.clone()),
        }
    });
    if status == Status::Completed {
        let md = param_metadata(prep);
        params::save(
            &dir.join("params_final.safetensors"),
            &model.param_specs(),
            &final_theta,
            &md,
        )?;
    }
    let summary = super::write_summary(prep, dir, summary)?;
    match (status, message) {
        (Status::Diverged, Some(msg)) => Err(Error::Diverged(msg)),
        (Status::Interrupted, Some(msg)) => Err(Error::Interrupted(msg)),
        _ => Ok(summary),
    }
}
