//! The four figures of one ablation ([`PlotKind`]), built from its runs' records and CSV tables
//! ([`RunInput`]) as [`Figure`] descriptions: one module per figure, the helpers they share (a
//! colour and one legend entry per swept value, the floor for non-positive λ_min) in `common`.
//! Missing columns become warnings, not errors.

mod bound;
pub(crate) mod common;
mod lambda_min;
mod loss;
mod threshold;

pub use bound::bound_figure;
pub use lambda_min::lambda_min_figure;
pub use loss::loss_figure;
pub use threshold::threshold_figure;

use super::figure::Figure;
use crate::experiment::{AblationRecord, RunRecord};
use crate::report::tables::Table;

/// One run with its tables (either may be missing).
#[derive(Clone, Copy, Debug)]
pub struct RunInput<'a> {
    pub record: &'a RunRecord,
    pub metrics: Option<&'a Table>,
    pub ntk: Option<&'a Table>,
}

/// The kinds of figure per ablation, in report order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlotKind {
    Loss,
    LambdaMin,
    Threshold,
    Bound,
}

impl PlotKind {
    pub const ALL: [PlotKind; 4] = [Self::Loss, Self::LambdaMin, Self::Threshold, Self::Bound];

    /// File name suffix: `<ablation>_<suffix>.{svg,png}`.
    pub fn suffix(&self) -> &'static str {
        match self {
            Self::Loss => "loss",
            Self::LambdaMin => "lambda_min",
            Self::Threshold => "threshold",
            Self::Bound => "bound",
        }
    }

    /// A one-sentence caption for the report.
    pub fn caption(&self) -> &'static str {
        match self {
            Self::Loss => {
                "Training loss against epoch, one colour per swept value (as in the paper's figures). \
                 Linear convergence is a straight line on this log scale; under-parametrised runs plateau."
            }
            Self::LambdaMin => {
                "λ_min(H(t)) at the NTK checkpoints. Values ≤ 0 (singular NTK) cannot be shown on a log \
                 axis: they are drawn as × on the dashed floor line."
            }
            Self::Threshold => {
                "λ_min(H(0)) against p/nm. Theorem 3.1 predicts λ_min > 0 right of the line p = nm and \
                 λ_min = 0 (rank bound) left of it."
            }
            Self::Bound => {
                "Loss (solid) against the certified bound L(0)·exp(−4c∫λ_min) (dashed, same colour). \
                 The solid curve must stay below its dashed one; × marks a checkpoint where it does not."
            }
        }
    }
}

/// The four figures of one ablation, in [`PlotKind::ALL`] order. Missing columns become
/// warnings, not errors.
pub fn ablation_figures(
    ab: &AblationRecord,
    runs: &[RunInput],
    warnings: &mut Vec<String>,
) -> Vec<(PlotKind, Figure)> {
    PlotKind::ALL
        .iter()
        .map(|&k| {
            let f = match k {
                PlotKind::Loss => loss_figure(ab, runs, warnings),
                PlotKind::LambdaMin => lambda_min_figure(ab, runs, warnings),
                PlotKind::Threshold => threshold_figure(ab, runs, warnings),
                PlotKind::Bound => bound_figure(ab, runs, warnings),
            };
            (k, f)
        })
        .collect()
}
