//! The report's figures, drawn with plotters as SVG (inlined in `report.html`) and PNG (linked from
//! `report.md`): per ablation, the training loss against epoch, λ_min(H(t)) against t, λ_min(H(0))
//! across the over-parametrisation threshold p = nm, and the loss against the theorem's bound.
//!
//! Two layers:
//! - [`Figure`] is a plain description of one chart (series of points, log or linear axes,
//!   reference lines, legend entries) with [`render_svg_string`] / [`write_png`] / [`write_figure`]
//!   to draw it. Drawing never panics on degenerate data: non-finite points (and non-positive ones
//!   on a log axis) are skipped and break the line, a single point is drawn as a dot, an empty or
//!   zero-width range is padded, lines are clipped to the plotting area, and ticks are chosen here
//!   (plotters' own log ticks are poor over less than a decade).
//! - [`ablation_figures`] builds the four figures of one ablation from its runs' records and CSV
//!   tables; non-positive λ_min values are clamped to a floor below the smallest positive one and
//!   marked, since a log axis cannot show them and they are the point of the under-parametrised runs.
//!
//! The legend is drawn in a panel right of the chart, so it never hides a curve.
//!
//! This file only wires the pieces together; each lives in its own module:
//! - [`figure`]: the chart description ([`Figure`], [`Series`], [`Style`], [`Mark`], [`RefLine`])
//!   and the colour palette;
//! - [`format`](mod@format): number formatting ([`fmt_g`], decade labels), shared with the report's tables;
//! - `axis`: log/linear axes — data range, padding, tick choice, tick labels;
//! - `geometry`: clipping polylines to the plotting area and decimating long ones;
//! - `draw`: drawing a [`Figure`] onto a plotters area (mesh, reference lines, series), and
//!   `legend` the legend panel beside it;
//! - [`output`]: the SVG string and the SVG/PNG files;
//! - [`ablation`]: the four figures of an ablation, one module per figure;
//! - [`threshold_ablation`]: the threshold ablation's two figures (counterexample share and
//!   λ_min(H(0)) by the SVD of J, against p/nm).

pub mod ablation;
mod axis;
mod draw;
pub mod figure;
pub mod format;
mod geometry;
mod legend;
pub mod output;
pub mod threshold_ablation;

pub use ablation::{
    ablation_figures, bound_figure, lambda_min_figure, loss_figure, threshold_figure, PlotKind,
    RunInput,
};
pub use figure::{palette, Figure, Mark, RefLine, Series, Style, PALETTE};
pub use format::fmt_g;
pub use geometry::decimate;
pub use output::{render_svg_string, write_figure, write_png, WrittenPlot, SIZE};
