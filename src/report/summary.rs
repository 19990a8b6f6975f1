//! The numbers the report states, computed once for both renderers ([`super::html`],
//! [`super::markdown`]): a summary line per ablation (how many runs agree with Theorem 3.1, how
//! many violate the bound, how many slid along kinks) and one table row per run, with the cells
//! as plain text (each renderer escapes them for its own format) and a flag for the rows a
//! reader must look at: a verdict that is not consistent with the theorem, or a bound violation.

use crate::experiment::{AblationRecord, ReproduceIndex, RunRecord};
use crate::run::Status;

use super::plots::fmt_g;

/// Column headers of the run table, in order; the verdict line is the last column.
pub const COLUMNS: [&str; 15] = [
    "ablation",
    "run",
    "p",
    "nm",
    "p/nm",
    "p ≥ nm",
    "activation class",
    "λ_min(H(0))",
    "λ_min at end",
    "fitted tail rate",
    "certified rate 4c·min λ_min",
    "bound violations",
    "kink crossings / chattering steps",
    "L(end)/L(0)",
    "verdict",
];

/// Counts over one ablation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AblationSummary {
    pub name: String,
    pub runs: usize,
    pub consistent: usize,
    pub overparametrized: usize,
    /// Runs with at least one checkpoint above the bound.
    pub bound_violation_runs: usize,
    /// Checkpoints above the bound, over all runs.
    pub bound_violations: usize,
    /// Runs whose bound was checked at all.
    pub bound_checked_runs: usize,
    /// Runs with chattering (sliding) pre-activations.
    pub sliding_runs: usize,
    pub diverged: usize,
}

impl AblationSummary {
    pub fn of(ab: &AblationRecord) -> Self {
        let mut s = Self {
            name: ab.name.clone(),
            runs: ab.runs.len(),
            ..Self::default()
        };
        for r in &ab.runs {
            let sum = &r.summary;
            s.consistent += r.verdict.consistent as usize;
            s.overparametrized += sum.overparametrized as usize;
            s.bound_checked_runs += (sum.bound_checks > 0) as usize;
            s.bound_violation_runs += !sum.bound_violations.is_empty() as usize;
            s.bound_violations += sum.bound_violations.len();
            s.sliding_runs += r.verdict.sliding as usize;
            s.diverged += (sum.status == Status::Diverged) as usize;
        }
        s
    }

    /// Whether the ablation has a run the reader must look at.
    pub fn flagged(&self) -> bool {
        self.consistent < self.runs || self.bound_violation_runs > 0
    }

    /// One line: "dnn: 4 of 5 runs consistent with Theorem 3.1 (3 with p ≥ nm); bound violated
    /// in 0 of 5 checked runs; sliding/chattering in 2 runs".
    pub fn line(&self) -> String {
        if self.runs == 0 {
            return format!("{}: no finished runs in the index", self.name);
        }
        let plural = |k: usize| if k == 1 { "" } else { "s" };
        let mut s = format!(
            "{}: {} of {} run{} consistent with Theorem 3.1 ({} with p ≥ nm); ",
            self.name,
            self.consistent,
            self.runs,
            plural(self.runs),
            self.overparametrized
        );
        if self.bound_checked_runs == 0 {
            s.push_str("bound not checked (no NTK checkpoints)");
        } else {
            s.push_str(&format!(
                "bound violated in {} of {} checked run{}",
                self.bound_violation_runs,
                self.bound_checked_runs,
                plural(self.bound_checked_runs)
            ));
            if self.bound_violations > 0 {
                s.push_str(&format!(
                    " ({} checkpoint{})",
                    self.bound_violations,
                    plural(self.bound_violations)
                ));
            }
        }
        s.push_str(&format!(
            "; sliding/chattering in {} run{}",
            self.sliding_runs,
            plural(self.sliding_runs)
        ));
        if self.diverged > 0 {
            s.push_str(&format!("; {} diverged", self.diverged));
        }
        s
    }
}

/// Counts over every ablation together.
pub fn overall(index: &ReproduceIndex) -> AblationSummary {
    let mut t = AblationSummary {
        name: "all".into(),
        ..AblationSummary::default()
    };
    for a in index.ablations.iter().map(AblationSummary::of) {
        t.runs += a.runs;
        t.consistent += a.consistent;
        t.overparametrized += a.overparametrized;
        t.bound_violation_runs += a.bound_violation_runs;
        t.bound_violations += a.bound_violations;
        t.bound_checked_runs += a.bound_checked_runs;
        t.sliding_runs += a.sliding_runs;
        t.diverged += a.diverged;
    }
    t
}

/// One row of the run table.
#[derive(Clone, Debug)]
pub struct RunRow {
    /// Plain-text cells, one per entry of [`COLUMNS`].
    pub cells: Vec<String>,
    /// Not consistent with the theorem, or the bound was violated.
    pub flagged: bool,
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "—".to_string(), sci)
}

