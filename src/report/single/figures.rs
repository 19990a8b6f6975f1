//! The figures of a single run's report ([`RunPlot`]), built from its `metrics.csv` and `ntk.csv`
//! as plain [`Figure`] descriptions (drawn by the shared plotting code in `report::plots`):
//!
//! - the loss against t on a log axis, with the linearised (kernel-regime) prediction and, for a
//!   flow run with `compare_gd`, GD's loss at the same times;
//! - λ_min(H(t)) at the NTK checkpoints (non-positive values clamped to a marked floor, as in the
//!   reproduce report);
//! - the loss against the certified bound L(0)·exp(−4c∫λ_min), violations marked;
//! - the kink diagnostics: for a flow run the pinned (sliding) pre-activations and the crossings
//!   per output interval, for a GD run the crossings and chattering pre-activations per epoch.
//!
//! A missing column is a warning and leaves its series out; a series with no finite value (e.g.
//! `gd_loss` without `compare_gd`, all NaN) is left out silently.

use crate::report::plots::ablation::common::{lambda_floor, mark_floor};
use crate::report::plots::figure::{palette, Figure, Mark, Series, Style, BLACK_RGB};
use crate::report::tables::Table;

/// The figures of a run report, in report order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunPlot {
    Loss,
    LambdaMin,
    Bound,
    Kinks,
}

impl RunPlot {
    pub const ALL: [RunPlot; 4] = [Self::Loss, Self::LambdaMin, Self::Bound, Self::Kinks];

    /// File stem in `plots/`.
    pub fn stem(&self) -> &'static str {
        match self {
            Self::Loss => "loss",
            Self::LambdaMin => "lambda_min",
            Self::Bound => "bound",
            Self::Kinks => "kinks",
        }
    }

    /// Whether the figure needs `ntk.csv`.
    pub fn needs_ntk(&self) -> bool {
        matches!(self, Self::LambdaMin | Self::Bound)
    }

    pub fn caption(&self, flow: bool) -> &'static str {
        match (self, flow) {
            (Self::Loss, _) => {
                "Training loss L(t) (solid) with the linearised prediction L_lin(t) of the kernel \
                 regime (dashed) and, for a flow run compared with GD, GD's loss at t = k·η. Linear \
                 convergence is a straight line on this log scale."
            }
            (Self::LambdaMin, _) => {
                "λ_min(H(t)) at the NTK checkpoints. Values ≤ 0 cannot be shown on a log axis: they \
                 are drawn as × on the dashed floor line."
            }
            (Self::Bound, _) => {
                "Loss (solid) against the certified bound L(0)·exp(−4c∫λ_min) (dashed). The loss \
                 must stay below the bound; × marks a checkpoint where it does not."
            }
            (Self::Kinks, true) => {
                "Kinks along the flow: pre-activations pinned to a kink (sliding, Filippov) at each \
                 output time, and kink crossings per output interval. Sliding is the proof's blind \
                 spot: Lemma 2.1 assumes every kink is crossed transversally."
            }
            (Self::Kinks, false) => {
                "Kinks along GD: kink crossings and chattering pre-activations (a piece change on \
                 consecutive steps, GD's image of sliding) per epoch."
            }
        }
    }
}

/// Column pairs, or a warning naming the file and the columns it has.
fn xy(
    t: &Table,
    x: &str,
    y: &str,
    what: &str,
    warnings: &mut Vec<String>,
) -> Option<Vec<(f64, f64)>> {
    match t.xy(x, y) {
        Ok(v) => Some(v),
        Err(e) => {
            warnings.push(format!("{e} — left out of the {what} plot"));
            None
        }
    }
}

fn any_finite(pts: &[(f64, f64)]) -> bool {
    pts.iter().any(|p| p.1.is_finite())
}

