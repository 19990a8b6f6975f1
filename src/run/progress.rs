//! The training loop of a run and its resumable state. Everything that changes from epoch to
//! epoch — θ, GD's state (kink tracker), the bound tracker, the loss series, NTK summaries — lives
//! in one serialisable [`Checkpoint`], so a run stopped at an epoch boundary continues from
//! `checkpoint.json` and ends bit-identical to one that never stopped.

use super::flow_run::KernelSummary;
use super::{
    param_metadata, write_json, Prepared, RunOptions, RunSummary, RunTiming, Status,
    CHECKPOINT_FILE, METRICS_HEADER, NTK_HEADER,
};
use crate::error::{Error, Result};
use crate::flow::kernel::{dense_kernel_affordable, kernel_view, Drift, Linearised};
use crate::io::{self, CsvWriter};
use crate::ntk::{self, NtkOptions, NtkSummary};
use crate::params;
use crate::theory::{fitted_rate, overparametrized, BoundTracker};
use crate::train::{gradient_descent_from, Control, GdOptions, GdState};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;

/// Relative size of the random perturbations of θ(0) that test whether an exact rank
/// deficiency of J persists, their number, and their seed.
pub const PERSISTENCE_REL: f64 = 1e-6;
pub const PERSISTENCE_DRAWS: usize = 5;
const PERSISTENCE_SEED: u64 = 0x5eed;

/// The state of a run between two epochs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The resolved config the run was started with (checked on resume).
    pub config_toml: String,
    /// θ at epoch `gd.epoch`.
    pub theta: Vec<f64>,
    pub gd: GdState,
    pub bound: Option<BoundTracker>,
    /// (t, loss) of every epoch evaluated so far.
    pub series_t: Vec<f64>,
    pub series_loss: Vec<f64>,
    pub ntk_first: Option<NtkSummary>,
    pub ntk_last: Option<NtkSummary>,
    pub max_lambda_max: Option<f64>,
    pub gradient_evaluations: u64,
    /// Wall-clock seconds spent before this checkpoint.
    pub seconds: f64,
    /// The linearised prediction's gap and the NTK drift so far.
    #[serde(default)]
    pub kernel: KernelSummary,
    /// Wall-clock seconds spent in NTK checkpoints, and their number, so far.
    #[serde(default)]
    pub ntk_seconds: f64,
    #[serde(default)]
    pub ntk_checkpoints: usize,
    /// Wall-clock seconds spent forming H(0) for the linearised prediction and the drift.
    #[serde(default)]
    pub kernel_view_seconds: f64,
    /// How many NTK checkpoints carried a certified λ_min > 0, and the first that did not.
    #[serde(default)]
    pub certification: CertificationTally,
}

/// Certification over a run's NTK checkpoints (`summary.json` → `certification`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CertificationTally {
    pub checkpoints: usize,
    /// Checkpoints with a proven λ_min(H) ≥ `lambda_min_lower` > 0.
    pub certified: usize,
    /// Checkpoints where J was exactly rank-deficient.
    pub rank_deficient: usize,
    /// The smallest certified lower bound over the certified checkpoints.
    pub min_lambda_min_lower: Option<f64>,
    /// (t, why) of the first checkpoint without a certificate.
    pub first_uncertified: Option<(f64, String)>,
}

impl CertificationTally {
    fn observe(&mut self, t: f64, s: &NtkSummary) {
        self.checkpoints += 1;
        let j = &s.jacobian;
        self.rank_deficient += j.is_exact_deficient() as usize;
        match j.lambda_min_lower {
            Some(l) => {
                self.certified += 1;
                self.min_lambda_min_lower =
                    Some(self.min_lambda_min_lower.map_or(l, |m: f64| m.min(l)));
            }
            None if self.first_uncertified.is_none() => {
                let why = j
                    .jacobian_note
                    .clone()
                    .or_else(|| j.certificate.clone())
                    .unwrap_or_else(|| "J was not analysed".into());
                self.first_uncertified = Some((t, why));
            }
            None => {}
        }
    }
    /// Every checkpoint (at least one) was certified.
    pub fn all_certified(&self) -> bool {
        self.checkpoints > 0 && self.certified == self.checkpoints
    }
}

