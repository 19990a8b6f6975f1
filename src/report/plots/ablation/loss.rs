//! The loss figure: training loss against epoch on a log axis, one colour per swept value (as in the
//! paper's figures), with the ablation's `skip_epochs` leading epochs left out.
//!
//! A flow run (`reproduce --solver flow`) has no epochs: its metrics rows are output times t, and
//! they are drawn at the GD-equivalent epoch t/η (η its config's lr), so `skip_epochs` leaves
//! out the same stretch of time t < skip_epochs·η for both solvers. Where such a run also ran GD
//! at its step η (`gd_loss` column, `train.compare_gd`), GD's loss is drawn dashed in the run's
//! colour: the flow is the theorem's object, GD the paper's simulation of it.

use super::common::{columns, value_legend, ValueColours};
use super::RunInput;
use crate::experiment::AblationRecord;
use crate::report::plots::figure::{Figure, Series, Style, BLACK_RGB};
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
    let mut gd_drawn = false;
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
        let color = colours.color(r.record.value);
        fig.series
            .push(Series::new(legend, color, Style::Line, pts));
        if let Some(gd) = gd_loss_points(r, skip) {
            fig.series.push(Series::new(None, color, Style::Dashed, gd));
            gd_drawn = true;
        }
    }
    if gd_drawn {
        let eta = runs.iter().find(|r| r.record.summary.flow.is_some());
        let text = eta.map_or("GD".to_string(), |r| {
            format!("GD at the paper's step η = {}", r.record.summary.lr)
        });
        fig.series.push(Series::key(
            &format!("dashed: {text}"),
            BLACK_RGB,
            Style::Dashed,
        ));
    }
    fig
}

/// GD's loss at a flow run's output times (epoch t/η), when the run compared against GD: the
/// `gd_loss` column exists and holds numbers (without `compare_gd` it is all NaN).
fn gd_loss_points(r: &RunInput, skip: f64) -> Option<Vec<P>> {
    let s = &r.record.summary;
    let t = r.metrics?;
    if s.flow.is_none() || t.column_index("gd_loss").is_none() {
        return None;
    }
    let pts: Vec<P> = t
        .xy("t", "gd_loss")
        .ok()?
        .into_iter()
        .map(|(t, l)| (t / s.lr, l))
        .filter(|p| p.0 >= skip && p.1.is_finite())
        .collect();
    (!pts.is_empty()).then_some(pts)
}
