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
pub(crate) mod tests {
    use super::*;
    use crate::experiment::{verdict, Scale};
    use crate::io::test_dir;
    use crate::run::RunSummary;

    const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

    /// A summary with the given numbers; everything else plausible.
    pub(crate) fn summary(
        p: usize,
        nm: usize,
        lam0: f64,
        violations: usize,
        chatter: u64,
        final_loss: f64,
    ) -> RunSummary {
        let viol: Vec<String> = (0..violations)
            .map(|k| {
                format!(
                    r#"{{"epoch":{e},"t":{t},"loss":0.5,"lambda_min":0.0,"integral":0.0,"bound":0.4,"holds":false}}"#,
                    e = 10 * (k + 1),
                    t = 0.5 * (k + 1) as f64
                )
            })
            .collect();
        // J's evidence as a run would record it: λ_min > 1.2e-11 certified (rank nm), p < nm of
        // rank p, and λ_min = 0 with p ≥ nm an exact, persistent deficiency (a counterexample).
        let certified = lam0 > 1.2e-11 && p >= nm;
        let ntk = |l: f64| {
            let evidence = if certified {
                format!(
                    r#""jacobian_rank":{nm},"rank_exact_deficient":false,"lambda_min_lower":{}"#,
                    0.9 * l
                )
            } else if p < nm {
                format!(r#""jacobian_rank":{p},"rank_exact_deficient":false"#)
            } else {
                format!(
                    r#""jacobian_rank":{},"rank_gap":1e10,"rank_exact_deficient":true,
                    "persistence":{{"draws":5,"rel":1e-6,"ranks":[],"deficient_draws":5,"persistent":true}}"#,
                    nm - 1
                )
            };
            format!(
                r#"{{"route":"structured","dim":{nm},"p":{p},"lambda_min":{l},"lambda_max":12.0,"condition":null,
                "lambda_min_accuracy":1e-14,"method":"dense","seconds":0.01,{evidence}}}"#
            )
        };
        let json = format!(
            r#"{{"status":"completed","message":null,"preset":"dnn","activation":"leaky-relu(0.01)",
            "activation_class":"piecewise-polynomial","p":{p},"n":10,"d":3,"m":2,"nm":{nm},
            "p_over_nm":{ratio},"overparametrized":{over},"loss":"mse","loss_constant":0.05,"lr":0.05,
            "epochs":20,"last_epoch":20,"t_final":1.0,"initial_loss":1.0,"final_loss":{final_loss},
            "fitted_rate_tail":0.7,"gradient_evaluations":21,"seconds":0.1,
            "kinks":{{"tracked":100,"total_crossings":{cross},"units_crossed":3,"units_over_100_flips":0,
            "max_flips":4,"longest_chatter":{chatter},"steps_with_chattering":{chatter}}},
            "ntk_initial":{n0},"ntk_final":{n1},"certified_rate":0.01,"bound_checks":3,
            "bound_violations":[{viol}],
            "certification":{{"checkpoints":3,"certified":{ncert},"rank_deficient":0,
            "min_lambda_min_lower":null,"first_uncertified":null}}}}"#,
            ncert = if certified { 3 } else { 0 },
            ratio = p as f64 / nm as f64,
            over = p >= nm,
            cross = 5 * chatter,
            n0 = ntk(lam0),
            n1 = ntk(lam0 * 0.9),
            viol = viol.join(",")
        );
        serde_json::from_str(&json).expect("test summary JSON matches RunSummary")
    }

    pub(crate) fn record(label: &str, value: usize, s: RunSummary) -> RunRecord {
        let v = verdict(&s);
        RunRecord {
            label: label.into(),
            value,
            seed: 0,
            dir: PathBuf::from("dnn").join(label),
            summary: s,
            verdict: v,
        }
    }

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// A reproduction of two DNN runs: one over-parametrised and converging, one under-parametrised
    /// with λ_min = 0, a bound violation and chattering.
    pub(crate) fn fake_reproduction(dir: &Path) -> ReproduceIndex {
        let over = record("w=8-seed0", 8, summary(40, 20, 0.3, 0, 0, 1e-3));
        let under = record("w=2-seed0", 2, summary(10, 20, 0.0, 1, 6, 0.5));
        let index = ReproduceIndex {
            timing: None,
            threshold: None,
            scale: Scale::Quick,
            seeds: 1,
            shard: None,
            ablations: vec![AblationRecord {
                name: "dnn".into(),
                title: "DNN: loss against epoch, one curve per hidden width".into(),
                variable: "width".into(),
                skip_epochs: 0,
                runs: vec![under, over],
            }],
        };
        index.save(dir).unwrap();
        let mut metrics = String::from("epoch,t,loss,grad_norm,kink_crossings,chattering\n");
        for e in 0..=20 {
            metrics.push_str(&format!(
                "{e},{},{},0.1,0,0\n",
                0.05 * e as f64,
                (-0.35 * e as f64).exp()
            ));
        }
        write(&dir.join("dnn/w=8-seed0/metrics.csv"), &metrics);
        write(
            &dir.join("dnn/w=8-seed0/ntk.csv"),
            "epoch,t,loss,lambda_min,lambda_max,condition,lambda_min_accuracy,integral_lambda_min,bound,bound_holds\n\
             0,0,1,0.3,12,40,1e-14,0,1,1\n10,0.5,0.03,0.28,12,43,1e-14,0.145,0.97,1\n20,1,0.001,0.27,12,44,1e-14,0.28,0.945,1\n",
        );
        write(
            &dir.join("dnn/w=2-seed0/metrics.csv"),
            "epoch,t,loss,grad_norm,kink_crossings,chattering\n0,0,1,0.1,0,0\n10,0.5,0.6,0.1,4,2\n20,1,0.5,0.1,2,1\n",
        );
        write(
            &dir.join("dnn/w=2-seed0/ntk.csv"),
            "epoch,t,loss,lambda_min,lambda_max,condition,lambda_min_accuracy,integral_lambda_min,bound,bound_holds\n\
             0,0,1,0,12,inf,1e-14,0,1,1\n10,0.5,0.6,-1e-16,12,inf,1e-14,0,0.55,0\n20,1,0.5,NaN,12,inf,1e-14,0,1,1\n",
        );
        index
    }

    #[test]
    fn build_report_writes_plots_html_and_markdown() {
        let t = test_dir("report-build");
        let index = fake_reproduction(t.path());
        let files = build_report(t.path()).unwrap();
        assert!(files.warnings.is_empty(), "{:?}", files.warnings);
        assert_eq!(files.plots.len(), 8);
        for kind in PlotKind::ALL {
            let svg_path = t.path().join(format!("plots/dnn_{}.svg", kind.suffix()));
            let png_path = t.path().join(format!("plots/dnn_{}.png", kind.suffix()));
            assert!(files.plots.contains(&svg_path) && files.plots.contains(&png_path));
            let svg = std::fs::read_to_string(&svg_path).unwrap();
            assert!(svg.contains("<svg"), "{kind:?}");
            // Legend labels: one per swept value.
            assert!(
                svg.contains("width = 2 (p/nm 0.5)") && svg.contains("width = 8 (p/nm 2)"),
                "{kind:?}"
            );
            let png = std::fs::read(&png_path).unwrap();
            assert!(
                png.len() > 1000 && png.starts_with(&PNG_SIGNATURE),
                "{kind:?}"
            );
        }
        // Figure-specific content.
        let read =
            |k: &str| std::fs::read_to_string(t.path().join(format!("plots/dnn_{k}.svg"))).unwrap();
        assert!(read("threshold").contains("p = nm"));
        assert!(read("lambda_min").contains("λ_min ≤ 0, drawn at"));
        assert!(read("bound").contains("bound violated"));

        let html = std::fs::read_to_string(&files.html).unwrap();
        assert!(html.starts_with("<!DOCTYPE html>"));
        for (_, r) in index.all_runs() {
            assert!(
                html.contains(&html::escape(&r.verdict.line)),
                "missing verdict {}",
                r.verdict.line
            );
        }
        assert!(
            html.contains("dnn: 2 of 2 runs consistent with Theorem 3.1 (1 with p ≥ nm); bound violated in 1 of 2 checked runs (1 checkpoint); sliding/chattering in 1 run"),
            "summary line"
        );
        assert!(html.contains("<svg"));
        assert_eq!(html.matches("<svg").count(), 4);
        assert!(
            html.contains("class=\"flag\""),
            "the run that violates the bound is highlighted"
        );
        // No external resources: the only URL is the SVG namespace.
        for (i, _) in html.match_indices("http") {
            assert!(
                html[i..].starts_with("http://www.w3.org/2000/svg"),
                "external URL at {}",
                &html[i..i + 60]
            );
        }
        // Verdicts come before the plots.
        assert!(html.find("<table").unwrap() < html.find("<svg").unwrap());

        let md = std::fs::read_to_string(&files.markdown).unwrap();
        let header = format!(
            "| | {} |",
            summary::COLUMNS.map(markdown::escape).join(" | ")
        );
        assert!(md.contains(&header), "{md}");
        assert!(
            md.contains("![")
                && md.contains("(plots/dnn_loss.png)")
                && md.contains("(plots/dnn_bound.png)")
        );
        assert!(md.contains("**⚠**"));
        assert_eq!(
            md.matches("**⚠**").count(),
            1,
            "only the run that violates the bound is flagged:\n{md}"
        );
        assert!(md.find("| ablation |").unwrap() < md.find("![").unwrap());
        // No temporary files left behind.
        for e in std::fs::read_dir(t.path().join("plots")).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(!name.starts_with('.'), "{name}");
        }
        // Rebuilding gives the same documents (no dates).
        let html2 = {
            build_report(t.path()).unwrap();
            std::fs::read_to_string(&files.html).unwrap()
        };
        assert_eq!(html, html2);
    }

    #[test]
    fn several_seeds_add_the_spread_table_and_seed_line() {
        let t = test_dir("report-seeds");
        let mut index = fake_reproduction(t.path());
        let one_seed = build_report(t.path()).unwrap();
        let html = std::fs::read_to_string(&one_seed.html).unwrap();
        let md = std::fs::read_to_string(&one_seed.markdown).unwrap();
        assert!(!html.contains("Across seeds") && !md.contains("Across seeds"));
        assert!(!html.contains("over 1 seed") && !md.contains("consistent on every seed"));

        // A second seed of each width, reading the same run directories.
        index.seeds = 2;
        let ab = &mut index.ablations[0];
        let mut again = ab.runs.clone();
        for r in &mut again {
            r.seed = 1;
            r.label = r.label.replace("seed0", "seed1");
        }
        ab.runs.extend(again);
        index.save(t.path()).unwrap();
        let files = build_report(t.path()).unwrap();
        assert!(files.warnings.is_empty(), "{:?}", files.warnings);
        let line = "over 2 seeds: 2 of 2 widths consistent on every seed";
        let html = std::fs::read_to_string(&files.html).unwrap();
        assert!(
            html.contains("<h3 id=\"across-seeds\">Across seeds</h3>"),
            "{html}"
        );
        assert!(html.contains(&format!("<br>{line}</li>")));
        // After the run table, before the explanations.
        let at = html.find("Across seeds").unwrap();
        assert!(html.find("<table").unwrap() < at && at < html.find("How to read this").unwrap());
        // Width 2 violated the bound on both seeds: its row is flagged; width 8 is not.
        assert!(html
            .contains("<tr class=\"flag\"><td>dnn</td><td>width = 2</td><td class=\"num\">2</td>"));
        assert!(html.contains("<tr><td>dnn</td><td>width = 8</td><td class=\"num\">2</td>"));
        let md = std::fs::read_to_string(&files.markdown).unwrap();
        assert!(md.contains("### Across seeds"), "{md}");
        assert!(md.contains(&format!("  - {line}\n")), "{md}");
        assert!(
            md.contains("| **⚠** | dnn | width = 2 | 2 | 0.5 | 0 |"),
            "{md}"
        );
        assert!(
            md.contains("|  | dnn | width = 8 | 2 | 2 | 2 | 3.000e-1 | 3.000e-1 | 3.000e-1 |"),
            "{md}"
        );
        assert!(md.find("### Across seeds").unwrap() < md.find("## How to read this").unwrap());
    }

    #[test]
    fn degenerate_runs_do_not_panic() {
        let t = test_dir("report-degenerate");
        let mut s = summary(10, 20, 0.0, 0, 0, 1.0);
        s.ntk_final = None;
        s.fitted_rate_tail = None;
        s.certified_rate = None;
        let one = record("w=1-seed0", 1, s.clone());
        // JSON cannot hold NaN or inf, but a zero initial loss makes the loss ratio NaN.
        let mut s2 = s;
        s2.initial_loss = 0.0;
        s2.final_loss = 0.0;
        let two = record("w=3-seed0", 3, s2);
        let index = ReproduceIndex {
            timing: None,
            threshold: None,
            scale: Scale::Paper,
            seeds: 1,
            shard: Some(crate::experiment::Shard { index: 0, count: 2 }),
            ablations: vec![
                AblationRecord {
                    name: "resnet".into(),
                    title: "ResNet <deep> & \"odd\"".into(),
                    variable: "depth".into(),
                    skip_epochs: 100,
                    runs: vec![one, two],
                },
                AblationRecord {
                    name: "empty".into(),
                    title: "no runs".into(),
                    variable: "width".into(),
                    skip_epochs: 0,
                    runs: vec![],
                },
            ],
        };
        index.save(t.path()).unwrap();
        // One epoch, λ_min = 0 exactly, a NaN loss; the second run has no ntk.csv.
        write(
            &t.path().join("dnn/w=1-seed0/metrics.csv"),
            "epoch,t,loss,grad_norm,kink_crossings,chattering\n0,0,1,0,0,0\n",
        );
        write(
            &t.path().join("dnn/w=1-seed0/ntk.csv"),
            "epoch,t,loss,lambda_min,lambda_max,condition,lambda_min_accuracy,integral_lambda_min,bound,bound_holds\n\
             0,0,1,0,0,inf,0,0,1,1\n",
        );
        write(
            &t.path().join("dnn/w=3-seed0/metrics.csv"),
            "epoch,t,loss,grad_norm,kink_crossings,chattering\n0,0,NaN,0,0,0\n1,0.1,inf,0,0,0\n",
        );
        let files = build_report(t.path()).unwrap();
        assert_eq!(files.warnings.len(), 1, "{:?}", files.warnings);
        assert!(files.warnings[0].contains("ntk.csv"));
        assert_eq!(files.plots.len(), 16);
        let html = std::fs::read_to_string(&files.html).unwrap();
        assert!(html.contains("ResNet &lt;deep&gt; &amp; &quot;odd&quot;"));
        assert!(!html.contains("<deep>"));
        assert!(html.contains("shard 0/2"));
        assert!(html.contains("ntk.csv: not found"));
        let md = std::fs::read_to_string(&files.markdown).unwrap();
        assert!(md.contains("empty: no finished runs"));
    }

    #[test]
    fn malformed_csv_is_an_error_naming_file_and_line() {
        let t = test_dir("report-malformed");
        fake_reproduction(t.path());
        write(
            &t.path().join("dnn/w=8-seed0/metrics.csv"),
            "epoch,t,loss\n0,0,1\n1,x,2\n",
        );
        let e = build_report(t.path()).unwrap_err().to_string();
        assert!(e.contains("metrics.csv") && e.contains("line 3"), "{e}");
        assert!(!t.path().join(HTML_FILE).exists());
    }

    #[test]
    fn missing_index_is_an_error() {
        let t = test_dir("report-noindex");
        let e = build_report(t.path()).unwrap_err().to_string();
        assert!(e.contains("reproduce.json"), "{e}");
    }

    #[test]
    fn run_dirs_resolve_relative_to_the_index() {
        let t = test_dir("report-dirs");
        let index = fake_reproduction(t.path());
        let r = &index.ablations[0].runs[0];
        assert_eq!(
            run_dir(Path::new("/x/out"), r),
            Path::new("/x/out/dnn/w=2-seed0")
        );
        let mut abs = r.clone();
        abs.dir = PathBuf::from("/elsewhere/run");
        assert_eq!(
            run_dir(Path::new("/x/out"), &abs),
            Path::new("/elsewhere/run")
        );
        assert_eq!(file_stem("a b/c"), "a_b_c");
    }
}
