//! Verdicts: what a run proves about Theorem 3.1, led by its kind.
//!
//! - `confirmed`: p ≥ nm, λ_min(H) > 0 *proven* (a floating-point certificate, see
//!   `gradflow_core::ntk::certify`) at every NTK checkpoint, and the bound
//!   L(t) ≤ L(0)·exp(−4c∫λ_min) held at each;
//! - `counterexample`: p ≥ nm, yet J(θ(0)) is exactly rank-deficient (a gap ≥ 10⁸ in its singular
//!   values down to rounding level) and stays so under random relative perturbations of θ: the
//!   bad initialisations form an open set, against Lemma 3.2's "almost surely";
//! - `under-parametrised`: p < nm, so rank J ≤ p < nm and the theorem is silent;
//! - `undecided`: neither proven nor contradicted, with the reason;
//! - `diverged`: GD blew up; `gd-off-flow`: the bound failed while GD ran past its stability
//!   limit (η·c·λ_max ≥ 1), where GD does not track the flow the theorem is about.
//!
//! The one-line text leads with the kind and stays short; sliding along kinks (outside Lemma
//! 2.1's transversal crossings) is appended when seen.

use crate::run::{RunSummary, Status};
use crate::theory::overparametrized;
use serde::{Deserialize, Serialize};

/// What a run proves (`verdict.kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerdictKind {
    Confirmed,
    Counterexample,
    UnderParametrised,
    Undecided,
    Diverged,
    GdOffFlow,
}

