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

use super::tables::Table;
use crate::error::{Error, Result};
use crate::experiment::{AblationRecord, RunRecord};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::{Path, PathBuf};

/// Canvas size in pixels.
pub const SIZE: (u32, u32) = (1000, 650);
/// Width of the legend panel on the right.
const LEGEND_W: u32 = 215;
/// At most this many points per drawn line (more are reduced, keeping each bucket's extremes).
const MAX_POINTS: usize = 2000;
const FONT: &str = "sans-serif";

/// Distinct colours (Tableau 10 without its grey, which is kept for reference lines).
pub const PALETTE: [(u8, u8, u8); 9] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (188, 189, 34),
    (23, 190, 207),
];
const GREY: (u8, u8, u8) = (110, 110, 110);
const BLACK_RGB: (u8, u8, u8) = (0, 0, 0);
const GREY_COLOR: RGBColor = RGBColor(GREY.0, GREY.1, GREY.2);

/// Colour `i` of the palette (cycling).
pub fn palette(i: usize) -> (u8, u8, u8) {
    PALETTE[i % PALETTE.len()]
}

/// A marker shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    Circle,
    Cross,
    Triangle,
}

/// How a series is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    Line,
    Dashed,
    /// A line with a marker at every point.
    LineMarks(Mark),
    /// Markers only.
    Marks(Mark),
}

/// One drawn series, in data units.
#[derive(Clone, Debug)]
pub struct Series {
    /// The legend entry; `None` draws the series without one (e.g. further seeds of a value).
    pub legend: Option<String>,
    pub color: (u8, u8, u8),
    pub style: Style,
    pub points: Vec<(f64, f64)>,
}

impl Series {
    pub fn new(
        legend: Option<String>,
        color: (u8, u8, u8),
        style: Style,
        points: Vec<(f64, f64)>,
    ) -> Self {
        Self {
            legend,
            color,
            style,
            points,
        }
    }
    /// A legend entry with nothing drawn (explains a line style or a marker).
    pub fn key(legend: &str, color: (u8, u8, u8), style: Style) -> Self {
        Self::new(Some(legend.to_string()), color, style, Vec::new())
    }
}

/// A labelled reference line at a data coordinate.
#[derive(Clone, Debug)]
pub struct RefLine {
    pub at: f64,
    pub label: String,
}

/// Everything needed to draw one chart.
#[derive(Clone, Debug)]
pub struct Figure {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_log: bool,
    pub y_log: bool,
    pub series: Vec<Series>,
    /// Vertical lines (x = at).
    pub vlines: Vec<RefLine>,
    /// Horizontal lines (y = at).
    pub hlines: Vec<RefLine>,
    /// A y range (data units) to use instead of the data's; points outside are clipped.
    pub y_range: Option<(f64, f64)>,
}

