//! Drawing a [`Figure`] onto a plotters drawing area (SVG or bitmap alike): the title, the chart
//! with its mesh and tick labels, reference lines under the data, each series clipped to the
//! plotting area and decimated, a note when nothing finite was drawn, and the legend panel
//! ([`super::legend`]) on the right. Errors come back as text for [`super::output`] to wrap.

use super::axis::Axis;
use super::figure::{Figure, Mark, Style, GREY};
use super::geometry::{clip_polyline, decimate, Rect, P};
use super::legend::draw_legend;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Width of the legend panel on the right.
const LEGEND_W: u32 = 215;
/// At most this many points per drawn line (more are reduced, keeping each bucket's extremes).
const MAX_POINTS: usize = 2000;
/// The font family of every text in a figure.
pub(super) const FONT: &str = "sans-serif";
/// [`GREY`] as a plotters colour, for text.
const GREY_COLOR: RGBColor = RGBColor(GREY.0, GREY.1, GREY.2);

pub(super) fn rgb(c: (u8, u8, u8)) -> RGBColor {
    RGBColor(c.0, c.1, c.2)
}

pub(super) fn err<E: std::error::Error + Send + Sync>(e: DrawingAreaErrorKind<E>) -> String {
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

pub(super) fn shape(color: (u8, u8, u8), width: u32) -> ShapeStyle {
    rgb(color).stroke_width(width)
}

pub(super) fn draw_mark<DB: DrawingBackend>(
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

pub(super) fn draw<DB: DrawingBackend>(
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