impl VerdictKind {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Confirmed => "confirmed",
            Self::Counterexample => "counterexample",
            Self::UnderParametrised => "under-parametrised",
            Self::Undecided => "undecided",
            Self::Diverged => "diverged",
            Self::GdOffFlow => "gd-off-flow",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Verdict {
    pub kind: VerdictKind,
    /// p ≥ nm.
    pub overparametrized: bool,
    /// λ_min(H(0)) > 0 proven by a certificate (None: no NTK at the start).
    pub lambda_min_positive: Option<bool>,
    /// Every checkpoint satisfied the bound.
    pub bound_holds: Option<bool>,
    /// Loss fell by at least two orders of magnitude with a positive fitted tail rate.
    pub converging: bool,
    /// Pre-activations chattered across a kink (GD) or slid along one (flow): a sliding mode.
    pub sliding: bool,
    /// The run does not contradict the theorem (every kind but `counterexample` and `diverged`).
    pub consistent: bool,
    /// Why the kind is `undecided` (None otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub line: String,
}

/// λ_min(H) counts as positive when it exceeds both its accuracy and 1e-12·λ_max (the
/// eigensolver's view, kept for runs without a Jacobian analysis).
pub fn lambda_positive(lambda_min: f64, accuracy: f64, lambda_max: f64) -> bool {
    lambda_min > accuracy.max(1e-12 * lambda_max.abs())
}

/// λ_min(H) as text, never a negative number: "0 (rank 415 of 500)" when rank J < nm (an exact
/// deficiency, or p < nm), else λ_min from the SVD of J (or H's eigensolver without one).
pub fn lambda_min_text(n: &crate::ntk::NtkSummary, nm: usize) -> String {
    let j = &n.jacobian;
    match j.jacobian_rank {
        Some(r) if r < nm => format!("0 (rank {r} of {nm})"),
        Some(_) => format!("{:.3e}", j.lambda_min_svd.unwrap_or(n.lambda_min)),
        None if n.lambda_min <= 0.0 => "0 (to rounding)".to_string(),
        None => format!("{:.3e}", n.lambda_min),
    }
}

pub fn verdict(s: &RunSummary) -> Verdict {
    let initial = s.ntk_initial.as_ref();
    let bound_holds = (s.bound_checks > 0).then_some(s.bound_violations.is_empty());
    let drop = s.final_loss / s.initial_loss;
    let converging =
        s.status == Status::Completed && drop <= 1e-2 && s.fitted_rate_tail.unwrap_or(0.0) > 0.0;
    let flow_slides = s.flow.as_ref().map_or(0, |f| f.events.slides);
    let sliding = s.kinks.steps_with_chattering > 0 || flow_slides > 0;
    let tally = &s.certification;
    let over = overparametrized(s.p, s.n, s.m);
    let lambda_min_positive = initial.map(|n| n.jacobian.lambda_min_lower.is_some());
    let p_nm = format!(
        "p/nm = {:.2} {} 1",
        s.p_over_nm,
        if over { "≥" } else { "<" }
    );

    let (kind, reason, what) = if s.status == Status::Diverged {
        (
            VerdictKind::Diverged,
            None,
            "GD diverged (step above its stability limit): no verdict on the flow".to_string(),
        )
    } else if !over {
        (
            VerdictKind::UnderParametrised,
            None,
            "rank J ≤ p < nm, so λ_min(H) = 0 and the theorem is silent".to_string(),
        )
    } else if let Some(n) = initial.filter(|n| n.jacobian.is_exact_deficient()) {
        let j = &n.jacobian;
        let rank = format!(
            "rank J(0) = {} of nm = {} (gap {:.0e})",
            j.jacobian_rank.unwrap_or(0),
            s.nm,
            j.rank_gap.unwrap_or(f64::INFINITY)
        );
        match &j.persistence {
            Some(p) if p.persistent => (
                VerdictKind::Counterexample,
                None,
                format!(
                    "{rank}, persisting under {} random perturbations of θ (relative {:.0e}): H(0) is singular on an open set of initialisations, against Lemma 3.2",
                    p.draws, p.rel
                ),
            ),
            Some(p) => {
                let why = format!(
                    "{rank}, but only {} of {} perturbed draws stay deficient: a measure-zero coincidence, not a counterexample",
                    p.deficient_draws, p.draws
                );
                (VerdictKind::Undecided, Some(why.clone()), why)
            }
            None => {
                let why = format!("{rank}; persistence under perturbation not tested");
                (VerdictKind::Undecided, Some(why.clone()), why)
            }
        }
    } else if let Some(j) = initial
        .map(|n| &n.jacobian)
        .filter(|j| j.jacobian_rank.is_some_and(|r| r < s.nm))
    {
        let why = format!(
            "J(0) has numerical rank {} of nm = {}, but its largest gap σ_r/σ_r+1 = {:.1e} is below the 1e8 that proves an exact deficiency: H(0) is singular or ill-conditioned beyond what f64 can tell",
            j.jacobian_rank.unwrap_or(0),
            s.nm,
            j.rank_gap.unwrap_or(f64::NAN)
        );
        (VerdictKind::Undecided, Some(why.clone()), why)
    } else if bound_holds == Some(false) {
        let first = &s.bound_violations[0];
        let gd = s.gd_stability_max.filter(|g| *g >= 1.0);
        let text = format!(
            "bound violated at {} of {} checkpoints (first at t = {})",
            s.bound_violations.len(),
            s.bound_checks,
            first.t
        );
        match gd {
            Some(g) => (
                VerdictKind::GdOffFlow,
                None,
                format!(
                    "{text}, with GD at η·c·λ_max = {g:.2} ≥ 1: GD does not track the flow there"
                ),
            ),
            None => {
                let why = format!("{text} while GD stayed below its stability limit");
                (VerdictKind::Undecided, Some(why.clone()), why)
            }
        }
    } else if tally.all_certified() {
        (
            VerdictKind::Confirmed,
            None,
            format!(
                "λ_min(H) ≥ {:.2e} proven at all {} checkpoints{}; bound holds; {}",
                tally.min_lambda_min_lower.unwrap_or(0.0),
                tally.checkpoints,
                match tally.filippov {
                    0 => String::new(),
                    k => format!(" ({k} of them sliding: H of the Filippov field)"),
                },
                if converging {
                    format!("loss ×{drop:.1e}")
                } else {
                    format!("loss ×{drop:.1e} (slow rate 4c·λ_min)")
                }
            ),
        )
    } else {
        let why = match &tally.first_uncertified {
            _ if tally.checkpoints == 0 => {
                "no NTK checkpoints, so nothing about λ_min is proven".to_string()
            }
            Some((t, why)) => {
                let svd = initial
                    .and_then(|n| n.jacobian.lambda_min_svd)
                    .map(|l| format!("λ_min(H(0)) ≈ {l:.2e} by the SVD of J, "))
                    .unwrap_or_default();
                format!("{svd}not certified at t = {t}: {why}")
            }
            None => "not every checkpoint certified".to_string(),
        };
        (VerdictKind::Undecided, Some(why.clone()), why)
    };

    let mut line = format!("{}: {p_nm}; {what}", kind.name());
    if let Some(f) = s.flow.as_ref().filter(|_| flow_slides > 0) {
        line.push_str(&format!(
            "; slid along kinks ({} intervals, up to {} pinned)",
            f.events.slides, f.events.max_pinned
        ));
    } else if sliding {
        line.push_str(&format!(
            "; chattered at kinks on {} steps",
            s.kinks.steps_with_chattering
        ));
    }
    Verdict {
        kind,
        overparametrized: over,
        lambda_min_positive,
        bound_holds,
        converging,
        sliding,
        consistent: !matches!(kind, VerdictKind::Counterexample | VerdictKind::Diverged),
        reason,
        line,
    }
}