/// Loss, linearised prediction and (flow with compare_gd) GD's loss against t.
pub fn loss_figure(metrics: &Table, warnings: &mut Vec<String>) -> Figure {
    let mut fig = Figure::new(
        "training loss L(t) along the run",
        "t",
        "loss (log scale)",
        false,
        true,
    );
    if let Some(pts) = xy(metrics, "t", "loss", "loss", warnings) {
        fig.series.push(Series::new(
            Some("loss L(t)".into()),
            palette(0),
            Style::Line,
            pts,
        ));
    }
    for (col, legend, color) in [
        ("loss_linearised", "linearised L_lin(t)", palette(1)),
        ("gd_loss", "GD loss (t = k·η)", palette(2)),
    ] {
        if metrics.column_index(col).is_none() {
            if col == "loss_linearised" {
                warnings.push(format!(
                    "{}: no column `{col}` — the linearised prediction is left out of the loss plot",
                    metrics.path.display()
                ));
            }
            continue;
        }
        if let Some(pts) = xy(metrics, "t", col, "loss", warnings).filter(|p| any_finite(p)) {
            fig.series
                .push(Series::new(Some(legend.into()), color, Style::Dashed, pts));
        }
    }
    fig
}

/// λ_min(H(t)) against t, non-positive values on a marked floor.
pub fn lambda_min_figure(ntk: &Table, warnings: &mut Vec<String>) -> Figure {
    let mut fig = Figure::new(
        "least NTK eigenvalue λ_min(H(t)) along the run",
        "t",
        "λ_min(H(t)) (log scale)",
        false,
        true,
    );
    let Some(pts) = xy(ntk, "t", "lambda_min", "λ_min", warnings) else {
        return fig;
    };
    let lmax = ntk
        .column("lambda_max")
        .unwrap_or_default()
        .into_iter()
        .filter(|v| v.is_finite())
        .fold(f64::NEG_INFINITY, f64::max);
    let values: Vec<f64> = pts.iter().map(|p| p.1).collect();
    let floor = lambda_floor(&values, lmax);
    let mut clamped = Vec::new();
    let pts: Vec<(f64, f64)> = pts
        .into_iter()
        .map(|(t, l)| {
            if l.is_finite() && l <= 0.0 {
                clamped.push((t, floor));
                (t, floor)
            } else {
                (t, l)
            }
        })
        .collect();
    fig.series.push(Series::new(
        Some("λ_min(H(t))".into()),
        palette(0),
        Style::LineMarks(Mark::Circle),
        pts,
    ));
    if !clamped.is_empty() {
        fig.series.push(Series::new(
            None,
            palette(0),
            Style::Marks(Mark::Cross),
            clamped,
        ));
        mark_floor(&mut fig, floor);
    }
    fig
}

/// The loss (metrics.csv) against the bound (ntk.csv), violated checkpoints marked.
pub fn bound_figure(metrics: &Table, ntk: &Table, warnings: &mut Vec<String>) -> Figure {
    let mut fig = Figure::new(
        "loss L(t) vs the bound L(0)·exp(−4c∫λ_min)",
        "t",
        "loss (log scale)",
        false,
        true,
    );
    let loss = xy(metrics, "t", "loss", "bound", warnings).unwrap_or_default();
    let bound = xy(ntk, "t", "bound", "bound", warnings).unwrap_or_default();
    let positive = |p: &&(f64, f64)| p.1.is_finite() && p.1 > 0.0;
    let loss_lo = loss
        .iter()
        .filter(positive)
        .map(|p| p.1)
        .fold(f64::INFINITY, f64::min);
    let bound_lo = bound
        .iter()
        .filter(positive)
        .map(|p| p.1)
        .fold(f64::INFINITY, f64::min);
    let hi = loss
        .iter()
        .chain(&bound)
        .filter(positive)
        .map(|p| p.1)
        .fold(f64::NEG_INFINITY, f64::max);
    // A bound that underflows far below the loss would squash the plot (as in the reproduce report).
    if loss_lo.is_finite() && hi.is_finite() {
        fig.y_range = Some((loss_lo.min(bound_lo.max(loss_lo * 1e-6)), hi));
    }
    fig.series.push(Series::new(
        Some("loss L(t)".into()),
        palette(0),
        Style::Line,
        loss,
    ));
    fig.series.push(Series::new(
        Some("bound".into()),
        palette(3),
        Style::Dashed,
        bound,
    ));
    if let (Ok(ts), Ok(ls), Ok(ok)) = (
        ntk.column("t"),
        ntk.column("loss"),
        ntk.column("bound_holds"),
    ) {
        let violations: Vec<(f64, f64)> = ts
            .iter()
            .zip(&ls)
            .zip(&ok)
            .filter(|(_, h)| **h == 0.0)
            .map(|((t, l), _)| (*t, *l))
            .collect();
        if !violations.is_empty() {
            fig.series.push(Series::new(
                Some("bound violated".into()),
                BLACK_RGB,
                Style::Marks(Mark::Cross),
                violations,
            ));
        }
    }
    fig
}

