//! The λ_min figure: λ_min(H(t)) at the NTK checkpoints against t, one curve per run, with
//! non-positive values clamped to a floor and marked (a log axis cannot show them).

use super::common::{columns, lambda_floor, mark_floor, short_name, value_legend, ValueColours};
use super::RunInput;
use crate::experiment::AblationRecord;
use crate::report::plots::figure::{Figure, Mark, Series, Style};
use crate::report::plots::geometry::P;

/// λ_min(H(t)) against t, one curve per run, non-positive values clamped to a floor and marked.
pub fn lambda_min_figure(
    ab: &AblationRecord,
    runs: &[RunInput],
    warnings: &mut Vec<String>,
) -> Figure {
    let name = short_name(ab);
    let mut fig = Figure::new(
        &format!("{name}: least NTK eigenvalue λ_min(H(t)) along training"),
        "t = η · epoch",
        "λ_min(H(t)) (log scale)",
        false,
        true,
    );
    let curves: Vec<(&RunInput, Vec<P>)> = runs
        .iter()
        .filter_map(|r| columns(r.ntk, "t", "lambda_min", "λ_min", warnings).map(|c| (r, c)))
        .collect();
    let all: Vec<f64> = curves
        .iter()
        .flat_map(|(_, c)| c.iter().map(|p| p.1))
        .collect();
    let lmax = runs
        .iter()
        .filter_map(|r| r.ntk.and_then(|t| t.column("lambda_max").ok()))
        .flatten()
        .filter(|v| v.is_finite())
        .fold(f64::NEG_INFINITY, f64::max);
    let floor = lambda_floor(&all, lmax);
    let mut colours = ValueColours::new(runs);
    let mut clamped_any = false;
    for (r, c) in &curves {
        let color = colours.color(r.record.value);
        let mut clamped = Vec::new();
        let pts: Vec<P> = c
            .iter()
            .map(|&(t, l)| {
                if l.is_finite() && l <= 0.0 {
                    clamped.push((t, floor));
                    (t, floor)
                } else {
                    (t, l)
                }
            })
            .collect();
        let legend = colours.legend_once(r.record.value, || value_legend(ab, r.record));
        fig.series.push(Series::new(
            legend,
            color,
            Style::LineMarks(Mark::Circle),
            pts,
        ));
        if !clamped.is_empty() {
            clamped_any = true;
            fig.series
                .push(Series::new(None, color, Style::Marks(Mark::Cross), clamped));
        }
    }
    if clamped_any {
        mark_floor(&mut fig, floor);
    }
    fig
}