impl Figure {
    pub fn new(title: &str, x_label: &str, y_label: &str, x_log: bool, y_log: bool) -> Self {
        Self {
            title: title.to_string(),
            x_label: x_label.to_string(),
            y_label: y_label.to_string(),
            x_log,
            y_log,
            series: Vec::new(),
            vlines: Vec::new(),
            hlines: Vec::new(),
            y_range: None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Axes: transform, range, ticks, labels.

/// One axis in drawing units (log10 of the value on a log axis).
#[derive(Clone, Debug)]
struct Axis {
    log: bool,
    lo: f64,
    hi: f64,
    bold: Vec<f64>,
    light: Vec<f64>,
    /// Tick spacing of a linear axis (for label precision).
    step: f64,
}

impl Axis {
    fn fwd(log: bool, v: f64) -> f64 {
        match (log, v.is_finite()) {
            (_, false) => f64::NAN,
            (true, _) if v > 0.0 => v.log10(),
            (true, _) => f64::NAN,
            (false, _) => v,
        }
    }

    /// An axis covering `data` (drawing units, finite), padded by `pad` of the span.
    fn new(log: bool, data: Option<(f64, f64)>, pad: f64) -> Self {
        let (dlo, dhi) = data.unwrap_or(if log { (-1.0, 1.0) } else { (0.0, 1.0) });
        let (dlo, dhi) = (dlo.clamp(-1e300, 1e300), dhi.clamp(-1e300, 1e300));
        let span = dhi - dlo;
        let (mut lo, mut hi) = (dlo, dhi);
        if span <= 1e-12 * dlo.abs().max(dhi.abs()).max(1.0) {
            let d = if log {
                0.5
            } else if dlo == 0.0 {
                1.0
            } else {
                0.1 * dlo.abs()
            };
            lo -= d;
            hi += d;
        } else {
            lo -= pad * span;
            hi += pad * span;
        }
        if !log && dlo >= 0.0 && lo < 0.0 {
            lo = 0.0; // keep a non-negative axis (epochs, time) starting at 0
        }
        let (bold, light, step) = if log {
            log_ticks(lo, hi)
        } else {
            linear_ticks(lo, hi)
        };
        Self {
            log,
            lo,
            hi,
            bold,
            light,
            step,
        }
    }

    fn label(&self, u: f64) -> String {
        if self.log {
            let k = u.round();
            if (u - k).abs() < 1e-6 {
                return decade_label(k as i32);
            }
            fmt_g(10f64.powf(u), 3)
        } else {
            let v = if u.abs() < self.step * 1e-9 { 0.0 } else { u };
            let big = v.abs() >= 1e5 || (v != 0.0 && v.abs() < 1e-3);
            if big || !(self.step.is_finite() && self.step > 0.0) {
                fmt_g(v, 4)
            } else {
                let dec = (-self.step.log10().floor()).max(0.0) as usize;
                trim_zeros(&format!("{v:.dec$}"))
            }
        }
    }

    fn contains(&self, u: f64) -> bool {
        u >= self.lo && u <= self.hi
    }

    fn coord(&self) -> AxisCoord {
        AxisCoord {
            lo: self.lo,
            hi: self.hi,
            bold: self.bold.clone(),
            light: self.light.clone(),
        }
    }
}

/// A linear plotters coordinate with the ticks chosen here (plotters' `WithKeyPoints` over f64
/// cannot take a label formatter).
struct AxisCoord {
    lo: f64,
    hi: f64,
    bold: Vec<f64>,
    light: Vec<f64>,
}

impl Ranged for AxisCoord {
    type FormatOption = plotters::coord::ranged1d::DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let t = (v - self.lo) / (self.hi - self.lo);
        let t = if t.is_finite() {
            t.clamp(-100.0, 100.0)
        } else {
            0.5
        };
        limit.0 + (t * (limit.1 - limit.0) as f64).round() as i32
    }

    fn key_points<H: plotters::coord::ranged1d::KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            self.light.clone()
        } else {
            self.bold.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

/// 1, 2 or 5 × 10^k, about `span / target`.
fn nice_step(span: f64, target: f64) -> f64 {
    let raw = span / target;
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let mag = 10f64.powf(raw.log10().floor());
    let n = raw / mag;
    mag * if n < 1.5 {
        1.0
    } else if n < 3.5 {
        2.0
    } else if n < 7.5 {
        5.0
    } else {
        10.0
    }
}

/// Ticks at multiples of a nice step (bold) and of a fifth of it (light).
fn linear_ticks(lo: f64, hi: f64) -> (Vec<f64>, Vec<f64>, f64) {
    let step = nice_step(hi - lo, 6.0);
    let multiples = |s: f64| -> Vec<f64> {
        let first = (lo / s).ceil();
        (0..200)
            .map(|i| (first + i as f64) * s)
            .take_while(|v| *v <= hi + s * 1e-9)
            .map(|v| {
                if v.abs() < s * 1e-9 {
                    0.0
                } else {
                    v.clamp(lo, hi)
                }
            })
            .collect()
    };
    let bold = multiples(step);
    let light = multiples(step / 5.0)
        .into_iter()
        .filter(|v| bold.iter().all(|b| (b - v).abs() > step * 1e-6))
        .collect();
    (bold, light, step)
}

/// Ticks of a log axis given in log10 units: decades when the range spans several, else 1-2-5
/// multiples, else (less than about half a decade) nice linear values.
fn log_ticks(lo: f64, hi: f64) -> (Vec<f64>, Vec<f64>, f64) {
    let decades: Vec<i64> = ((lo.ceil() as i64)..=(hi.floor() as i64)).collect();
    let (mut bold, mut light) = (Vec::new(), Vec::new());
    if decades.len() >= 3 {
        let stride = decades.len().div_ceil(8) as i64;
        for &d in &decades {
            if d.rem_euclid(stride) == 0 {
                bold.push(d as f64);
            } else {
                light.push(d as f64);
            }
        }
        if decades.len() <= 6 {
            for d in (lo.floor() as i64)..=(hi.ceil() as i64) {
                for m in 2..10 {
                    let u = d as f64 + (m as f64).log10();
                    if u >= lo && u <= hi {
                        light.push(u);
                    }
                }
            }
        }
        return (bold, light, 1.0);
    }
    for d in (lo.floor() as i64)..=(hi.ceil() as i64) {
        for m in 1..10 {
            let u = d as f64 + (m as f64).log10();
            if u < lo || u > hi {
                continue;
            }
            if matches!(m, 1 | 2 | 5) {
                bold.push(u);
            } else {
                light.push(u);
            }
        }
    }
    if bold.len() < 3 {
        let (v, _, step) = linear_ticks(10f64.powf(lo), 10f64.powf(hi));
        bold = v.into_iter().filter(|x| *x > 0.0).map(f64::log10).collect();
        light.clear();
        return (bold, light, step);
    }
    (bold, light, 1.0)
}

/// `10^k` as text: plain for small k, `10⁻⁷` otherwise.
fn decade_label(k: i32) -> String {
    if (-3..=4).contains(&k) {
        return fmt_g(10f64.powi(k), 3);
    }
    let sup: String = k
        .to_string()
        .chars()
        .map(|c| match c {
            '-' => '⁻',
            '0' => '⁰',
            '1' => '¹',
            '2' => '²',
            '3' => '³',
            '4' => '⁴',
            '5' => '⁵',
            '6' => '⁶',
            '7' => '⁷',
            '8' => '⁸',
            _ => '⁹',
        })
        .collect();
    format!("10{sup}")
}

fn trim_zeros(s: &str) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s.to_string()
    }
}

/// A number with `sig` significant digits, plain or in scientific notation (`2.5e-7`).
pub fn fmt_g(x: f64, sig: usize) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if x == 0.0 {
        return "0".into();
    }
    let sig = sig.max(1);
    let e = x.abs().log10().floor() as i32;
    if !(-3..5).contains(&e) {
        let s = format!("{:.*e}", sig - 1, x);
        match s.split_once('e') {
            Some((m, ex)) => format!("{}e{ex}", trim_zeros(m)),
            None => s,
        }
    } else {
        let dec = (sig as i32 - 1 - e).max(0) as usize;
        trim_zeros(&format!("{x:.dec$}"))
    }
}

