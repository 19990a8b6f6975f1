//! The loss figure: training loss against epoch on a log axis, one colour per swept value (as in the
//! paper's figures), with the ablation's `skip_epochs` leading epochs left out.

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
    let mut fig = Figure::new(&title, "epoch", "training loss L (log scale)", false, true);
    let mut colours = ValueColours::new(runs);
    for r in runs {
        let Some(pts) = columns(r.metrics, "epoch", "loss", "loss", warnings) else {
            continue;
        };
        let pts: Vec<P> = pts
            .into_iter()
            .filter(|p| p.0 >= ab.skip_epochs as f64)
            .collect();
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
