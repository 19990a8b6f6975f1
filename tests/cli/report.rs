//! The report of a single run directory (`gradflow report DIR` on what `train` writes, and the
//! report `train` builds itself): files written and non-empty for a GD and a flow run, the key
//! numbers of `summary.json` read back from the HTML, the expected series in each figure, a run
//! without `ntk.csv` still reported with a note, and a clear error for a directory that is neither
//! a run nor a reproduction. Tiny runs (n = 10), well under a second each.

use crate::common;

use gradflow::config::Config;
use gradflow::report::build_report;
use gradflow::run::{self, RunOptions};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn tmp(tag: &str) -> PathBuf {
    common::fresh_dir("run-report", tag)
}

const GD: &str = r#"
seed = 1
[data]
kind = "ball"
n = 10
d = 3
m = 2
[model]
preset = "dnn"
hidden = [12]
[train]
lr = 0.2
epochs = 60
[ntk]
every = 20
"#;

const FLOW: &str = r#"
seed = 2
[data]
kind = "ball"
n = 10
d = 3
m = 2
[model]
preset = "dnn"
hidden = [12]
activation = "relu"
[train]
solver = "flow"
t_end = 2.0
outputs = 20
compare_gd = true
lr = 0.05
[ntk]
every = 5
"#;

/// Trains `config` into `<dir>/run` through the library and returns the run directory.
fn train(dir: &Path, config: &str) -> PathBuf {
    let path = dir.join("cfg.toml");
    std::fs::write(&path, config).unwrap();
    let prep = run::prepare(&Config::from_path(&path).unwrap()).unwrap();
    let out = dir.join("run");
    run::execute(&prep, &out, &RunOptions::default()).unwrap();
    out
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn summary(dir: &Path) -> Value {
    serde_json::from_str(&read(&dir.join("summary.json"))).unwrap()
}

fn sci(v: &Value) -> String {
    format!(
        "{:.3e}",
        v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
    )
}

/// Every SVG and PNG of `stems` exists and is non-empty; returns the SVG texts.
fn plots(dir: &Path, stems: &[&str]) -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(dir.join("plots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    let mut want: Vec<String> = stems
        .iter()
        .flat_map(|s| [format!("{s}.png"), format!("{s}.svg")])
        .collect();
    want.sort();
    assert_eq!(found, want);
    for f in &found {
        let bytes = std::fs::read(dir.join("plots").join(f)).unwrap();
        assert!(bytes.len() > 1000, "{f}: {} bytes", bytes.len());
    }
    stems
        .iter()
        .map(|s| read(&dir.join(format!("plots/{s}.svg"))))
        .collect()
}

/// A text element of the SVG is exactly `text` (plotters writes each text on its own line).
fn has_text(svg: &str, text: &str) -> bool {
    svg.lines().any(|l| l.trim() == text)
}

/// The html is self-contained: the only URL is the SVG namespace.
fn assert_self_contained(html: &str) {
    assert!(html.starts_with("<!DOCTYPE html>"));
    for (i, _) in html.match_indices("http") {
        assert!(
            html[i..].starts_with("http://www.w3.org/2000/svg"),
            "external URL at {}",
            &html[i..(i + 60).min(html.len())]
        );
    }
}

#[test]
fn gd_run_report_states_the_summary_and_draws_the_gd_series() {
    let t = tmp("gd");
    let dir = train(&t, GD);
    let files = build_report(&dir).unwrap();
    assert!(files.warnings.is_empty(), "{:?}", files.warnings);
    assert_eq!(files.html, dir.join("report.html"));
    let svgs = plots(&dir, &["bound", "kinks", "lambda_min", "loss"]);
    let (bound, kinks, lambda, loss) = (&svgs[0], &svgs[1], &svgs[2], &svgs[3]);
    assert!(has_text(loss, "loss L(t)") && has_text(loss, "linearised L_lin(t)"));
    assert!(!loss.contains("GD loss"), "a GD run has no GD comparison");
    assert!(lambda.contains("λ_min(H(t))"));
    assert!(has_text(bound, "loss L(t)") && has_text(bound, "bound"));
    assert!(
        !has_text(bound, "bound violated")
            || !summary(&dir)["bound_violations"]
                .as_array()
                .unwrap()
                .is_empty()
    );
    assert!(has_text(kinks, "crossings per epoch") && has_text(kinks, "chattering per epoch"));
    assert!(!kinks.contains("pinned"));

    let s = summary(&dir);
    let html = read(&files.html);
    assert_self_contained(&html);
    assert_eq!(html.matches("<svg").count(), 4);
    for needle in [
        format!("<td>p (parameters)</td><td>{}</td>", s["p"]),
        format!(
            "<td>nm (samples × outputs)</td><td>{} = 10 × 2</td>",
            s["nm"]
        ),
        format!(
            "<td>λ_min(H(0))</td><td>{}</td>",
            sci(&s["ntk_initial"]["lambda_min"])
        ),
        format!(
            "<td>λ_min(H) at the last checkpoint</td><td>{}</td>",
            sci(&s["ntk_final"]["lambda_min"])
        ),
        format!(
            "<td>certified rate 4c·min λ_min</td><td>{}</td>",
            sci(&s["certified_rate"])
        ),
        format!(
            "<td>kink crossings</td><td>{}</td>",
            s["kinks"]["total_crossings"]
        ),
        format!(
            "<td>max |L − L_lin|/L (linearised gap)</td><td>{}</td>",
            sci(&s["kernel"]["max_relative_gap_linearised"])
        ),
        format!(
            "<td>NTK drift ‖H(t) − H(0)‖_F/‖H(0)‖_F at the end</td><td>{}</td>",
            sci(&s["kernel"]["ntk_drift_final"])
        ),
        format!(
            "<td>bound violations</td><td>{} of {} checkpoints",
            s["bound_violations"].as_array().unwrap().len(),
            s["bound_checks"]
        ),
    ] {
        assert!(html.contains(&needle), "missing {needle}");
    }
    assert!(!html.contains("Flow solver"));
    // The verdict: bound and chattering as summary.json has them.
    let checks = s["bound_checks"].as_u64().unwrap();
    assert_eq!(checks, 4, "checkpoints at epochs 0, 20, 40, 60");
    if s["bound_violations"].as_array().unwrap().is_empty() {
        assert!(html.contains(&format!(
            "held at all {checks} checkpoints along the trajectory"
        )));
    } else {
        assert!(html.contains("VIOLATED"));
    }
    let chatter = s["kinks"]["steps_with_chattering"].as_u64().unwrap();
    assert_eq!(html.contains("GD CHATTERED at kinks"), chatter > 0);
    assert_eq!(html.contains("no chattering at kinks"), chatter == 0);

    let md = read(&files.markdown);
    assert!(md.contains("## Verdict") && md.contains("(plots/loss.png)"));
    assert!(md.contains(&format!("| p (parameters) | {} |", s["p"])));
    // Rebuilding gives the same page (no dates).
    build_report(&dir).unwrap();
    assert_eq!(read(&files.html), html);
}

#[test]
fn flow_run_report_shows_sliding_and_the_gd_comparison() {
    let t = tmp("flow");
    let dir = train(&t, FLOW);
    let files = build_report(&dir).unwrap();
    assert!(files.warnings.is_empty(), "{:?}", files.warnings);
    let svgs = plots(&dir, &["bound", "kinks", "lambda_min", "loss"]);
    let (kinks, loss) = (&svgs[1], &svgs[3]);
    for legend in ["loss L(t)", "linearised L_lin(t)", "GD loss (t = k·η)"] {
        assert!(has_text(loss, legend), "{legend}");
    }
    assert!(has_text(kinks, "pinned (sliding) at t") && has_text(kinks, "crossings per interval"));
    assert!(!kinks.contains("chattering"));

    let s = summary(&dir);
    let f = &s["flow"];
    let html = read(&files.html);
    assert_self_contained(&html);
    for needle in [
        format!(
            "<td>gradient evaluations</td><td>{}</td>",
            f["counts"]["gradients"]
        ),
        format!(
            "<td>gradient-equivalents of work</td><td>{:.0}</td>",
            f["gradient_equivalents"].as_f64().unwrap()
        ),
        format!(
            "<td>kink crossings</td><td>{}</td>",
            f["events"]["crossings"]
        ),
        format!(
            "<td>slides (sliding intervals started)</td><td>{}</td>",
            f["events"]["slides"]
        ),
        format!(
            "<td>releases from sliding</td><td>{}</td>",
            f["events"]["releases"]
        ),
        format!(
            "<td>entries that slid</td><td>{}</td>",
            f["events"]["entries_slid"]
        ),
        format!(
            "<td>max pinned at once</td><td>{}</td>",
            f["events"]["max_pinned"]
        ),
        format!(
            "<td>max ‖θ_GD − θ_GF‖/‖θ_GF‖</td><td>{}</td>",
            sci(&f["gd_comparison"]["max_theta_gap"])
        ),
        format!(
            "<td>max |L_GD − L_GF|/L_GF</td><td>{}</td>",
            sci(&f["gd_comparison"]["max_relative_loss_gap"])
        ),
        format!("<td>p (parameters)</td><td>{}</td>", s["p"]),
    ] {
        assert!(html.contains(&needle), "missing {needle}");
    }
    let slides = f["events"]["slides"].as_u64().unwrap();
    assert_eq!(html.contains("the trajectory SLID along kinks"), slides > 0);
    assert_eq!(html.contains("no sliding: all"), slides == 0);
    assert!(html.contains("Kinks along the flow") && html.contains("GD against the flow"));
}

#[test]
fn a_run_without_ntk_csv_is_reported_with_a_note() {
    let t = tmp("no-ntk");
    let dir = train(&t, GD);
    build_report(&dir).unwrap();
    std::fs::remove_file(dir.join("ntk.csv")).unwrap();
    let files = build_report(&dir).unwrap();
    assert_eq!(files.warnings.len(), 1, "{:?}", files.warnings);
    assert!(files.warnings[0].contains("ntk.csv: not found"));
    plots(&dir, &["kinks", "loss"]);
    let html = read(&files.html);
    assert_eq!(html.matches("<svg").count(), 2);
    assert!(html.contains("<h2 id=\"notes\">Notes</h2>") && html.contains("ntk.csv: not found"));
    assert!(read(&files.markdown).contains("## Notes"));
}

#[test]
fn a_directory_that_is_neither_run_nor_reproduction_is_a_clear_error() {
    let t = tmp("neither");
    let e = build_report(&t).unwrap_err().to_string();
    for f in ["reproduce.json", "summary.json", "metrics.csv"] {
        assert!(e.contains(f), "{e}");
    }
    assert!(e.contains("neither a reproduce directory"), "{e}");
    // Half a run: the error names the file that is missing.
    std::fs::write(t.join("summary.json"), "{}").unwrap();
    let e = build_report(&t).unwrap_err().to_string();
    assert!(
        e.contains("not a run directory — metrics.csv missing"),
        "{e}"
    );
    assert!(!t.join("report.html").exists());
}
