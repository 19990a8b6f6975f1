//! `report.html`: one self-contained page — inline CSS, the plots inlined as SVG, no scripts,
//! fonts, images or links that load anything — so it can be mailed, archived or opened offline.
//!
//! Order: title and scale; the verdicts (a summary line per ablation, then the table of every run,
//! rows that contradict Theorem 3.1 or violate its bound tinted red, then — with several seeds per
//! swept value — the spread across seeds); "How to read this"; one section per ablation with its
//! four figures; warnings about missing files. Every piece of text from the index or the runs is
//! HTML-escaped.

use super::summary::{self, COLUMNS, HOW_TO_READ, SPREAD_COLUMNS, SPREAD_NOTE};
use super::ReportInput;
use std::fmt::Write as _;

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// An id-safe anchor for an ablation name.
fn anchor(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("ablation-{s}")
}

/// The `<svg …>…</svg>` element of an SVG document (drops any XML prolog), sized by CSS.
pub(crate) fn inline_svg(svg: &str, label: &str) -> String {
    let start = svg.find("<svg").unwrap_or(0);
    let body = &svg[start..];
    // role/aria-label make the figure accessible; width/height stay for the aspect ratio.
    body.replacen(
        "<svg",
        &format!("<svg role=\"img\" aria-label=\"{}\"", escape(label)),
        1,
    )
}

