//! A [`Figure`] as files: the SVG text (what `report.html` inlines), the PNG (what `report.md`
//! links), and both written next to each other — each file written atomically, so a reader never
//! sees half a plot.

use super::draw::{draw, err};
use super::figure::Figure;
use crate::error::{Error, Result};
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// Canvas size in pixels.
pub const SIZE: (u32, u32) = (1000, 650);

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::plots::figure::{palette, RefLine, Series, Style};

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
