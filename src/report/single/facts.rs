//! What a single run's report states in words, computed once from `summary.json` for both
//! renderers: the key numbers grouped in sections ([`facts`]) and the one-line verdict
//! ([`RunVerdict`]) — did the loss stay under the certified bound L(0)·exp(−4c∫λ_min) at every
//! NTK checkpoint, and did the trajectory slide along kinks (pinned pre-activations in a flow run,
//! chattering in a GD run), the case the proof does not cover.

use crate::experiment::verdict;
use crate::report::plots::fmt_g;
use crate::run::{RunSummary, Status};

/// One group of key numbers: a heading and (label, value) rows, plain text.
#[derive(Clone, Debug, PartialEq)]
pub struct FactGroup {
    pub heading: &'static str,
    pub rows: Vec<(String, String)>,
}

fn sci(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3e}")
    } else {
        fmt_g(v, 3)
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "—".to_string(), sci)
}

fn row(label: &str, value: impl Into<String>) -> (String, String) {
    (label.to_string(), value.into())
}

fn status_name(s: Status) -> &'static str {
    match s {
        Status::Completed => "completed",
        Status::Diverged => "diverged",
        Status::Interrupted => "interrupted",
    }
}

/// The key numbers of the run, section by section (sections that do not apply are left out).
pub fn facts(s: &RunSummary) -> Vec<FactGroup> {
    let mut out = Vec::new();
    let solver = if s.flow.is_some() {
        "gradient flow (kink-aware Dormand–Prince)"
    } else {
        "gradient descent"
    };
    let mut run = vec![
        row("status", status_name(s.status)),
        row("solver", solver),
        row(
            "model",
            format!("{} (activation {})", s.preset, s.activation),
        ),
        row("activation class", s.activation_class.clone()),
        row("p (parameters)", s.p.to_string()),
        row(
            "nm (samples × outputs)",
            format!("{} = {} × {}", s.nm, s.n, s.m),
        ),
        row(
            "p/nm",
            format!(
                "{} ({})",
                fmt_g(s.p_over_nm, 4),
                if s.overparametrized {
                    "p ≥ nm: over-parametrised"
                } else {
                    "p < nm: the theorem is silent"
                }
            ),
        ),
        row(
            "loss",
            format!("{}: L = c‖e‖², c = {}", s.loss, sci(s.loss_constant)),
        ),
        row(
            "L(0) → L(end)",
            format!(
                "{} → {} at t = {}",
                sci(s.initial_loss),
                sci(s.final_loss),
                fmt_g(s.t_final, 6)
            ),
        ),
        row(
            "fitted tail rate (ln L ≈ a − r t, last half)",
            opt(s.fitted_rate_tail),
        ),
        row("wall time", format!("{:.2} s", s.seconds)),
    ];
    if s.flow.is_none() {
        run.insert(
            2,
            row("step η × epochs", format!("{} × {}", s.lr, s.last_epoch)),
        );
    }
    if let Some(m) = &s.message {
        run.push(row("message", m.clone()));
    }
    out.push(FactGroup {
        heading: "Run",
        rows: run,
    });

    let mut ntk = vec![
        row(
            "λ_min(H(0))",
            opt(s.ntk_initial.as_ref().map(|n| n.lambda_min)),
        ),
        row(
            "λ_min(H) at the last checkpoint",
            opt(s.ntk_final.as_ref().map(|n| n.lambda_min)),
        ),
        row(
            "λ_max(H(0))",
            opt(s.ntk_initial.as_ref().map(|n| n.lambda_max)),
        ),
        row("certified rate 4c·min λ_min", opt(s.certified_rate)),
    ];
    if let Some(k) = s.ntk_final.as_ref().and_then(|n| n.sliding_entries) {
        ntk.insert(
            2,
            row(
                "kernel at the last checkpoint",
                format!(
                    "Filippov: {k} pre-activations slide along their kinks, each at its \
                     effective slope"
                ),
            ),
        );
    }
    ntk.push(row(
        "bound violations",
        if s.bound_checks == 0 {
            "not checked (no NTK checkpoints)".to_string()
        } else if let Some(first) = s.bound_violations.first() {
            format!(
                "{} of {} checkpoints (first at t = {})",
                s.bound_violations.len(),
                s.bound_checks,
                fmt_g(first.t, 6)
            )
        } else {
            format!("0 of {} checkpoints", s.bound_checks)
        },
    ));
    if let Some(g) = s.gd_stability_max {
        ntk.push(row(
            "GD stability max η·c·λ_max (< 1 to track the flow)",
            sci(g),
        ));
    }
    out.push(FactGroup {
        heading: "NTK and the bound",
        rows: ntk,
    });

    if let Some(f) = &s.flow {
        let e = &f.events;
        out.push(FactGroup {
            heading: "Kinks along the flow",
            rows: vec![
                row("pre-activations tracked", e.tracked.to_string()),
                row("kink crossings", e.crossings.to_string()),
                row("slides (sliding intervals started)", e.slides.to_string()),
                row("releases from sliding", e.releases.to_string()),
                row("entries that slid", e.entries_slid.to_string()),
                row("max pinned at once", e.max_pinned.to_string()),
                row("longest slide", fmt_g(e.longest_slide, 4)),
                row(
                    "total sliding time (Σ over entries)",
                    fmt_g(e.sliding_time, 4),
                ),
                row("touches", e.touches.to_string()),
            ],
        });
        out.push(FactGroup {
            heading: "Flow solver",
            rows: vec![
                row("t_end", fmt_g(f.t_end, 6)),
                row("rtol / atol", format!("{:e} / {:e}", f.rtol, f.atol)),
                row("kink-aware", if f.kink_aware { "yes" } else { "no" }),
                row(
                    "steps accepted / rejected",
                    format!("{} / {}", f.steps_accepted, f.steps_rejected),
                ),
                row("gradient evaluations", f.counts.gradients.to_string()),
                row(
                    "gradient-equivalents of work",
                    format!("{:.0}", f.gradient_equivalents),
                ),
                row(
                    "forward / one-sample passes",
                    format!("{} / {}", f.counts.forwards, f.counts.sample_passes),
                ),
            ],
        });
        if let Some(g) = &f.gd_comparison {
            out.push(FactGroup {
                heading: "GD against the flow",
                rows: vec![
                    row("GD step η × epochs", format!("{} × {}", g.lr, g.epochs)),
                    row("max ‖θ_GD − θ_GF‖/‖θ_GF‖", sci(g.max_theta_gap)),
                    row("final ‖θ_GD − θ_GF‖/‖θ_GF‖", sci(g.final_theta_gap)),
                    row("max |L_GD − L_GF|/L_GF", sci(g.max_relative_loss_gap)),
                    row("final GD loss", sci(g.final_loss_gd)),
                ],
            });
        }
    } else {
        let k = &s.kinks;
        out.push(FactGroup {
            heading: "Kinks along GD",
            rows: vec![
                row("pre-activations tracked", k.tracked.to_string()),
                row("kink crossings", k.total_crossings.to_string()),
                row("pre-activations that crossed", k.units_crossed.to_string()),
                row("steps with chattering", k.steps_with_chattering.to_string()),
                row("longest chatter (steps)", k.longest_chatter.to_string()),
                row("most flips of one pre-activation", k.max_flips.to_string()),
                row("gradient evaluations", s.gradient_evaluations.to_string()),
            ],
        });
    }
    if let Some(k) = &s.kernel {
        out.push(FactGroup {
            heading: "Kernel regime",
            rows: vec![
                row(
                    "linearised loss L_lin at the end",
                    opt(k.final_loss_linearised),
                ),
                row(
                    "max |L − L_lin|/L (linearised gap)",
                    opt(k.max_relative_gap_linearised),
                ),
                row(
                    "NTK drift ‖H(t) − H(0)‖_F/‖H(0)‖_F at the end",
                    opt(k.ntk_drift_final),
                ),
                row("max NTK drift", opt(k.ntk_drift_max)),
            ],
        });
    }
    out
}

