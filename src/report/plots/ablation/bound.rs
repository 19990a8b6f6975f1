//! The bound figure: each run's loss (solid) against its certified bound L(0)·exp(−4c∫λ_min)
//! (dashed, same colour), with the checkpoints where the loss rose above the bound marked.

use super::common::{columns, short_name, value_legend, ValueColours};
use super::RunInput;
use crate::experiment::AblationRecord;
use crate::report::plots::figure::{Figure, Mark, Series, Style, BLACK_RGB};

/// Loss (solid, from metrics.csv) and the bound L(0)·exp(−4c∫λ_min) (dashed, from ntk.csv)
/// against t; checkpoints where the bound fails are marked.
pub fn bound_figure(ab: &AblationRecord, runs: &[RunInput], warnings: &mut Vec<String>) -> Figure {
    let name = short_name(ab);
    let mut fig = Figure::new(
        &format!("{name}: loss (solid) vs bound L(0)·exp(−4c∫λ_min) (dashed)"),
        "t = η · epoch",
        "loss (log scale)",
        false,
        true,
    );
    let mut colours = ValueColours::new(runs);
    let mut violations = Vec::new();
    let (mut loss_lo, mut hi, mut bound_lo) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY);
    for r in runs {
        let color = colours.color(r.record.value);
        let loss = columns(r.metrics, "t", "loss", "bound", warnings).unwrap_or_default();
        let bound = columns(r.ntk, "t", "bound", "bound", warnings).unwrap_or_default();
        for p in loss.iter().filter(|p| p.1.is_finite() && p.1 > 0.0) {
            loss_lo = loss_lo.min(p.1);
            hi = hi.max(p.1);
        }
        for p in bound.iter().filter(|p| p.1.is_finite() && p.1 > 0.0) {
            bound_lo = bound_lo.min(p.1);
            hi = hi.max(p.1);
        }
        if let Some(t) = r.ntk {
            if let (Ok(ts), Ok(ls), Ok(ok)) =
                (t.column("t"), t.column("loss"), t.column("bound_holds"))
            {
                violations.extend(
                    ts.iter()
                        .zip(&ls)
                        .zip(&ok)
                        .filter(|(_, h)| **h == 0.0)
                        .map(|((t, l), _)| (*t, *l)),
                );
            }
        }
        let legend = colours.legend_once(r.record.value, || value_legend(ab, r.record));
        fig.series
            .push(Series::new(legend, color, Style::Line, loss));
        fig.series
            .push(Series::new(None, color, Style::Dashed, bound));
    }
    // A bound that underflows far below every loss would squash the plot: show at most six
    // decades under the lowest loss.
    if loss_lo.is_finite() && hi.is_finite() {
        let lo = loss_lo.min(bound_lo.max(loss_lo * 1e-6));
        fig.y_range = Some((lo, hi));
    }
    fig.series
        .push(Series::key("loss L(t)", BLACK_RGB, Style::Line));
    fig.series
        .push(Series::key("bound", BLACK_RGB, Style::Dashed));
    if !violations.is_empty() {
        fig.series.push(Series::new(
            Some("bound violated".into()),
            BLACK_RGB,
            Style::Marks(Mark::Cross),
            violations,
        ));
    }
    fig
}
