//! `gradflow report DIR`: turns a reproduction directory (its `reproduce.json` and every run's
//! `metrics.csv` / `ntk.csv`) into plots (`DIR/plots/*.svg`, `*.png`), a self-contained
//! `DIR/report.html` (inline CSS and SVG, no external resources) and `DIR/report.md` (linking the
//! PNGs), so the verdicts on Theorem 3.1 can be read in a browser or on a code-hosting site.
//!
//! The report puts the verdicts first — a summary line per ablation and a table of every run, with
//! runs that contradict the theorem or violate its bound highlighted, and with several seeds per
//! swept value a table of the spread across seeds — then explains how to read it, then shows the
//! four figures of each ablation ([`plots::PlotKind`]). It has no date in it, so rebuilding it
//! from the same runs gives the same files.
//!
//! - [`tables`]: the numeric CSV reader;
//! - [`plots`]: figure descriptions and drawing (plotters);
//! - [`summary`]: the counts and table cells both renderers print;
//! - [`html`], [`markdown`]: the two renderers;
//! - [`single`]: the report of one run directory (no `reproduce.json`), which [`build_report`]
//!   builds when given one.
//!
//! A missing run directory or CSV file is reported as a warning (listed in the report and in
//! [`ReportFiles::warnings`]) and the rest of the report is still built; a malformed CSV file is
//! an error naming the file and line.

pub mod html;
pub mod markdown;
pub mod plots;
pub mod single;
pub mod summary;
pub mod tables;

use crate::error::{Error, Result};
use crate::experiment::{AblationRecord, ReproduceIndex, RunRecord};
use plots::{PlotKind, RunInput};
use std::path::{Path, PathBuf};
use tables::Table;

/// File names inside the reproduction directory.
pub const HTML_FILE: &str = "report.html";
pub const MARKDOWN_FILE: &str = "report.md";
pub const PLOTS_DIR: &str = "plots";

/// What [`build_report`] wrote.
#[derive(Clone, Debug)]
pub struct ReportFiles {
    pub html: PathBuf,
    pub markdown: PathBuf,
    /// Every plot file (SVG and PNG), ablation by ablation.
    pub plots: Vec<PathBuf>,
    /// Missing files and columns that left something out of the report.
    pub warnings: Vec<String>,
}

/// One drawn figure, as the renderers need it.
#[derive(Clone, Debug)]
pub struct PlotRef {
    pub kind: PlotKind,
    /// Paths relative to the report, with `/` separators (`plots/dnn_loss.png`).
    pub svg_file: String,
    pub png_file: String,
    /// The SVG text, for inlining.
    pub svg: String,
}

/// One ablation's part of the report.
#[derive(Clone, Debug)]
pub struct Section<'a> {
    pub ablation: &'a AblationRecord,
    pub summary: summary::AblationSummary,
    pub plots: Vec<PlotRef>,
}

/// A figure outside the per-ablation set, with its own caption.
#[derive(Clone, Debug)]
pub struct ExtraPlot {
    pub caption: String,
    pub svg_file: String,
    pub png_file: String,
    pub svg: String,
}

/// The threshold ablation's part of the report.
#[derive(Clone, Debug)]
pub struct ThresholdSection {
    /// The headline sentence when counterexamples occurred.
    pub headline: Option<String>,
    /// "c of k initialisations with p ≥ nm are counterexamples, over N seeds per width".
    pub line: String,
    pub plots: Vec<ExtraPlot>,
}

/// Everything the renderers print.
#[derive(Clone, Debug)]
pub struct ReportInput<'a> {
    pub index: &'a ReproduceIndex,
    pub threshold: Option<ThresholdSection>,
    pub sections: Vec<Section<'a>>,
    pub rows: Vec<summary::RunRow>,
    /// One row per (ablation, swept value) over its seeds; shown when some value has several.
    pub spread: Vec<summary::SeedSpread>,
    pub warnings: &'a [String],
}

/// The run's directory: `dir` in the index is relative to the index's directory unless absolute.
pub fn run_dir(base: &Path, r: &RunRecord) -> PathBuf {
    if r.dir.is_absolute() {
        r.dir.clone()
    } else {
        base.join(&r.dir)
    }
}