/// The run's verdict: the bound along the trajectory, and sliding along kinks.
#[derive(Clone, Debug, PartialEq)]
pub struct RunVerdict {
    /// Every checkpoint satisfied the bound (`None`: not checked).
    pub bound_held: Option<bool>,
    /// The trajectory slid along kinks (flow: a sliding interval; GD: chattering).
    pub slid: bool,
    /// The one-line verdict.
    pub line: String,
    /// The reproduce report's verdict on Theorem 3.1 for this run (p vs nm, λ_min, convergence).
    pub theorem: String,
    pub consistent: bool,
}

impl RunVerdict {
    pub fn of(s: &RunSummary) -> Self {
        let bound_held = (s.bound_checks > 0).then_some(s.bound_violations.is_empty());
        let bound = match bound_held {
            None => "the bound was not checked (no NTK checkpoints)".to_string(),
            Some(true) => format!(
                "the bound L(t) ≤ L(0)·exp(−4c∫λ_min) held at all {} checkpoints along the trajectory",
                s.bound_checks
            ),
            Some(false) => format!(
                "the bound L(t) ≤ L(0)·exp(−4c∫λ_min) was VIOLATED at {} of {} checkpoints (first at t = {})",
                s.bound_violations.len(),
                s.bound_checks,
                fmt_g(s.bound_violations[0].t, 6)
            ),
        };
        let (slid, kinks) = match &s.flow {
            Some(f) if f.events.slides > 0 => (
                true,
                format!(
                    "the trajectory SLID along kinks: {} sliding intervals on {} pre-activations (up to {} \
                     pinned at once, longest {}) — the proof's blind spot (Lemma 2.1 assumes transversal crossings)",
                    f.events.slides,
                    f.events.entries_slid,
                    f.events.max_pinned,
                    fmt_g(f.events.longest_slide, 4)
                ),
            ),
            Some(f) => (
                false,
                format!(
                    "no sliding: all {} kink crossings were transversal",
                    f.events.crossings
                ),
            ),
            None if s.kinks.steps_with_chattering > 0 => (
                true,
                format!(
                    "GD CHATTERED at kinks on {} steps (longest run {} steps), its image of sliding — the \
                     proof's blind spot (Lemma 2.1 assumes transversal crossings)",
                    s.kinks.steps_with_chattering, s.kinks.longest_chatter
                ),
            ),
            None => (
                false,
                format!(
                    "no chattering at kinks ({} crossings)",
                    s.kinks.total_crossings
                ),
            ),
        };
        let mut line = format!("{}; {}.", capitalise(&bound), kinks);
        if s.status != Status::Completed {
            line = format!("Run {}: {line}", status_name(s.status));
        }
        let v = verdict(s);
        Self {
            bound_held,
            slid,
            line,
            theorem: v.line,
            consistent: v.consistent,
        }
    }