impl Checkpoint {
    pub(super) fn fresh(prep: &Prepared) -> Self {
        Self {
            config_toml: prep.config.to_toml(),
            theta: prep.theta0.clone(),
            gd: GdState::default(),
            bound: None,
            series_t: Vec::new(),
            series_loss: Vec::new(),
            ntk_first: None,
            ntk_last: None,
            max_lambda_max: None,
            gradient_evaluations: 0,
            seconds: 0.0,
            kernel: KernelSummary::default(),
            ntk_seconds: 0.0,
            ntk_checkpoints: 0,
            kernel_view_seconds: 0.0,
            certification: CertificationTally::default(),
        }
    }
}

impl Checkpoint {
    /// One NTK checkpoint of a run (GD epoch or flow output `index` at time t with loss L):
    /// the spectrum of H(θ), the bound L(0)·exp(−4c∫λ_min) checked, the NTK drift when `drift`
    /// is given, all recorded here; returns the ntk.csv row. `gd_step` = Some(η) for GD runs
    /// (the stability column η·c·λ_max), None for the flow.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn ntk_checkpoint(
        &mut self,
        model: &crate::model::Model,
        theta: &[f64],
        x: &crate::batch::Batch,
        opts: &NtkOptions,
        drift: Option<&Drift>,
        c: f64,
        (index, t, loss): (usize, f64, f64),
        gd_step: Option<f64>,
    ) -> Result<[f64; 14]> {
        let clock = Instant::now();
        // Block ranks at the first checkpoint only (one SVD per tensor).
        let opts = NtkOptions {
            block_ranks: self.ntk_first.is_none(),
            ..opts.clone()
        };
        let mut s = ntk::ntk_spectrum(model, theta, x, &opts)?;
        if self.ntk_first.is_none() && s.jacobian.is_exact_deficient() && s.p >= s.dim {
            // Is the deficiency of J(θ(0)) a property of an open set of θ, or a coincidence?
            s.jacobian.persistence = Some(ntk::rank::perturbation_persistence(
                model,
                theta,
                x,
                PERSISTENCE_REL,
                PERSISTENCE_DRAWS,
                PERSISTENCE_SEED,
            ));
        }
        self.certification.observe(t, &s);
        let chk = self
            .bound
            .get_or_insert_with(|| BoundTracker::new(c, loss))
            .observe(index, t, loss, s.lambda_min);
        let dr = drift.map_or(f64::NAN, |d| d.at(model, theta, x));
        self.kernel.observe_drift(dr);
        self.ntk_seconds += clock.elapsed().as_secs_f64();
        self.ntk_checkpoints += 1;
        let row = [
            index as f64,
            t,
            loss,
            s.lambda_min,
            s.lambda_max,
            s.condition.unwrap_or(f64::INFINITY),
            s.lambda_min_accuracy,
            chk.integral,
            chk.bound,
            chk.holds as u8 as f64,
            gd_step.map_or(f64::NAN, |lr| lr * c * s.lambda_max),
            dr,
            s.jacobian.jacobian_rank.map_or(f64::NAN, |r| r as f64),
            s.jacobian.lambda_min_lower.unwrap_or(f64::NAN),
        ];
        self.max_lambda_max = Some(
            self.max_lambda_max
                .map_or(s.lambda_max, |v| v.max(s.lambda_max)),
        );
        if self.ntk_first.is_none() {
            self.ntk_first = Some(s.clone());
        }
        self.ntk_last = Some(s);
        Ok(row)
    }
}

/// The linearised prediction and the NTK drift from H(0) when the dense kernel is affordable
/// within `budget` bytes (else neither), and the seconds it took.
pub(super) fn timed_kernel_view(
    prep: &Prepared,
    budget: u64,
) -> ((Option<Linearised>, Option<Drift>), f64) {
    let (model, data) = (&prep.model, &prep.data);
    let clock = Instant::now();
    let view = if dense_kernel_affordable(model, data.n(), budget) {
        kernel_view(
            model,
            &prep.theta0,
            &data.x,
            &data.y,
            prep.config.train.loss,
            prep.config.ntk.enabled,
        )
    } else {
        (None, None)
    };
    (view, clock.elapsed().as_secs_f64())
}

