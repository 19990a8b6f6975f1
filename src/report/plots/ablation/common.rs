//! What the four ablation figures share: the short name in their titles, a colour and a single
//! legend entry per swept value (so the seeds of one configuration share a colour), reading column
//! pairs with a warning instead of an error, and the floor at which non-positive λ_min values are
//! drawn on a log axis.

use super::RunInput;
use crate::experiment::{AblationRecord, RunRecord};
use crate::report::plots::figure::{palette, Figure, Mark, RefLine, Series, Style, GREY};
use crate::report::plots::fmt_g;
use crate::report::plots::geometry::P;
use crate::report::tables::Table;

/// "DNN" from "DNN: loss against …", else the ablation's name.
pub(super) fn short_name(ab: &AblationRecord) -> String {
    match ab.title.split_once(':') {
        Some((head, _)) if !head.trim().is_empty() => head.trim().to_string(),
        _ => ab.name.clone(),
    }
}

/// Colour index per swept value (values in ascending order), and whether each value's legend
/// entry has been emitted.
pub(super) struct ValueColours {
    pub(super) values: Vec<usize>,
    seen: Vec<bool>,
}

impl ValueColours {
    pub(super) fn new(runs: &[RunInput]) -> Self {
        let mut values: Vec<usize> = runs.iter().map(|r| r.record.value).collect();
        values.sort_unstable();
        values.dedup();
        let seen = vec![false; values.len()];
        Self { values, seen }
    }
    pub(super) fn color(&self, value: usize) -> (u8, u8, u8) {
        palette(self.values.iter().position(|v| *v == value).unwrap_or(0))
    }
    /// The legend text the first time `value` is seen, `None` afterwards.
    pub(super) fn legend_once(
        &mut self,
        value: usize,
        text: impl FnOnce() -> String,
    ) -> Option<String> {
        let k = self.values.iter().position(|v| *v == value)?;
        (!std::mem::replace(&mut self.seen[k], true)).then(text)
    }
}

pub(super) fn value_legend(ab: &AblationRecord, r: &RunRecord) -> String {
    format!(
        "{} = {} (p/nm {})",
        ab.variable,
        r.value,
        fmt_g(r.summary.p_over_nm, 3)
    )
}

/// Column pairs of a table, with a warning instead of an error when a column is missing.
pub(super) fn columns(
    t: Option<&Table>,
    x: &str,
    y: &str,
    what: &str,
    warnings: &mut Vec<String>,
) -> Option<Vec<P>> {
    let t = t?;
    match t.xy(x, y) {
        Ok(v) => Some(v),
        Err(e) => {
            warnings.push(format!("{e} — left out of the {what} plot"));
            None
        }
    }
}

/// The floor at which non-positive λ_min values are drawn: a decade under the smallest positive
/// value shown, else 1e-12·λ_max (the verdict's rounding threshold), else 1e-16.
pub(crate) fn lambda_floor(values: &[f64], lambda_max: f64) -> f64 {
    let min_pos = values
        .iter()
        .copied()
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold(f64::INFINITY, f64::min);
    if min_pos.is_finite() {
        (min_pos / 10.0).max(f64::MIN_POSITIVE)
    } else if lambda_max.is_finite() && lambda_max > 0.0 {
        (1e-12 * lambda_max).max(f64::MIN_POSITIVE)
    } else {
        1e-16
    }
}

/// Explains the floor in the legend (a label on the plot would sit on the clamped markers) and
/// draws it as a dashed line.
pub(crate) fn mark_floor(fig: &mut Figure, floor: f64) {
    fig.series.push(Series::key(
        "λ_min ≤ 0, drawn at",
        GREY,
        Style::Marks(Mark::Cross),
    ));
    fig.series.push(Series::key(
        &format!("floor = {}", fmt_g(floor, 2)),
        GREY,
        Style::Dashed,
    ));
    fig.hlines.push(RefLine {
        at: floor,
        label: String::new(),
    });
}