pub(crate) const CSS: &str = "
body { font-family: system-ui, -apple-system, 'Segoe UI', 'DejaVu Sans', sans-serif; margin: 2rem auto;
       max-width: 1200px; padding: 0 1rem; color: #1d1d1f; line-height: 1.45; }
h1 { font-size: 1.7rem; margin-bottom: 0.2rem; }
h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; }
.meta { color: #555; margin-top: 0; }
ul.summary li { margin: 0.25rem 0; }
ul.summary li.warn { color: #8a1010; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.82rem; }
th, td { border: 1px solid #d6d6d6; padding: 0.25rem 0.45rem; vertical-align: top; }
th { background: #f2f2f2; position: sticky; top: 0; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.verdict { min-width: 28rem; }
tr.flag td { background: #fde3e3; }
tr.flag td:first-child { border-left: 4px solid #c62828; }
figure { margin: 1.2rem 0 2rem 0; }
figure svg { width: 100%; height: auto; max-width: 1000px; display: block; border: 1px solid #eee; }
figcaption { color: #444; font-size: 0.92rem; margin-top: 0.3rem; max-width: 1000px; }
dt { font-weight: 600; margin-top: 0.6rem; }
dd { margin-left: 1.2rem; }
.warnings li { color: #8a5a00; }
";

/// Columns whose cells are numbers (right-aligned).
fn numeric(k: usize) -> bool {
    matches!(k, 2..=5 | 7..=13)
}

/// Columns of the spread table whose cells are numbers (right-aligned).
fn spread_numeric(k: usize) -> bool {
    k >= 2
}

/// "Across seeds": one row per (ablation, swept value), flagged rows tinted like the run table's.
fn spread_table(h: &mut String, rows: &[summary::SeedSpread]) {
    let _ = writeln!(
        h,
        "<h3 id=\"across-seeds\">Across seeds</h3>\n<p>{}</p>",
        escape(SPREAD_NOTE)
    );
    h.push_str("<div class=\"scroll\"><table>\n<thead><tr>");
    for c in SPREAD_COLUMNS {
        let _ = write!(h, "<th>{}</th>", escape(c));
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    for r in rows {
        h.push_str(if r.flagged() {
            "<tr class=\"flag\">"
        } else {
            "<tr>"
        });
        for (k, cell) in r.cells().iter().enumerate() {
            let class = if spread_numeric(k) {
                " class=\"num\""
            } else {
                ""
            };
            let _ = write!(h, "<td{class}>{}</td>", escape(cell));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody>\n</table></div>\n");
}

/// The whole page.
pub fn render(input: &ReportInput) -> String {
    let index = input.index;
    let mut h = String::new();
    let scale = summary::scale_line(index);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>gradflow report — {}</title>\n<style>{CSS}</style>\n</head>\n<body>\n",
        escape(index.scale.name())
    );
    h.push_str("<h1>gradflow: Theorem 3.1 on trial</h1>\n");
    let _ = writeln!(h, "<p class=\"meta\">{}</p>", escape(&scale));

    if let Some(line) = input.threshold.as_ref().and_then(|t| t.headline.as_ref()) {
        let _ = writeln!(
            h,
            "<p class=\"headline\"><strong>{}</strong> (<a href=\"#threshold\">threshold ablation</a>)</p>",
            escape(line)
        );
    }
    // Verdicts first.
    h.push_str("<h2 id=\"verdicts\">Verdicts</h2>\n");
    let all = summary::overall(index);
    let _ = writeln!(
        h,
        "<p><strong>{} of {} runs consistent with Theorem 3.1</strong>; bound violated in {} run{}; \
         sliding/chattering in {} run{}.</p>",
        all.consistent,
        all.runs,
        all.bound_violation_runs,
        if all.bound_violation_runs == 1 { "" } else { "s" },
        all.sliding_runs,
        if all.sliding_runs == 1 { "" } else { "s" },
    );
    h.push_str("<ul class=\"summary\">\n");
    for s in &input.sections {
        let class = if s.summary.flagged() {
            " class=\"warn\""
        } else {
            ""
        };
        let seeds = s
            .summary
            .seed_line()
            .map(|l| format!("<br>{}", escape(&l)))
            .unwrap_or_default();
        let _ = writeln!(
            h,
            "<li{class}><a href=\"#{}\">{}</a>{seeds}</li>",
            anchor(&s.ablation.name),
            escape(&s.summary.line())
        );
    }
    h.push_str("</ul>\n");
    if input.rows.iter().any(|r| r.flagged) {
        h.push_str(
            "<p>Rows tinted red are runs whose verdict is not consistent with the theorem or whose \
             loss rose above the bound at some checkpoint.</p>\n",
        );
    }
    h.push_str("<div class=\"scroll\"><table>\n<thead><tr>");
    for c in COLUMNS {
        let _ = write!(h, "<th>{}</th>", escape(c));
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    for r in &input.rows {
        h.push_str(if r.flagged {
            "<tr class=\"flag\">"
        } else {
            "<tr>"
        });
        for (k, cell) in r.cells.iter().enumerate() {
            let class = if numeric(k) {
                " class=\"num\""
            } else if k + 1 == COLUMNS.len() {
                " class=\"verdict\""
            } else {
                ""
            };
            let text = if k + 1 == COLUMNS.len() && r.flagged {
                format!("⚠ {}", escape(cell))
            } else {
                escape(cell)
            };
            let _ = write!(h, "<td{class}>{text}</td>");
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody>\n</table></div>\n");
    if summary::has_repeats(&input.spread) {
        spread_table(&mut h, &input.spread);
    }

    h.push_str("<h2 id=\"how-to-read\">How to read this</h2>\n<dl>\n");
    for (term, text) in HOW_TO_READ {
        let _ = writeln!(h, "<dt>{}</dt><dd>{}</dd>", escape(term), escape(text));
    }
    h.push_str("</dl>\n");

    if let Some(t) = &input.threshold {
        h.push_str("<h2 id=\"threshold\">Is p ≥ nm enough? Lemma 3.2 measured</h2>\n");
        let _ = writeln!(h, "<p>{}</p>", escape(&t.line));
        for p in &t.plots {
            let _ = writeln!(
                h,
                "<figure>\n{}\n<figcaption>{} <a href=\"{}\">PNG</a> · <a href=\"{}\">SVG</a></figcaption>\n</figure>",
                inline_svg(&p.svg, &p.caption),
                escape(&p.caption),
                escape(&p.png_file),
                escape(&p.svg_file),
            );
        }
    }

    for s in &input.sections {
        let ab = s.ablation;
        let _ = writeln!(
            h,
            "<h2 id=\"{}\">{}</h2>",
            anchor(&ab.name),
            escape(&ab.title)
        );
        let _ = writeln!(
            h,
            "<p>{} · swept variable: {}{}</p>",
            escape(&s.summary.line()),
            escape(&ab.variable),
            if ab.skip_epochs > 0 {
                format!(
                    " · the loss plot leaves out the first {} epochs",
                    ab.skip_epochs
                )
            } else {
                String::new()
            }
        );
        for p in &s.plots {
            let _ = writeln!(
                h,
                "<figure>\n{}\n<figcaption>{} <a href=\"{}\">PNG</a> · <a href=\"{}\">SVG</a></figcaption>\n</figure>",
                inline_svg(&p.svg, p.kind.caption()),
                escape(p.kind.caption()),
                escape(&p.png_file),
                escape(&p.svg_file),
            );
        }
    }

    if !input.warnings.is_empty() {
        h.push_str("<h2 id=\"warnings\">Warnings</h2>\n<ul class=\"warnings\">\n");
        for w in input.warnings {
            let _ = writeln!(h, "<li>{}</li>", escape(w));
        }
        h.push_str("</ul>\n");
    }
    h.push_str("</body>\n</html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape("a<b & \"c\" 'd'>"),
            "a&lt;b &amp; &quot;c&quot; &#39;d&#39;&gt;"
        );
        assert_eq!(escape("λ_min ≥ 0"), "λ_min ≥ 0");
    }

    #[test]
    fn inline_svg_drops_the_prolog_and_labels_the_image() {
        let s = inline_svg(
            "<?xml version=\"1.0\"?>\n<svg width=\"10\"><g/></svg>",
            "a \"b\"",
        );
        assert!(
            s.starts_with("<svg role=\"img\" aria-label=\"a &quot;b&quot;\" width=\"10\">"),
            "{s}"
        );
    }

    #[test]
    fn anchors_are_id_safe() {
        assert_eq!(anchor("dnn"), "ablation-dnn");
        assert_eq!(anchor("a b\"<"), "ablation-a-b--");
    }
}