// ---------------------------------------------------------------------------------------------
// Geometry helpers.

type P = (f64, f64);

#[derive(Clone, Copy, Debug)]
struct Rect {
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
}

impl Rect {
    fn contains(&self, p: P) -> bool {
        p.0 >= self.x0 && p.0 <= self.x1 && p.1 >= self.y0 && p.1 <= self.y1
    }
}

/// Liang–Barsky: the part of segment a–b inside `r`.
fn clip_segment(a: P, b: P, r: &Rect) -> Option<(P, P)> {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let (mut t0, mut t1) = (0.0f64, 1.0f64);
    for (p, q) in [
        (-dx, a.0 - r.x0),
        (dx, r.x1 - a.0),
        (-dy, a.1 - r.y0),
        (dy, r.y1 - a.1),
    ] {
        if p == 0.0 {
            if q < 0.0 {
                return None;
            }
        } else {
            let t = q / p;
            if p < 0.0 {
                if t > t1 {
                    return None;
                }
                t0 = t0.max(t);
            } else {
                if t < t0 {
                    return None;
                }
                t1 = t1.min(t);
            }
        }
    }
    let at = |t: f64| {
        if t == 0.0 {
            a
        } else if t == 1.0 {
            b
        } else {
            (a.0 + t * dx, a.1 + t * dy)
        }
    };
    Some((at(t0), at(t1)))
}