/// A table that may be missing (a warning then), but not malformed.
fn read_optional(path: &Path, what: &str, warnings: &mut Vec<String>) -> Result<Option<Table>> {
    match Table::read(path) {
        Ok(t) => Ok(Some(t)),
        Err(Error::Io { ref source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            warnings.push(format!("{}: not found — {what}", path.display()));
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// A string safe as a file-name component (ablation names come from the index).
fn file_stem(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        "ablation".into()
    } else {
        s
    }
}

/// Builds the report of the reproduction in `dir` (see the module docs), or of the single run in
/// `dir` when it has no `reproduce.json` but a run's `summary.json` / `metrics.csv`
/// ([`single::build_run_report`]). A directory that is neither is an error naming the files.
pub fn build_report(dir: &Path) -> Result<ReportFiles> {
    let has_index = dir.join(crate::experiment::INDEX_FILE).is_file();
    if !has_index {
        if single::RUN_FILES.iter().any(|f| dir.join(f).is_file()) {
            return single::build_run_report(dir, &single::RunReportOptions::default());
        }
        return Err(Error::Invalid(format!(
            "{}: neither a reproduce directory (no {}) nor a run directory (no {}){}",
            dir.display(),
            crate::experiment::INDEX_FILE,
            single::RUN_FILES.join(", no "),
            if dir.is_dir() {
                ""
            } else {
                " — the directory does not exist"
            }
        )));
    }
    let index = ReproduceIndex::load(dir)?;
    let mut warnings = Vec::new();
    // Every run's tables, ablation by ablation.
    let mut tables: Vec<Vec<(Option<Table>, Option<Table>)>> = Vec::new();
    let mut runs_without_ntk = 0;
    for ab in &index.ablations {
        let mut v = Vec::new();
        for r in &ab.runs {
            let rd = run_dir(dir, r);
            if !rd.is_dir() {
                warnings.push(format!(
                    "{}: run directory not found — {}/{} is in the table but not in the plots",
                    rd.display(),
                    ab.name,
                    r.label
                ));
                v.push((None, None));
                continue;
            }
            let m = read_optional(
                &rd.join("metrics.csv"),
                "the run's loss curve is left out",
                &mut warnings,
            )?;
            // A run that tracked no NTK (`reproduce --no-ntk`, `ntk.enabled = false`) has no
            // ntk.csv by design: one note for all of them below, not a warning each.
            let ntk_off = r.summary.ntk_initial.is_none() && r.summary.ntk_final.is_none();
            let ntk_path = rd.join("ntk.csv");
            let n = if ntk_off && !ntk_path.exists() {
                runs_without_ntk += 1;
                None
            } else {
                read_optional(
                    &ntk_path,
                    "the run's λ_min and bound curves are left out (NTK tracking off?)",
                    &mut warnings,
                )?
            };
            v.push((m, n));
        }
        tables.push(v);
    }
    if runs_without_ntk > 0 {
        warnings.push(format!(
            "{runs_without_ntk} run(s) tracked no NTK (`reproduce --no-ntk` or ntk.enabled = false): \
             their λ_min and bound curves are left out"
        ));
    }

    let plots_dir = dir.join(PLOTS_DIR);
    std::fs::create_dir_all(&plots_dir).map_err(|e| Error::io(&plots_dir, e))?;
    let mut plot_files = Vec::new();
    let mut sections = Vec::new();
    for (ab, tabs) in index.ablations.iter().zip(&tables) {
        let runs: Vec<RunInput> = ab
            .runs
            .iter()
            .zip(tabs)
            .map(|(r, (m, n))| RunInput {
                record: r,
                metrics: m.as_ref(),
                ntk: n.as_ref(),
            })
            .collect();
        let mut plots = Vec::new();
        for (kind, fig) in plots::ablation_figures(ab, &runs, &mut warnings) {
            let stem = format!("{}_{}", file_stem(&ab.name), kind.suffix());
            let w = plots::write_figure(&fig, &plots_dir, &stem)?;
            plot_files.push(w.svg_path);
            plot_files.push(w.png_path);
            plots.push(PlotRef {
                kind,
                svg_file: format!("{PLOTS_DIR}/{stem}.svg"),
                png_file: format!("{PLOTS_DIR}/{stem}.png"),
                svg: w.svg,
            });
        }
        sections.push(Section {
            ablation: ab,
            summary: summary::AblationSummary::of(ab),
            plots,
        });
    }

    let threshold = match &index.threshold {
        Some(t) => {
            let mut plots = Vec::new();
            let figures = [
                (
                    "threshold_counterexamples",
                    plots::threshold_ablation::counterexample_fraction_figure(t),
                    "Share of initialisations (seeds) per width/depth whose Jacobian J(θ(0)) is exactly rank-deficient although p ≥ nm, and stays so under random perturbations of θ: counterexamples to Lemma 3.2's \"positive definite almost surely\".",
                ),
                (
                    "threshold_svd_lambda_min",
                    plots::threshold_ablation::svd_lambda_min_figure(t),
                    "λ_min(H(0)) = σ_min(J)² from the singular values of J (resolved to about ε²·λ_max, far below an eigensolver on H), one marker per initialisation; × marks an exactly rank-deficient J.",
                ),
            ];
            for (stem, fig, caption) in figures {
                let w = plots::write_figure(&fig, &plots_dir, stem)?;
                plot_files.push(w.svg_path);
                plot_files.push(w.png_path);
                plots.push(ExtraPlot {
                    caption: caption.to_string(),
                    svg_file: format!("{PLOTS_DIR}/{stem}.svg"),
                    png_file: format!("{PLOTS_DIR}/{stem}.png"),
                    svg: w.svg,
                });
            }
            let (c, k) = t.counts();
            Some(ThresholdSection {
                headline: t.headline(),
                line: format!(
                    "{c} of {k} initialisations with p ≥ nm are counterexamples ({} initialisations in all, {} seeds per width or depth)",
                    t.points.len(),
                    t.seeds
                ),
                plots,
            })
        }
        None => None,
    };
    let input = ReportInput {
        index: &index,
        threshold,
        sections,
        rows: summary::run_rows(&index),
        spread: summary::seed_spread(&index),
        warnings: &warnings,
    };
    let html_path = dir.join(HTML_FILE);
    let md_path = dir.join(MARKDOWN_FILE);
    crate::io::write_atomic(&html_path, html::render(&input).as_bytes())?;
    crate::io::write_atomic(&md_path, markdown::render(&input).as_bytes())?;
    Ok(ReportFiles {
        html: html_path,
        markdown: md_path,
        plots: plot_files,
        warnings,
    })
}

#[cfg(test)]
pub(crate) mod tests;
