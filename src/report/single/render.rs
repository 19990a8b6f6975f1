//! A single run's report as documents: `report.html` (one self-contained page with the reproduce
//! report's CSS, the figures inlined as SVG, nothing loaded from elsewhere) and `report.md`
//! (GitHub-flavoured Markdown linking the PNGs, or the SVGs when no PNG was drawn).
//!
//! Order in both: title and run line; the verdict (tinted when the bound was violated or the run
//! is not consistent with Theorem 3.1); the key numbers, group by group; the figures; notes about
//! missing files or columns. All text is escaped for its format.

use super::RunReportInput;
use crate::report::html::{escape as h, inline_svg, CSS};
use crate::report::markdown::escape as md;
use std::fmt::Write as _;

fn run_line(input: &RunReportInput) -> String {
    let s = input.summary;
    format!(
        "{} · {} · p = {}, nm = {} · {}",
        s.preset,
        s.activation,
        s.p,
        s.nm,
        if s.flow.is_some() {
            "gradient flow"
        } else {
            "gradient descent"
        }
    )
}

/// `report.html`.
pub fn html(input: &RunReportInput) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>gradflow run report — {}</title>\n<style>{CSS}\
         .verdict {{ padding: 0.6rem 0.9rem; border-left: 4px solid #2e7d32; background: #eef7ee; }}\n\
         .verdict.flag {{ border-left-color: #c62828; background: #fde3e3; }}\n\
         table.facts td:first-child {{ min-width: 22rem; }}\n</style>\n</head>\n<body>\n",
        h(&input.name)
    );
    let _ = writeln!(o, "<h1>gradflow run: {}</h1>", h(&input.name));
    let _ = writeln!(o, "<p class=\"meta\">{}</p>", h(&run_line(input)));
    let v = &input.verdict;
    let _ = writeln!(
        o,
        "<h2 id=\"verdict\">Verdict</h2>\n<p class=\"verdict{}\"><strong>{}</strong><br>Theorem 3.1: {}</p>",
        if v.flagged() { " flag" } else { "" },
        h(&v.line),
        h(&v.theorem)
    );
    o.push_str("<h2 id=\"numbers\">Key numbers</h2>\n");
    for g in &input.facts {
        let _ = writeln!(
            o,
            "<h3>{}</h3>\n<table class=\"facts\"><tbody>",
            h(g.heading)
        );
        for (label, value) in &g.rows {
            let _ = writeln!(o, "<tr><td>{}</td><td>{}</td></tr>", h(label), h(value));
        }
        o.push_str("</tbody></table>\n");
    }
    o.push_str("<h2 id=\"figures\">Figures</h2>\n");
    let flow = input.summary.flow.is_some();
    for p in &input.plots {
        let caption = p.kind.caption(flow);
        let png = p
            .png_file
            .as_ref()
            .map(|f| format!("<a href=\"{}\">PNG</a> · ", h(f)))
            .unwrap_or_default();
        let _ = writeln!(
            o,
            "<figure>\n{}\n<figcaption>{} {png}<a href=\"{}\">SVG</a></figcaption>\n</figure>",
            inline_svg(&p.svg, caption),
            h(caption),
            h(&p.svg_file),
        );
    }
    if !input.warnings.is_empty() {
        o.push_str("<h2 id=\"notes\">Notes</h2>\n<ul class=\"warnings\">\n");
        for w in input.warnings {
            let _ = writeln!(o, "<li>{}</li>", h(w));
        }
        o.push_str("</ul>\n");
    }
    o.push_str("</body>\n</html>\n");
    o
}

/// `report.md`.
pub fn markdown(input: &RunReportInput) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# gradflow run: {}\n", md(&input.name));
    let _ = writeln!(o, "{}\n", md(&run_line(input)));
    let v = &input.verdict;
    o.push_str("## Verdict\n\n");
    let mark = if v.flagged() { "**⚠** " } else { "" };
    let _ = writeln!(o, "{mark}**{}**\n", md(&v.line));
    let _ = writeln!(o, "Theorem 3.1: {}\n", md(&v.theorem));
    o.push_str("## Key numbers\n\n");
    for g in &input.facts {
        let _ = writeln!(o, "### {}\n\n| | |\n|---|---|", md(g.heading));
        for (label, value) in &g.rows {
            let _ = writeln!(o, "| {} | {} |", md(label), md(value));
        }
        o.push('\n');
    }
    o.push_str("## Figures\n\n");
    let flow = input.summary.flow.is_some();
    for p in &input.plots {
        let image = p.png_file.as_deref().unwrap_or(&p.svg_file);
        let _ = writeln!(
            o,
            "![{}]({})\n\n*{}* ([SVG]({}))\n",
            p.kind.stem(),
            image,
            md(p.kind.caption(flow)),
            p.svg_file
        );
    }
    if !input.warnings.is_empty() {
        o.push_str("## Notes\n\n");
        for w in input.warnings {
            let _ = writeln!(o, "- {}", md(w));
        }
        o.push('\n');
    }
    o
}
