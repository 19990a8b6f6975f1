//! One-line verdicts: does a run behave as Theorem 3.1 predicts from p vs nm?
//!
//! Prediction: p ≥ nm (with a covered activation) ⇒ λ_min(H(t)) > 0 along the run, the loss
//! obeys L(t) ≤ L(0)·exp(−4c∫λ_min) and decays linearly (a straight line on a log scale);
//! p < nm ⇒ λ_min(H) = 0 (rank bound) and the theorem is silent — typically a plateau.
//! A verdict states what was seen against that, and says plainly when the bound fails or the
//! trajectory slid along kinks (outside Lemma 2.1's transversal-crossing picture).

use crate::run::{RunSummary, Status};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Verdict {
    /// p ≥ nm.
    pub overparametrized: bool,
    /// λ_min(H(0)) is positive beyond its accuracy bound and relative rounding (1e-12·λ_max).
    pub lambda_min_positive: Option<bool>,
    /// Every checkpoint satisfied the bound.
    pub bound_holds: Option<bool>,
    /// Loss fell by at least two orders of magnitude with a positive fitted tail rate.
    pub converging: bool,
    /// Pre-activations chattered across a kink (GD) or slid along one (flow): a sliding mode.
    pub sliding: bool,
    /// The observation agrees with the theorem's prediction.
    pub consistent: bool,
    pub line: String,
}

/// λ_min(H) counts as positive when it exceeds both its accuracy and 1e-12·λ_max.
pub fn lambda_positive(lambda_min: f64, accuracy: f64, lambda_max: f64) -> bool {
    lambda_min > accuracy.max(1e-12 * lambda_max.abs())
}

pub fn verdict(s: &RunSummary) -> Verdict {
    let lam0 = s
        .ntk_initial
        .as_ref()
        .map(|n| lambda_positive(n.lambda_min, n.lambda_min_accuracy, n.lambda_max));
    let bound_holds = (s.bound_checks > 0).then_some(s.bound_violations.is_empty());
    let drop = s.final_loss / s.initial_loss;
    let converging =
        s.status == Status::Completed && drop <= 1e-2 && s.fitted_rate_tail.unwrap_or(0.0) > 0.0;
    // GD chatters across a kink where the flow slides along it; a flow run counts its slides.
    let flow_slides = s.flow.as_ref().map_or(0, |f| f.events.slides);
    let sliding = s.kinks.steps_with_chattering > 0 || flow_slides > 0;
    let mut parts = Vec::new();
    parts.push(format!(
        "p/nm = {:.2} {} 1",
        s.p_over_nm,
        if s.overparametrized { "≥" } else { "<" }
    ));
    if let Some(n) = &s.ntk_initial {
        parts.push(format!("λ_min(H(0)) = {:.2e}", n.lambda_min));
    }
    parts.push(format!("loss ×{drop:.1e} over t = {}", s.t_final));
    let consistent;
    if s.status == Status::Diverged {
        consistent = false;
        parts.push("GD DIVERGED (step above the stability limit) — no verdict on the flow".into());
    } else if s.overparametrized {
        let ok_lambda = lam0.unwrap_or(true);
        let ok_bound = bound_holds.unwrap_or(true);
        // A GD run past its stability limit does not approximate the flow the theorem is about:
        // a bound violation there is reported, but does not count against the theorem.
        let gd_off_flow = s.gd_stability_max.is_some_and(|g| g >= 1.0);
        consistent = ok_lambda && (ok_bound || gd_off_flow);
        if !ok_lambda {
            parts.push("λ_min(H(0)) is not resolvably positive although p ≥ nm: H is singular to f64 precision (near the threshold, a degenerate graph, or an activation that is affine over the range the pre-activations visit)".into());
        }
        if let Some(g) = s.graph_min_abs_eigenvalue.filter(|g| *g < 1e-3) {
            parts.push(format!(
                "the graph's Â has an eigenvalue of size {g:.1e}: the outputs pass through Â, so the NTK is (nearly) singular whatever p is — a case the theorem's 'almost surely' misses when the graph is built from the data"
            ));
        }
        if !ok_bound {
            parts.push(format!(
                "BOUND VIOLATED at {} of {} checkpoints (first at t = {})",
                s.bound_violations.len(),
                s.bound_checks,
                s.bound_violations[0].t
            ));
            if let Some(g) = s.gd_stability_max.filter(|g| *g >= 1.0) {
                parts.push(format!(
                    "but GD ran at {:.0}% of its stability limit (η·c·λ_max = {g:.2}): GD is not tracking the flow there, so this is no evidence against the theorem",
                    100.0 * g
                ));
            }
        }
        if consistent {
            parts.push(if converging {
                "linear convergence as Theorem 3.1 predicts".into()
            } else {
                "bound holds but the loss fell less than 100× in this time (slow rate 4c·λ_min)"
                    .to_string()
            });
        }
    } else {
        consistent = !lam0.unwrap_or(false);
        parts.push(if consistent {
            "under-parametrised: λ_min(H) = 0 by the rank bound, the theorem is silent".into()
        } else {
            "λ_min(H(0)) > 0 although p < nm — impossible for J Jᵀ: numerical trouble".to_string()
        });
    }
    if let Some(f) = s.flow.as_ref().filter(|_| flow_slides > 0) {
        parts.push(format!(
            "kinks: {} sliding intervals on {} pre-activations (up to {} pinned at once) — sliding, outside Lemma 2.1",
            f.events.slides, f.events.entries_slid, f.events.max_pinned
        ));
    } else if sliding {
        parts.push(format!(
            "kinks: {} pre-activations crossed, chattering on {} steps (longest {}) — sliding, outside Lemma 2.1",
            s.kinks.units_crossed, s.kinks.steps_with_chattering, s.kinks.longest_chatter
        ));
    }
    Verdict {
        overparametrized: s.overparametrized,
        lambda_min_positive: lam0,
        bound_holds,
        converging,
        sliding,
        consistent,
        line: parts.join("; "),
    }
}