/// Writes what a run starts from: the resolved config, the data (and graph), θ(0).
pub(super) fn write_inputs(prep: &Prepared, dir: &Path) -> Result<()> {
    let data = &prep.data;
    io::write_atomic(&dir.join("config.toml"), prep.config.to_toml().as_bytes())?;
    io::write_matrix(&dir.join("x.npy"), data.x.as_slice(), data.n(), data.d())?;
    io::write_matrix(&dir.join("y.npy"), data.y.as_slice(), data.n(), data.m())?;
    if let Some(g) = &data.graph {
        io::write_edges(&dir.join("edges.csv"), &g.edges)?;
    }
    params::save(
        &dir.join("params_init.safetensors"),
        &prep.model.param_specs(),
        &prep.theta0,
        &param_metadata(prep),
    )
}

/// Writes (or, from a checkpoint, continues) the run in `dir`.
pub(super) fn write_run(
    prep: &Prepared,
    dir: &Path,
    opts: &RunOptions,
    resume: Option<Checkpoint>,
) -> Result<RunSummary> {
    let start = Instant::now();
    let cfg = &prep.config;
    let (model, data) = (&prep.model, &prep.data);
    let specs = model.param_specs();
    let md = param_metadata(prep);
    let resuming = resume.is_some();
    let mut ck = match resume {
        Some(ck) => ck,
        None => {
            write_inputs(prep, dir)?;
            Checkpoint::fresh(prep)
        }
    };
    let (n, m) = (data.n(), data.m());
    let loss_kind = cfg.train.loss;
    let c = loss_kind.c(n, m);
    let gd = GdOptions {
        lr: cfg.train.lr,
        epochs: cfg.train.epochs,
        loss: loss_kind,
        track_kinks: model.activation.has_kinks(),
        precision: cfg.train.precision,
    };
    let ntk_opts = NtkOptions {
        memory_budget_bytes: (cfg.ntk.memory_budget_gb * (1u64 << 30) as f64) as u64,
        ..NtkOptions::default()
    };
    let open = |name: &str, header: &[&str]| {
        if resuming {
            CsvWriter::append(&dir.join(name), header)
        } else {
            CsvWriter::create(&dir.join(name), header)
        }
    };
    let mut metrics = open("metrics.csv", &METRICS_HEADER)?;
    let mut ntk_csv = if cfg.ntk.enabled {
        Some(open("ntk.csv", &NTK_HEADER)?)
    } else {
        None
    };
    let bar = if opts.progress {
        ProgressBar::new(gd.epochs as u64 + 1)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} epochs {per_sec} ETA {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(ck.gd.epoch as u64);
    let mut io_error = None;
    let every = cfg.ntk.every;
    let log_every = cfg.train.log_every.max(1);
    let ((lin, drift), seconds) = timed_kernel_view(prep, ntk_opts.memory_budget_bytes);
    ck.kernel_view_seconds += seconds;
    let mut theta = std::mem::take(&mut ck.theta);
    let mut gd_state = std::mem::take(&mut ck.gd);
    let outcome =
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
                if let Err(e) = metrics.row(&row) {
                    io_error = Some(e);
                    return Control::Stop;
                }
            }
            if let Some(csv) = ntk_csv.as_mut() {
                if rec.epoch == 0 || last || (every > 0 && rec.epoch % every == 0) {
                    bar.set_message(format!("loss {:.3e} · NTK λ_min …", rec.loss));
                    let drift = drift.as_ref();
                    let step = Some(gd.lr);
                    let row = ck.ntk_checkpoint(
                        model,
                        theta,
                        &data.x,
                        &ntk_opts,
                        drift,
                        c,
                        (rec.epoch, rec.t, rec.loss),
                        step,
                    );
                    if let Err(e) = row.and_then(|row| csv.row(&row).and_then(|_| csv.flush())) {
                        io_error = Some(e);
                        return Control::Stop;
                    }
                }
            }
            if rec.epoch % 64 == 0 || last {
                bar.set_message(format!("loss {:.3e}", rec.loss));
                let _ = metrics.flush();
            }
            bar.inc(1);
            if crate::interrupt::requested() || opts.stop_after_epoch == Some(rec.epoch) {
                return Control::Pause;
            }
            Control::Continue
        });
    bar.finish_and_clear();
    metrics.flush()?;
    if let Some(csv) = ntk_csv.as_mut() {
        csv.flush()?;
    }
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
    let summary = summarize(
        prep,
        &ck,
        status,
        message.clone(),
        outcome.as_ref().map(|o| o.last_epoch),
        &gd_state,
    );
    // GD's discrete trace of sliding: runs of consecutive flips, in flow time.
    let mut sliding = CsvWriter::create(&dir.join("sliding.csv"), &["entry", "start", "end"])?;
    for (k, a, b) in gd_state.tracker.chatter_runs() {
        sliding.row(&[k as f64, a as f64 * gd.lr, b as f64 * gd.lr])?;
    }
    sliding.flush()?;
    match status {
        Status::Completed => {
            params::save(&dir.join("params_final.safetensors"), &specs, &theta, &md)?;
            let stale = dir.join(CHECKPOINT_FILE);
            if stale.exists() {
                std::fs::remove_file(&stale).map_err(|e| Error::io(&stale, e))?;
            }
        }
        Status::Interrupted => {
            ck.theta = theta;
            ck.gd = gd_state;
            write_json(&dir.join(CHECKPOINT_FILE), &ck)?;
        }
        Status::Diverged => {}
    }
    let summary = super::write_summary(prep, dir, summary)?;
    match (status, message) {
        (Status::Diverged, Some(msg)) => Err(Error::Diverged(msg)),
        (Status::Interrupted, Some(msg)) => Err(Error::Interrupted(msg)),
        _ => Ok(summary),
    }
}

