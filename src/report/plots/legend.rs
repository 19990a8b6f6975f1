//! The legend panel right of the chart (so it never hides a curve): one row per series with a
//! legend entry, its line style or marker and its (truncated) label, and "… and k more" when the
//! entries outnumber the rows.

use super::draw::{draw_mark, err, shape, FONT};
use super::figure::{Figure, Series, Style};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

pub(super) fn draw_legend<DB: DrawingBackend>(
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