/// Splits a polyline (drawing units, possibly non-finite) into the pieces inside `r`; points
/// without a finite neighbour come back as single dots.
fn clip_polyline(points: &[P], r: &Rect) -> (Vec<Vec<P>>, Vec<P>) {
    let (mut lines, mut dots) = (Vec::new(), Vec::new());
    let finite = |p: &P| p.0.is_finite() && p.1.is_finite();
    for run in points.split(|p| !finite(p)) {
        match run {
            [] => {}
            [p] => {
                if r.contains(*p) {
                    dots.push(*p);
                }
            }
            _ => {
                let mut cur: Vec<P> = Vec::new();
                for w in run.windows(2) {
                    match clip_segment(w[0], w[1], r) {
                        Some((a, b)) => {
                            if cur.last() != Some(&a) {
                                if cur.len() > 1 {
                                    lines.push(std::mem::take(&mut cur));
                                }
                                cur = vec![a];
                            }
                            cur.push(b);
                        }
                        None => {
                            if cur.len() > 1 {
                                lines.push(std::mem::take(&mut cur));
                            }
                            cur.clear();
                        }
                    }
                }
                if cur.len() > 1 {
                    lines.push(cur);
                }
            }
        }
    }
    (lines, dots)
}

/// Reduces a long polyline to at most about `max` points, keeping the lowest and highest point of
/// every bucket (so spikes survive) and the last point.
pub fn decimate(points: &[P], max: usize) -> Vec<P> {
    if points.len() <= max.max(4) || points.iter().any(|p| !(p.0.is_finite() && p.1.is_finite())) {
        return points.to_vec();
    }
    let buckets = (max / 2).max(2);
    let size = points.len().div_ceil(buckets);
    let mut out = Vec::with_capacity(2 * buckets + 1);
    for chunk in points.chunks(size) {
        let (mut lo, mut hi) = (0, 0);
        for (i, p) in chunk.iter().enumerate() {
            if p.1 < chunk[lo].1 {
                lo = i;
            }
            if p.1 > chunk[hi].1 {
                hi = i;
            }
        }
        out.push(chunk[lo.min(hi)]);
        if lo != hi {
            out.push(chunk[lo.max(hi)]);
        }
    }
    if out.last() != points.last() {
        out.push(points[points.len() - 1]);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Drawing.

fn rgb(c: (u8, u8, u8)) -> RGBColor {
    RGBColor(c.0, c.1, c.2)
}

fn err<E: std::error::Error + Send + Sync>(e: DrawingAreaErrorKind<E>) -> String {
    e.to_string()
}

/// The figure in drawing units: transformed series, axes, and whether anything is visible.
struct Prepared {
    x: Axis,
    y: Axis,
    series: Vec<Vec<P>>,
}

fn prepare(fig: &Figure) -> Prepared {
    let series: Vec<Vec<P>> = fig
        .series
        .iter()
        .map(|s| {
            s.points
                .iter()
                .map(|&(x, y)| {
                    let (u, v) = (Axis::fwd(fig.x_log, x), Axis::fwd(fig.y_log, y));
                    if u.is_finite() && v.is_finite() {
                        (u, v)
                    } else {
                        (f64::NAN, f64::NAN)
                    }
                })
                .collect()
        })
        .collect();
    let extend = |acc: Option<(f64, f64)>, v: f64| -> Option<(f64, f64)> {
        if !v.is_finite() {
            return acc;
        }
        Some(acc.map_or((v, v), |(a, b)| (a.min(v), b.max(v))))
    };
    let mut xr = None;
    let mut yr = None;
    for p in series.iter().flatten() {
        if p.0.is_finite() {
            xr = extend(xr, p.0);
            yr = extend(yr, p.1);
        }
    }
    for l in &fig.vlines {
        xr = extend(xr, Axis::fwd(fig.x_log, l.at));
    }
    for l in &fig.hlines {
        yr = extend(yr, Axis::fwd(fig.y_log, l.at));
    }
    if let Some((a, b)) = fig.y_range {
        let (a, b) = (Axis::fwd(fig.y_log, a), Axis::fwd(fig.y_log, b));
        if a.is_finite() && b.is_finite() && a <= b {
            yr = Some((a, b));
        }
    }
    let x = Axis::new(fig.x_log, xr, if fig.x_log { 0.06 } else { 0.02 });
    let y = Axis::new(fig.y_log, yr, 0.05);
    Prepared { x, y, series }
}

fn shape(color: (u8, u8, u8), width: u32) -> ShapeStyle {
    rgb(color).stroke_width(width)
}

fn draw_mark<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    m: Mark,
    at: (i32, i32),
    color: (u8, u8, u8),
    radius: i32,
) -> std::result::Result<(), String> {
    match m {
        Mark::Circle => area
            .draw(&Circle::new(at, radius, rgb(color).filled()))
            .map_err(err),
        Mark::Cross => area.draw(&Cross::new(at, 6, shape(color, 3))).map_err(err),
        Mark::Triangle => area
            .draw(&TriangleMarker::new(at, 6, rgb(color).filled()))
            .map_err(err),
    }
}

fn draw<DB: DrawingBackend>(
    fig: &Figure,
    root: &DrawingArea<DB, Shift>,
) -> std::result::Result<(), String> {
    root.fill(&WHITE).map_err(err)?;
    let body = root
        .titled(&fig.title, (FONT, 21).into_font().color(&BLACK))
        .map_err(err)?;
    let (w, _) = body.dim_in_pixel();
    let (plot, legend) = body.split_horizontally(w.saturating_sub(LEGEND_W));
    let pre = prepare(fig);
    let (xa, ya) = (&pre.x, &pre.y);
    let rect = Rect {
        x0: xa.lo,
        x1: xa.hi,
        y0: ya.lo,
        y1: ya.hi,
    };
    let mut chart = ChartBuilder::on(&plot)
        .margin_top(10)
        .margin_left(10)
        .margin_right(14)
        .margin_bottom(6)
        .x_label_area_size(56)
        .y_label_area_size(84)
        .build_cartesian_2d(xa.coord(), ya.coord())
        .map_err(err)?;
    let xfmt = |u: &f64| xa.label(*u);
    let yfmt = |v: &f64| ya.label(*v);
    chart
        .configure_mesh()
        .x_desc(fig.x_label.as_str())
        .y_desc(fig.y_label.as_str())
        .x_label_formatter(&xfmt)
        .y_label_formatter(&yfmt)
        .axis_desc_style((FONT, 17))
        .label_style((FONT, 15))
        .bold_line_style(RGBColor(205, 205, 205))
        .light_line_style(RGBColor(238, 238, 238))
        .axis_style(BLACK.stroke_width(1))
        .draw()
        .map_err(err)?;

    // Reference lines first, so the data are drawn over them.
    let ref_style = shape(GREY, 2);
    for l in &fig.vlines {
        let u = Axis::fwd(fig.x_log, l.at);
        if xa.contains(u) {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(u, ya.lo), (u, ya.hi)],
                    ref_style,
                )))
                .map_err(err)?;
            let label = EmptyElement::at((u, ya.hi))
                + Text::new(
                    l.label.clone(),
                    (7, 6),
                    (FONT, 16).into_font().color(&GREY_COLOR),
                );
            chart.draw_series(std::iter::once(label)).map_err(err)?;
        }
    }
    for l in &fig.hlines {
        let v = Axis::fwd(fig.y_log, l.at);
        if ya.contains(v) {
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(xa.lo, v), (xa.hi, v)],
                    6,
                    5,
                    shape(GREY, 1),
                ))
                .map_err(err)?;
            if l.label.is_empty() {
                continue;
            }
            let label = EmptyElement::at((xa.lo, v))
                + Text::new(
                    l.label.clone(),
                    (6, -19),
                    (FONT, 14).into_font().color(&GREY_COLOR),
                );
            chart.draw_series(std::iter::once(label)).map_err(err)?;
        }
    }

    let mut drawn = 0usize;
    for (s, pts) in fig.series.iter().zip(&pre.series) {
        let pts = decimate(pts, MAX_POINTS);
        let line = matches!(s.style, Style::Line | Style::Dashed | Style::LineMarks(_));
        if line {
            let (lines, dots) = clip_polyline(&pts, &rect);
            for l in lines {
                drawn += l.len();
                if s.style == Style::Dashed {
                    chart
                        .draw_series(DashedLineSeries::new(l, 9, 6, shape(s.color, 2)))
                        .map_err(err)?;
                } else {
                    chart
                        .draw_series(LineSeries::new(l, shape(s.color, 2)))
                        .map_err(err)?;
                }
            }
            if !matches!(s.style, Style::LineMarks(_)) {
                drawn += dots.len();
                chart
                    .draw_series(
                        dots.into_iter()
                            .map(|p| Circle::new(p, 3, rgb(s.color).filled())),
                    )
                    .map_err(err)?;
            }
        }
        if let Style::LineMarks(m) | Style::Marks(m) = s.style {
            let inside: Vec<P> = pts.iter().copied().filter(|p| rect.contains(*p)).collect();
            drawn += inside.len();
            let c = rgb(s.color);
            // Markers alone (a scatter) are drawn larger than markers on a line.
            let r = if matches!(s.style, Style::Marks(_)) {
                6
            } else {
                4
            };
            match m {
                Mark::Circle => {
                    chart.draw_series(inside.into_iter().map(|p| Circle::new(p, r, c.filled())))
                }
                Mark::Cross => chart.draw_series(
                    inside
                        .into_iter()
                        .map(|p| Cross::new(p, 6, c.stroke_width(3))),
                ),
                Mark::Triangle => chart.draw_series(
                    inside
                        .into_iter()
                        .map(|p| TriangleMarker::new(p, 6, c.filled())),
                ),
            }
            .map_err(err)?;
        }
    }
    if drawn == 0 {
        let mid = ((xa.lo + xa.hi) / 2.0, (ya.lo + ya.hi) / 2.0);
        let style = TextStyle::from((FONT, 20).into_font())
            .color(&GREY_COLOR)
            .pos(Pos::new(HPos::Center, VPos::Center));
        chart
            .draw_series(std::iter::once(Text::new(
                "no finite data to plot".to_string(),
                mid,
                style,
            )))
            .map_err(err)?;
    }
    draw_legend(fig, &legend)
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