/// Kink diagnostics over t: pinned and crossings (flow), crossings and chattering (GD).
pub fn kinks_figure(metrics: &Table, flow: bool, warnings: &mut Vec<String>) -> Figure {
    let (title, series): (&str, [(&str, &str); 2]) = if flow {
        (
            "kinks along the flow: pinned (sliding) pre-activations and crossings",
            [
                ("pinned", "pinned (sliding) at t"),
                ("kink_crossings", "crossings per interval"),
            ],
        )
    } else {
        (
            "kinks along GD: crossings and chattering per epoch",
            [
                ("kink_crossings", "crossings per epoch"),
                ("chattering", "chattering per epoch"),
            ],
        )
    };
    let mut fig = Figure::new(title, "t", "pre-activations (count)", false, false);
    for (k, (col, legend)) in series.iter().enumerate() {
        if let Some(pts) = xy(metrics, "t", col, "kinks", warnings) {
            // Noisy per-step counts: solid lines (dashes would break up into noise).
            fig.series.push(Series::new(
                Some((*legend).into()),
                palette(k + 3),
                Style::Line,
                pts,
            ));
        }
    }
    fig
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn table(text: &str) -> Table {
        Table::parse(text, Path::new("run/metrics.csv")).unwrap()
    }

    #[test]
    fn all_nan_gd_loss_is_left_out_and_missing_columns_warn() {
        let m = table("epoch,t,loss,loss_linearised,gd_loss\n0,0,1,1,NaN\n1,0.1,0.5,0.6,NaN\n");
        let mut w = Vec::new();
        let f = loss_figure(&m, &mut w);
        let legends: Vec<_> = f.series.iter().filter_map(|s| s.legend.clone()).collect();
        assert_eq!(legends, ["loss L(t)", "linearised L_lin(t)"]);
        assert!(w.is_empty(), "{w:?}");
        let m = table("epoch,t,loss\n0,0,1\n");
        let f = loss_figure(&m, &mut w);
        assert_eq!(f.series.len(), 1);
        assert!(w[0].contains("loss_linearised"), "{w:?}");
        let k = kinks_figure(&m, true, &mut w);
        assert!(k.series.is_empty());
        assert!(w.iter().any(|s| s.contains("`pinned`")), "{w:?}");
    }

    #[test]
    fn non_positive_lambda_is_clamped_and_violations_marked() {
        let ntk = table(
            "t,loss,lambda_min,lambda_max,bound,bound_holds\n0,1,0.1,5,1,1\n1,0.9,0,5,0.8,0\n",
        );
        let m = table("t,loss\n0,1\n0.5,0.95\n1,0.9\n");
        let mut w = Vec::new();
        let f = lambda_min_figure(&ntk, &mut w);
        assert_eq!(f.series[0].points[1], (1.0, 0.01));
        assert_eq!(f.hlines.len(), 1);
        let b = bound_figure(&m, &ntk, &mut w);
        let v = b
            .series
            .iter()
            .find(|s| s.legend.as_deref() == Some("bound violated"));
        assert_eq!(v.unwrap().points, vec![(1.0, 0.9)]);
        assert!(w.is_empty(), "{w:?}");
    }
}
