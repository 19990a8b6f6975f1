//! The loss figure: training loss against epoch on a log axis, one colour per swept value (as in the
//! paper's figures), with the ablation's `skip_epochs` leading epochs left out.
//!
//! A flow run (`reproduce --solver flow`) has no epochs: its metrics rows are output times t, and
//! they are drawn at the GD-equivalent epoch t/η (η its config's lr), so `skip_epochs` leaves
//! out the same stretch of time t < skip_epochs·η for both solvers.

use super::common::{columns, value_legend, ValueColours};
use super::RunInput;
use crate::experiment::AblationRecord;
use crate::report::plots::figure::{Figure, Series, Style};
use crate::report::plots::geometry::P;

/// Loss against epoch, the ablation's `skip_epochs` leading epochs left out.
pub fn loss_figure(ab: &AblationRecord, runs: &[RunInput], warnings: &mut Vec<String>) -> Figure {
    let mut title = ab.title.clone();
    if ab.skip_epochs > 0 {
        title.push_str(&format!(" (first {} epochs left out)", ab.skip_epochs));
    }
    let flow = runs.iter().any(|r| r.record.summary.flow.is_some());
    let x_label = if flow { "epoch (flow: t/η)" } else { "epoch" };
    let mut fig = Figure::new(&title, x_label, "training loss L (log scale)", false, true);
    let mut colours = ValueColours::new(runs);
    for r in runs {
        let s = &r.record.summary;
        let pts = if s.flow.is_some() {
            let lr = s.lr;
            columns(r.metrics, "t", "loss", "loss", warnings)
                .map(|v| v.into_iter().map(|(t, l)| (t / lr, l)).collect::<Vec<P>>())
        } else {
            columns(r.metrics, "epoch", "loss", "loss", warnings)
        };
        let Some(pts) = pts else {
            continue;
        };
        // Compared in epochs with a little slack, so t = k·η rounding does not drop row k.
        let skip = ab.skip_epochs as f64 * (1.0 - 1e-9);
        let pts: Vec<P> = pts.into_iter().filter(|p| p.0 >= skip).collect();
        let legend = colours.legend_once(r.record.value, || value_legend(ab, r.record));
        fig.series.push(Series::new(
            legend,
            colours.color(r.record.value),
            Style::Line,
            pts,
        ));
    }
    fig
}