fn draw_legend<DB: DrawingBackend>(
    fig: &Figure,
    area: &DrawingArea<DB, Shift>,
) -> std::result::Result<(), String> {
    let entries: Vec<&Series> = fig.series.iter().filter(|s| s.legend.is_some()).collect();
    if entries.is_empty() {
        return Ok(());
    }
    let (_, h) = area.dim_in_pixel();
    let (top, row) = (24i32, 23i32);
    let fit = ((h as i32 - top - 70) / row).max(1) as usize;
    let shown = if entries.len() > fit {
        fit - 1
    } else {
        entries.len()
    };
    let text = TextStyle::from((FONT, 15).into_font())
        .color(&BLACK)
        .pos(Pos::new(HPos::Left, VPos::Center));
    for (k, s) in entries.iter().take(shown).enumerate() {
        let y = top + row * k as i32;
        let st = shape(s.color, 2);
        match s.style {
            Style::Line => area
                .draw(&PathElement::new(vec![(6, y), (40, y)], st))
                .map_err(err)?,
            Style::Dashed => {
                area.draw(&PathElement::new(vec![(6, y), (17, y)], st))
                    .map_err(err)?;
                area.draw(&PathElement::new(vec![(23, y), (40, y)], st))
                    .map_err(err)?;
            }
            Style::LineMarks(m) => {
                area.draw(&PathElement::new(vec![(6, y), (40, y)], st))
                    .map_err(err)?;
                draw_mark(area, m, (23, y), s.color, 4)?;
            }
            Style::Marks(m) => draw_mark(area, m, (23, y), s.color, 6)?,
        }
        let label = truncate(s.legend.as_deref().unwrap_or(""), 22);
        area.draw(&Text::new(label, (48, y), text.clone()))
            .map_err(err)?;
    }
    if shown < entries.len() {
        let y = top + row * shown as i32;
        let more = format!("… and {} more", entries.len() - shown);
        area.draw(&Text::new(more, (48, y), text)).map_err(err)?;
    }
    Ok(())
}

