//! The report of a single run directory (what `gradflow train` writes): `DIR/report.html`
//! (self-contained, plots inlined as SVG), `DIR/report.md` and `DIR/plots/*.svg` (+ `*.png` when
//! asked) — the run's verdict (did the loss stay under the certified bound, did the trajectory
//! slide along kinks), its key numbers from `summary.json`, and four figures from `metrics.csv`
//! and `ntk.csv` ([`figures::RunPlot`]).
//!
//! `gradflow train` builds it at the end of every run, so it must be cheap: the SVGs are a few
//! milliseconds each; the PNGs (for `report.md` on a code-hosting site) cost more, and
//! [`RunReportOptions::png`] decides. Without PNGs `report.md` links the SVGs.
//!
//! A missing `ntk.csv` (NTK tracking off) is a note in the report, not an error: the λ_min and
//! bound figures are left out. A missing `summary.json` or `metrics.csv` is an error naming it.
//!
//! - [`figures`]: the figure descriptions;
//! - [`facts`]: the key numbers and the verdict;
//! - [`render`]: the HTML and Markdown documents.

pub mod facts;
pub mod figures;
pub mod render;

use super::tables::Table;
use super::{ReportFiles, HTML_FILE, MARKDOWN_FILE, PLOTS_DIR};
use crate::error::{Error, Result};
use crate::run::RunSummary;
use figures::RunPlot;
use std::path::Path;

/// Files that make a directory a run directory for the report.
pub const RUN_FILES: [&str; 2] = ["summary.json", "metrics.csv"];

/// Options of [`build_run_report`].
#[derive(Clone, Copy, Debug)]
pub struct RunReportOptions {
    /// Also write a PNG of every figure (report.md then links the PNGs).
    pub png: bool,
}

impl Default for RunReportOptions {
    fn default() -> Self {
        Self { png: true }
    }
}

/// One drawn figure of a run report.
#[derive(Clone, Debug)]
pub struct RunPlotRef {
    pub kind: RunPlot,
    /// Relative to the report, `/`-separated.
    pub svg_file: String,
    pub png_file: Option<String>,
    pub svg: String,
}

/// Everything the renderers print.
#[derive(Clone, Debug)]
pub struct RunReportInput<'a> {
    /// The directory's name, for the title.
    pub name: String,
    pub summary: &'a RunSummary,
    pub verdict: facts::RunVerdict,
    pub facts: Vec<facts::FactGroup>,
    pub plots: Vec<RunPlotRef>,
    pub warnings: &'a [String],
}

/// Whether `dir` has the files of a run directory.
pub fn is_run_dir(dir: &Path) -> bool {
    RUN_FILES.iter().all(|f| dir.join(f).is_file())
}

/// Builds the report of the run in `dir` (see the module docs).
pub fn build_run_report(dir: &Path, opts: &RunReportOptions) -> Result<ReportFiles> {
    let missing: Vec<&str> = RUN_FILES
        .iter()
        .copied()
        .filter(|f| !dir.join(f).is_file())
        .collect();
    if !missing.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: not a run directory — {} missing",
            dir.display(),
            missing.join(" and ")
        )));
    }
    let path = dir.join("summary.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let summary: RunSummary = serde_json::from_str(&text)
        .map_err(|e| Error::input(&path, format!("not a gradflow run summary: {e}")))?;
    let metrics = Table::read(&dir.join("metrics.csv"))?;
    let mut warnings = Vec::new();
    let ntk_path = dir.join("ntk.csv");
    let ntk = if ntk_path.is_file() {
        Some(Table::read(&ntk_path)?)
    } else {
        warnings.push(format!(
            "{}: not found (NTK tracking off?) — the λ_min and bound figures are left out",
            ntk_path.display()
        ));
        None
    };
    let flow = summary.flow.is_some() || metrics.column_index("pinned").is_some();

    let plots_dir = dir.join(PLOTS_DIR);
    std::fs::create_dir_all(&plots_dir).map_err(|e| Error::io(&plots_dir, e))?;
    let mut plot_files = Vec::new();
    let mut plots = Vec::new();
    for kind in RunPlot::ALL {
        let fig = match (kind, ntk.as_ref()) {
            (RunPlot::Loss, _) => figures::loss_figure(&metrics, &mut warnings),
            (RunPlot::LambdaMin, Some(n)) => figures::lambda_min_figure(n, &mut warnings),
            (RunPlot::Bound, Some(n)) => figures::bound_figure(&metrics, n, &mut warnings),
            (RunPlot::Kinks, _) => figures::kinks_figure(&metrics, flow, &mut warnings),
            (_, None) => {
                // Not drawn this time: drop what an earlier build (with ntk.csv) left.
                for ext in ["svg", "png"] {
                    let _ = std::fs::remove_file(plots_dir.join(format!("{}.{ext}", kind.stem())));
                }
                continue;
            }
        };
        let stem = kind.stem();
        let svg = super::plots::render_svg_string(&fig)?;
        let svg_path = plots_dir.join(format!("{stem}.svg"));
        crate::io::write_atomic(&svg_path, svg.as_bytes())?;
        plot_files.push(svg_path);
        let png_file = if opts.png {
            let png_path = plots_dir.join(format!("{stem}.png"));
            super::plots::write_png(&fig, &png_path)?;
            plot_files.push(png_path);
            Some(format!("{PLOTS_DIR}/{stem}.png"))
        } else {
            None
        };
        plots.push(RunPlotRef {
            kind,
            svg_file: format!("{PLOTS_DIR}/{stem}.svg"),
            png_file,
            svg,
        });
    }
    let name = std::fs::canonicalize(dir)
        .ok()
        .and_then(|p| p.file_name().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| dir.display().to_string());
    let input = RunReportInput {
        name,
        summary: &summary,
        verdict: facts::RunVerdict::of(&summary),
        facts: facts::facts(&summary),
        plots,
        warnings: &warnings,
    };
    let html_path = dir.join(HTML_FILE);
    let md_path = dir.join(MARKDOWN_FILE);
    crate::io::write_atomic(&html_path, render::html(&input).as_bytes())?;
    crate::io::write_atomic(&md_path, render::markdown(&input).as_bytes())?;
    Ok(ReportFiles {
        html: html_path,
        markdown: md_path,
        plots: plot_files,
        warnings,
    })
}
