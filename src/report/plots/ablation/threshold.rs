//! The threshold figure: λ_min(H(0)) against p/nm on log axes with the line p = nm, one marker per
//! run and a grey line through the per-value medians, where Theorem 3.1 predicts the transition.

use super::common::{columns, lambda_floor, mark_floor, short_name, value_legend, ValueColours};
use super::RunInput;
use crate::experiment::AblationRecord;
use crate::report::plots::figure::{Figure, Mark, RefLine, Series, Style};

/// λ_min(H(0)) against p/nm across the sweep, with the threshold p = nm.
pub fn threshold_figure(
    ab: &AblationRecord,
    runs: &[RunInput],
    warnings: &mut Vec<String>,
) -> Figure {
    let name = short_name(ab);
    let mut fig = Figure::new(
        &format!("{name}: λ_min(H(0)) across the over-parametrisation threshold"),
        "p / nm (log scale)",
        "λ_min(H(0)) (log scale)",
        true,
        true,
    );
    fig.vlines.push(RefLine {
        at: 1.0,
        label: "p = nm".into(),
    });
    // λ_min(H(0)) from the summary, else from the first row of ntk.csv.
    let points: Vec<(&RunInput, f64, f64)> = runs
        .iter()
        .filter_map(|r| {
            let s = &r.record.summary;
            let lam = match &s.ntk_initial {
                Some(n) => Some(n.lambda_min),
                None => columns(r.ntk, "t", "lambda_min", "threshold", warnings)
                    .and_then(|c| c.first().map(|p| p.1)),
            }?;
            Some((r, s.p_over_nm, lam))
        })
        .collect();
    let lams: Vec<f64> = points.iter().map(|p| p.2).collect();
    let lmax = runs
        .iter()
        .filter_map(|r| r.record.summary.ntk_initial.as_ref().map(|n| n.lambda_max))
        .filter(|v| v.is_finite())
        .fold(f64::NEG_INFINITY, f64::max);
    let floor = lambda_floor(&lams, lmax);
    // A thin grey line through the per-value medians shows the transition.
    let mut colours = ValueColours::new(runs);
    let mut trend = Vec::new();
    for &v in &colours.values {
        let mut ys: Vec<f64> = points
            .iter()
            .filter(|p| p.0.record.value == v && p.2.is_finite())
            .map(|p| p.2.max(floor))
            .collect();
        ys.sort_by(f64::total_cmp);
        if let Some(x) = points.iter().find(|p| p.0.record.value == v).map(|p| p.1) {
            if !ys.is_empty() {
                trend.push((x, ys[ys.len() / 2]));
            }
        }
    }
    trend.sort_by(|a, b| a.0.total_cmp(&b.0));
    fig.series
        .push(Series::new(None, (170, 170, 170), Style::Line, trend));
    let mut clamped_any = false;
    for &(r, x, lam) in &points {
        let color = colours.color(r.record.value);
        let legend = colours.legend_once(r.record.value, || value_legend(ab, r.record));
        if lam.is_finite() && lam <= 0.0 {
            clamped_any = true;
            fig.series.push(Series::new(
                legend,
                color,
                Style::Marks(Mark::Cross),
                vec![(x, floor)],
            ));
        } else {
            fig.series.push(Series::new(
                legend,
                color,
                Style::Marks(Mark::Circle),
                vec![(x, lam)],
            ));
        }
    }
    if clamped_any {
        mark_floor(&mut fig, floor);
    }
    fig
}