    /// Whether the reader must look (bound violated, or not consistent with the theorem).
    pub fn flagged(&self) -> bool {
        self.bound_held == Some(false) || !self.consistent
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::summary;

    #[test]
    fn verdict_states_bound_and_chattering() {
        let ok = RunVerdict::of(&summary(40, 20, 0.3, 0, 0, 1e-3));
        assert_eq!(ok.bound_held, Some(true));
        assert!(!ok.slid && !ok.flagged());
        assert!(
            ok.line
                .starts_with("The bound L(t) ≤ L(0)·exp(−4c∫λ_min) held at all 3 checkpoints"),
            "{}",
            ok.line
        );
        assert!(
            ok.line.contains("no chattering at kinks (0 crossings)"),
            "{}",
            ok.line
        );
        let bad = RunVerdict::of(&summary(40, 20, 0.3, 2, 6, 0.5));
        assert_eq!(bad.bound_held, Some(false));
        assert!(bad.slid && bad.flagged());
        assert!(
            bad.line
                .contains("VIOLATED at 2 of 3 checkpoints (first at t = 0.5)"),
            "{}",
            bad.line
        );
        assert!(
            bad.line.contains("CHATTERED at kinks on 6 steps"),
            "{}",
            bad.line
        );
    }

    #[test]
    fn gd_facts_have_no_flow_sections() {
        let f = facts(&summary(40, 20, 0.3, 0, 0, 1e-3));
        let headings: Vec<_> = f.iter().map(|g| g.heading).collect();
        assert_eq!(headings, ["Run", "NTK and the bound", "Kinks along GD"]);
        let p = f[0].rows.iter().find(|r| r.0 == "p/nm").unwrap();
        assert_eq!(p.1, "2 (p ≥ nm: over-parametrised)");
    }
}
