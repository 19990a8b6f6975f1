//! What a run reports: `summary.json` ([`RunSummary`] with its parts — timing, kernel view,
//! flow events, certification tally), how a run ended ([`Status`]), the CSV headers of
//! metrics.csv and ntk.csv, and [`summarize`], which fills a summary from the run's state.

use super::state::Checkpoint;
use super::Prepared;
use crate::flow::{Counts, EventSummary};
use crate::kinks::KinkSummary;
use crate::ntk::{self, NtkSummary};
use crate::theory::{fitted_rate, overparametrized, BoundCheck};
use crate::train::GdState;
use serde::{Deserialize, Serialize};

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Completed,
    Diverged,
    /// Stopped by Ctrl-C/SIGTERM at an epoch boundary (GD) or after an accepted step (flow);
    /// resumable from `checkpoint.json` when the run wrote one.
    Interrupted,
}

/// `summary.json`.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct RunSummary {
    /// "gd" or "flow": what integrated the run (records written before this field: "gd").
    #[serde(default = "gd_solver")]
    pub solver: String,
    pub status: Status,
    pub message: Option<String>,
    pub preset: String,
    pub activation: String,
    pub activation_class: String,
    pub p: usize,
    pub n: usize,
    pub d: usize,
    pub m: usize,
    pub nm: usize,
    pub p_over_nm: f64,
    pub overparametrized: bool,
    pub loss: String,
    /// c in L = c‖e‖².
    pub loss_constant: f64,
    pub lr: f64,
    pub epochs: usize,
    pub last_epoch: usize,
    pub t_final: f64,
    pub initial_loss: f64,
    pub final_loss: f64,
    /// Least-squares rate r of ln L ≈ a − r t over the last half of the run.
    pub fitted_rate_tail: Option<f64>,
    pub gradient_evaluations: u64,
    pub seconds: f64,
    pub kinks: KinkSummary,
    pub ntk_initial: Option<NtkSummary>,
    pub ntk_final: Option<NtkSummary>,
    /// 4c·min λ_min over the checkpoints: the certified exponential rate.
    pub certified_rate: Option<f64>,
    pub bound_checks: usize,
    pub bound_violations: Vec<BoundCheck>,
    /// max over checkpoints of η·c·λ_max(H): GD on L = c‖e‖² is stable only below 1 (the loss
    /// Hessian's Gauss–Newton part has top eigenvalue 2c·λ_max), and tracks the flow well only
    /// far below it.
    #[serde(default)]
    pub gd_stability_max: Option<f64>,
    /// Graph presets: the smallest |eigenvalue| of Â (≤ 5,000 nodes), a ceiling on how
    /// non-singular the NTK can be.
    #[serde(default)]
    pub graph_min_abs_eigenvalue: Option<f64>,
    /// The linearised prediction and the NTK's drift (when the dense NTK is small enough).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<KernelSummary>,
    /// solver = "flow" only: the solve's events, counts and the comparison with GD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<FlowRunSummary>,
    /// Where the run's wall-clock time went, and the training's floating-point work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timing: Option<RunTiming>,
    /// Certified λ_min over the NTK checkpoints.
    #[serde(default)]
    pub certification: CertificationTally,
    /// Per activation layer at θ(0): distinct piece patterns across the samples and the units
    /// that keep one piece on every sample (such a layer acts linearly on the data).
    #[serde(default)]
    pub activation_patterns: Vec<crate::ntk::ActivationPatterns>,
    /// Continuous symmetries of the network and the bound rank J ≤ p − #symmetries.
    #[serde(default)]
    pub symmetries: Option<crate::ntk::Symmetries>,
    /// What the run proves (`verdict.kind`, `verdict.line`).
    #[serde(default)]
    pub verdict: Option<crate::experiment::Verdict>,
}

fn gd_solver() -> String {
    "gd".into()
}

/// Where a run's wall-clock time went (`summary.json` → `timing`). The three parts add up to
/// `seconds`; a resumed run sums its sessions.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct RunTiming {
    /// The precision θ was trained in ("f64" or "f32").
    pub precision: String,
    /// Training: the GD epochs or the flow solve, with metrics, kink tracking and (flow with
    /// `compare_gd`) the GD reference — everything but the two parts below.
    pub seconds_training: f64,
    /// The NTK checkpoints (λ_min, λ_max, bound, drift), `ntk_checkpoints` of them.
    pub seconds_ntk: f64,
    pub ntk_checkpoints: usize,
    /// Forming H(0) once for the linearised prediction and the NTK drift (small nm only).
    pub seconds_kernel_view: f64,
    /// The training's floating-point work by issue 7's convention: 6·n·p per gradient
    /// evaluation (forward and two backward products, 2 flops per multiply-add).
    pub training_work_flop: f64,
    /// Cores the run had: 1 when `reproduce` packed it with others one per core, else all of
    /// them (0 in records written before this field: read as all).
    #[serde(default)]
    pub cores: usize,
    /// Threads of the rayon pool the run trained in (`RAYON_NUM_THREADS`, default: every core).
    /// The engine cuts the samples into two parts per thread ([`crate::engine::Parts`]), which
    /// fixes the order of its sums: an engine run is bitwise reproducible for a given thread
    /// count. A resumed run records its last session's. 0 in records written before this field.
    #[serde(default)]
    pub threads: usize,
}

impl RunTiming {
    pub(crate) fn of(prep: &Prepared, ck: &Checkpoint) -> Self {
        let evaluations = ck.gradient_evaluations.max(ck.series_t.len() as u64);
        let other = ck.ntk_seconds + ck.kernel_view_seconds;
        Self {
            precision: prep.config.train.precision.name().to_string(),
            seconds_training: (ck.seconds - other).max(0.0),
            seconds_ntk: ck.ntk_seconds,
            ntk_checkpoints: ck.ntk_checkpoints,
            seconds_kernel_view: ck.kernel_view_seconds,
            training_work_flop: 6.0 * (prep.data.n() * prep.model.p()) as f64 * evaluations as f64,
            cores: match crate::batch::par() {
                faer::Par::Seq => 1,
                faer::Par::Rayon(n) => n.get(),
            },
            threads: rayon::current_num_threads(),
        }
    }
}

/// metrics.csv of a GD run: one row per logged epoch.
pub const METRICS_HEADER: [&str; 7] = [
    "epoch",
    "t",
    "loss",
    "grad_norm",
    "kink_crossings",
    "chattering",
    "loss_linearised",
];
/// ntk.csv (both solvers): one row per NTK checkpoint.
pub const NTK_HEADER: [&str; 14] = [
    "epoch",
    "t",
    "loss",
    "lambda_min",
    "lambda_max",
    "condition",
    "lambda_min_accuracy",
    "integral_lambda_min",
    "bound",
    "bound_holds",
    "gd_stability",
    "ntk_drift",
    "rank",
    "lambda_min_lower",
];

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
    /// max over the flow's NTK checkpoints of η·c·λ_max(H): GD at step η is stable along this
    /// trajectory only below 1, and tracks it closely only far below.
    #[serde(default)]
    pub stability_max: Option<f64>,
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
    /// Checkpoints at a sliding point of the flow, where H is the Filippov kernel J_eff J_effᵀ
    /// (held entries at their effective slopes).
    #[serde(default)]
    pub filippov: usize,
}

impl CertificationTally {
    pub(super) fn observe(&mut self, t: f64, s: &NtkSummary) {
        self.checkpoints += 1;
        self.filippov += s.sliding_entries.is_some() as usize;
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

/// The summary of a run from its state `ck` (GD fields; a flow run overwrites its own).
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
        solver: cfg.train.solver.name().into(),
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
