//! Tests of the reproduce report: a hand-made reproduction (two DNN runs with known numbers)
//! through [`super::build_report`], several seeds, degenerate and malformed inputs; the
//! fixtures are shared with the other report modules' tests.

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
    assert!(
        html.contains("<tr class=\"flag\"><td>dnn</td><td>width = 2</td><td class=\"num\">2</td>")
    );
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