fn sci(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3e}")
    } else {
        fmt_g(v, 3)
    }
}

/// The table row of run `r` of ablation `ab`.
pub fn run_row(ab: &AblationRecord, r: &RunRecord) -> RunRow {
    let s = &r.summary;
    let violated = !s.bound_violations.is_empty();
    let bound = if s.bound_checks == 0 {
        "not checked".to_string()
    } else {
        format!("{} of {}", s.bound_violations.len(), s.bound_checks)
    };
    let ratio = s.final_loss / s.initial_loss;
    let cells = vec![
        ab.name.clone(),
        r.label.clone(),
        s.p.to_string(),
        s.nm.to_string(),
        fmt_g(s.p_over_nm, 3),
        if s.overparametrized { "yes" } else { "no" }.to_string(),
        s.activation_class.clone(),
        opt(s.ntk_initial.as_ref().map(|n| n.lambda_min)),
        opt(s.ntk_final.as_ref().map(|n| n.lambda_min)),
        opt(s.fitted_rate_tail),
        opt(s.certified_rate),
        bound,
        format!(
            "{} / {}",
            s.kinks.total_crossings, s.kinks.steps_with_chattering
        ),
        sci(ratio),
        r.verdict.line.clone(),
    ];
    debug_assert_eq!(cells.len(), COLUMNS.len());
    RunRow {
        cells,
        flagged: !r.verdict.consistent || violated,
    }
}

/// Every run's row, ablation by ablation.
pub fn run_rows(index: &ReproduceIndex) -> Vec<RunRow> {
    index.all_runs().map(|(a, r)| run_row(a, r)).collect()
}

/// "Scale quick · 1 seed per value · 16 runs in 3 ablations" (+ the shard of a partial index).
pub fn scale_line(index: &ReproduceIndex) -> String {
    let runs: usize = index.ablations.iter().map(|a| a.runs.len()).sum();
    let mut s = format!(
        "Scale {} · {} seed{} per swept value · {} run{} in {} ablation{}",
        index.scale.name(),
        index.seeds,
        if index.seeds == 1 { "" } else { "s" },
        runs,
        if runs == 1 { "" } else { "s" },
        index.ablations.len(),
        if index.ablations.len() == 1 { "" } else { "s" },
    );
    if let Some(sh) = index.shard {
        s.push_str(&format!(
            " · shard {}/{} only (merge the shards for the full picture)",
            sh.index, sh.count
        ));
    }
    s
}

/// The paragraphs of "How to read this" (plain text; THEORY.md's notation).
pub const HOW_TO_READ: [(&str, &str); 4] = [
    (
        "λ_min",
        "λ_min is the least eigenvalue of the neural tangent kernel H = J Jᵀ, an nm × nm matrix (J is \
         the Jacobian of the n·m stacked outputs with respect to the p parameters). Under gradient flow \
         dL/dt ≤ −4c·λ_min(H(t))·L, so while λ_min stays positive the loss falls at least exponentially: \
         linear convergence, a straight line on the log-scale loss plots.",
    ),
    (
        "p ≥ nm",
        "H has rank at most min(nm, p). With fewer parameters than outputs (p < nm) λ_min = 0 exactly \
         and the theorem says nothing: such runs typically plateau. Theorem 3.1 states that with p ≥ nm, \
         a covered activation (continuous, piecewise polynomial, finitely many zeros, e.g. leaky ReLU) \
         and absolutely continuous inputs and initialisation, λ_min(H(t)) > 0 for all t almost surely. \
         The threshold plots show λ_min(H(0)) against p/nm with the line p = nm.",
    ),
    (
        "The bound",
        "Integrating gives L(t) ≤ L(0)·exp(−4c∫₀ᵗ λ_min(H(s)) ds) (c = 1/(nm) for mse, 1/2 for \
         half-sse), evaluated at the NTK checkpoints with the trapezoid rule. A bound violation is a \
         checkpoint where the loss lies above it. The certified rate is 4c·min λ_min over the \
         checkpoints; the fitted tail rate is the slope r of ln L ≈ a − r·t over the last half of the \
         run. Training is gradient descent, a small-step approximation of the flow.",
    ),
    (
        "Kinks and sliding",
        "With a piecewise activation the flow's vector field has kinks where a pre-activation crosses a \
         breakpoint. The paper's Lemma 2.1 assumes the trajectory crosses these surfaces and moves on; \
         it can instead slide along one (a Filippov sliding mode), which gradient descent shows as \
         chattering: a pre-activation flipping sign back and forth on consecutive steps. \"Kink \
         crossings\" counts sign changes, \"chattering steps\" the steps with at least one chattering \
         pre-activation. Runs that chatter are outside the lemma's picture; whether the bound survives \
         there is what the table reports.",
    ),
];