/// The figure as SVG text (what `report.html` inlines).
pub fn render_svg_string(fig: &Figure) -> Result<String> {
    let mut s = String::new();
    {
        let root = SVGBackend::with_string(&mut s, SIZE).into_drawing_area();
        draw(fig, &root)
            .map_err(|e| Error::Invalid(format!("cannot draw the plot `{}`: {e}", fig.title)))?;
        root.present()
            .map_err(|e| Error::Invalid(format!("cannot draw the plot `{}`: {e}", fig.title)))?;
    }
    Ok(s)
}

/// Draws the figure as a PNG at `path`, atomically: into a hidden temporary `.png` next to it,
/// then renamed over `path`.
pub fn write_png(fig: &Figure, path: &Path) -> Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .ok_or_else(|| Error::Invalid(format!("{}: not a file name", path.display())))?
        .to_string_lossy()
        .into_owned();
    let tmp = path.with_file_name(format!(
        ".{name}.tmp-{}-{}.png",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| -> std::result::Result<(), String> {
        let root = BitMapBackend::new(&tmp, SIZE).into_drawing_area();
        draw(fig, &root)?;
        root.present().map_err(err)
    })();
    let result = result
        .map_err(|e| Error::input(path, format!("cannot draw the plot `{}`: {e}", fig.title)))
        .and_then(|_| std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The files of one written figure.
#[derive(Clone, Debug)]
pub struct WrittenPlot {
    pub svg_path: PathBuf,
    pub png_path: PathBuf,
    /// The SVG text, for inlining.
    pub svg: String,
}

/// Writes `dir/stem.svg` and `dir/stem.png`.
pub fn write_figure(fig: &Figure, dir: &Path, stem: &str) -> Result<WrittenPlot> {
    let svg = render_svg_string(fig)?;
    let svg_path = dir.join(format!("{stem}.svg"));
    let png_path = dir.join(format!("{stem}.png"));
    crate::io::write_atomic(&svg_path, svg.as_bytes())?;
    write_png(fig, &png_path)?;
    Ok(WrittenPlot {
        svg_path,
        png_path,
        svg,
    })
}

// ---------------------------------------------------------------------------------------------
// The four figures of an ablation.

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

/// "DNN" from "DNN: loss against …", else the ablation's name.
fn short_name(ab: &AblationRecord) -> String {
    match ab.title.split_once(':') {
        Some((head, _)) if !head.trim().is_empty() => head.trim().to_string(),
        _ => ab.name.clone(),
    }
}

/// Colour index per swept value (values in ascending order), and whether each value's legend
/// entry has been emitted.
struct ValueColours {
    values: Vec<usize>,
    seen: Vec<bool>,
}

impl ValueColours {
    fn new(runs: &[RunInput]) -> Self {
        let mut values: Vec<usize> = runs.iter().map(|r| r.record.value).collect();
        values.sort_unstable();
        values.dedup();
        let seen = vec![false; values.len()];
        Self { values, seen }
    }
    fn color(&self, value: usize) -> (u8, u8, u8) {
        palette(self.values.iter().position(|v| *v == value).unwrap_or(0))
    }
    /// The legend text the first time `value` is seen, `None` afterwards.
    fn legend_once(&mut self, value: usize, text: impl FnOnce() -> String) -> Option<String> {
        let k = self.values.iter().position(|v| *v == value)?;
        (!std::mem::replace(&mut self.seen[k], true)).then(text)
    }
}

fn value_legend(ab: &AblationRecord, r: &RunRecord) -> String {
    format!(
        "{} = {} (p/nm {})",
        ab.variable,
        r.value,
        fmt_g(r.summary.p_over_nm, 3)
    )
}

/// Column pairs of a table, with a warning instead of an error when a column is missing.
fn columns(
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
fn lambda_floor(values: &[f64], lambda_max: f64) -> f64 {
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
fn mark_floor(fig: &mut Figure, floor: f64) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_formatting() {
        assert_eq!(fmt_g(0.0, 3), "0");
        assert_eq!(fmt_g(2.5e-7, 3), "2.5e-7");
        assert_eq!(fmt_g(0.02, 3), "0.02");
        assert_eq!(fmt_g(1234.6, 3), "1235");
        assert_eq!(fmt_g(1.0e6, 3), "1e6");
        assert_eq!(fmt_g(f64::NAN, 3), "NaN");
        assert_eq!(decade_label(-7), "10⁻⁷");
        assert_eq!(decade_label(2), "100");
        assert_eq!(decade_label(12), "10¹²");
    }

    #[test]
    fn ticks_cover_degenerate_and_wide_ranges() {
        // All-equal values are padded; ticks exist and lie in range.
        for log in [false, true] {
            for data in [
                None,
                Some((3.0, 3.0)),
                Some((0.0, 0.0)),
                Some((-5.0, 250.0)),
                Some((-300.0, 10.0)),
            ] {
                let a = Axis::new(log, data, 0.05);
                assert!(a.lo < a.hi, "{log} {data:?}");
                assert!(!a.bold.is_empty(), "{log} {data:?}");
                assert!(
                    a.bold.iter().all(|u| a.contains(*u)),
                    "{log} {data:?} {:?}",
                    a.bold
                );
                assert!(a.bold.len() <= 12, "{log} {data:?} {:?}", a.bold);
                for u in &a.bold {
                    assert!(!a.label(*u).is_empty());
                }
            }
        }
        // Less than a decade on a log axis: 1-2-5 or linear ticks, never none.
        let (b, _, _) = log_ticks(0.1f64.log10(), 0.3f64.log10());
        assert!(b.len() >= 2, "{b:?}");
        let a = Axis::new(false, Some((0.0, 3000.0)), 0.02);
        assert_eq!(a.lo, 0.0);
        assert_eq!(a.label(1000.0), "1000");
    }

    #[test]
    fn clipping_breaks_lines_at_gaps_and_edges() {
        let r = Rect {
            x0: 0.0,
            x1: 10.0,
            y0: 0.0,
            y1: 10.0,
        };
        let pts = [
            (1.0, 1.0),
            (2.0, 2.0),
            (f64::NAN, f64::NAN),
            (3.0, 3.0),
            (f64::NAN, f64::NAN),
            (4.0, 4.0),
            (20.0, 4.0),
        ];
        let (lines, dots) = clip_polyline(&pts, &r);
        assert_eq!(
            lines,
            vec![vec![(1.0, 1.0), (2.0, 2.0)], vec![(4.0, 4.0), (10.0, 4.0)]]
        );
        assert_eq!(dots, vec![(3.0, 3.0)]);
        assert!(clip_segment((11.0, 0.0), (12.0, 5.0), &r).is_none());
        let (lines, _) = clip_polyline(&[(5.0, 5.0), (5.0, 20.0), (6.0, 20.0), (6.0, 5.0)], &r);
        assert_eq!(lines.len(), 2);
    }

    #[test]
    fn decimation_keeps_extremes_and_ends() {
        let mut pts: Vec<P> = (0..10_000).map(|i| (i as f64, 1.0)).collect();
        pts[5000].1 = 100.0;
        let d = decimate(&pts, 500);
        assert!(d.len() <= 502, "{}", d.len());
        assert!(d.iter().any(|p| p.1 == 100.0));
        assert_eq!(d.first(), pts.first());
        assert_eq!(d.last(), pts.last());
    }

    #[test]
    fn empty_and_degenerate_figures_render() {
        let mut f = Figure::new("empty", "x", "y", true, true);
        let svg = render_svg_string(&f).unwrap();
        assert!(svg.contains("<svg") && svg.contains("no finite data"));
        f.series.push(Series::new(
            Some("one point".into()),
            palette(0),
            Style::Line,
            vec![(1.0, 1.0)],
        ));
        f.series.push(Series::new(
            Some("bad".into()),
            palette(1),
            Style::Dashed,
            vec![(0.0, -1.0), (f64::NAN, 2.0), (f64::INFINITY, 1.0)],
        ));
        f.vlines.push(RefLine {
            at: 1.0,
            label: "p = nm".into(),
        });
        f.hlines.push(RefLine {
            at: 0.0,
            label: "not on a log axis".into(),
        });
        let svg = render_svg_string(&f).unwrap();
        assert!(svg.contains("one point") && svg.contains("p = nm"));
        assert!(!svg.contains("no finite data"));
    }
}