pub(super) fn summarize(
    prep: &Prepared,
    ck: &Checkpoint,
    status: Status,
    message: Option<String>,
    last_epoch: Option<usize>,
    gd_state: &GdState,
) -> RunSummary {
    let (model, data, cfg) = (&prep.model, &prep.data, &prep.config);
    let (n, m, p) = (data.n(), data.m(), model.p());
    let c = cfg.train.loss.c(n, m);
    let (t, l) = (&ck.series_t, &ck.series_loss);
    let half = t.len() / 2;
    let min_lambda = ck
        .bound
        .as_ref()
        .and_then(|tr| tr.checks.iter().map(|c| c.lambda_min).reduce(f64::min));
    RunSummary {
        status,
        message,
        preset: model.preset_name().to_string(),
        activation: model.activation.to_string(),
        activation_class: model.activation.classify().short().into(),
        p,
        n,
        d: data.d(),
        m,
        nm: n * m,
        p_over_nm: p as f64 / (n * m) as f64,
        overparametrized: overparametrized(p, n, m),
        loss: cfg.train.loss.name().into(),
        loss_constant: c,
        lr: cfg.train.lr,
        epochs: cfg.train.epochs,
        last_epoch: last_epoch.unwrap_or(t.len().saturating_sub(1)),
        t_final: t.last().copied().unwrap_or(0.0),
        initial_loss: l.first().copied().unwrap_or(f64::NAN),
        final_loss: l.last().copied().unwrap_or(f64::NAN),
        fitted_rate_tail: fitted_rate(&t[half..], &l[half..]),
        gradient_evaluations: ck.gradient_evaluations.max(t.len() as u64),
        seconds: ck.seconds,
        kinks: gd_state.tracker.summary(),
        ntk_initial: ck.ntk_first.clone(),
        ntk_final: ck.ntk_last.clone(),
        certified_rate: min_lambda.map(|lm| 4.0 * c * lm),
        bound_checks: ck.bound.as_ref().map_or(0, |tr| tr.checks.len()),
        bound_violations: ck
            .bound
            .as_ref()
            .map(|tr| tr.violations())
            .unwrap_or_default(),
        gd_stability_max: ck.max_lambda_max.map(|l| cfg.train.lr * c * l),
        graph_min_abs_eigenvalue: data
            .graph
            .as_ref()
            .filter(|g| g.n <= 5000)
            .map(|g| crate::graph::min_abs_eigenvalue(&g.normalized_adjacency())),
        kernel: (ck.kernel != KernelSummary::default()).then(|| ck.kernel.clone()),
        flow: None,
        timing: Some(RunTiming::of(prep, ck)),
        certification: ck.certification.clone(),
        activation_patterns: ntk::activation_patterns(model, &prep.theta0, &data.x),
        symmetries: Some(ntk::symmetries(model)),
        verdict: None,
    }
}

/// The run's verdict, filled in once every other field of the summary is final.
pub(super) fn with_verdict(mut s: RunSummary) -> RunSummary {
    s.verdict = Some(crate::experiment::verdict(&s));
    s
}
