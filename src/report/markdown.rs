//! `report.md`: the same report as `report.html` in GitHub-flavoured Markdown, for reading in a
//! repository or pasting into an issue. The plots are linked as the PNGs in `plots/` (relative
//! paths), and runs that contradict Theorem 3.1 or violate its bound carry a bold "⚠" in the
//! first column of the run table (as do the configurations of the "Across seeds" table, shown
//! with several seeds per swept value, where some seed does). Text from the index is escaped so it cannot break the table or
//! turn into markup.

use super::summary::{self, COLUMNS, HOW_TO_READ, SPREAD_COLUMNS, SPREAD_NOTE};
use super::ReportInput;
use std::fmt::Write as _;

/// Escapes Markdown punctuation (and makes the text one line), for table cells and prose.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '#' | '!' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            _ => out.push(c),
        }
    }
    out
}

/// The whole document.
pub fn render(input: &ReportInput) -> String {
    let index = input.index;
    let mut m = String::new();
    m.push_str("# gradflow: Theorem 3.1 on trial\n\n");
    let _ = writeln!(m, "{}\n", escape(&summary::scale_line(index)));

    if let Some(line) = input.threshold.as_ref().and_then(|t| t.headline.as_ref()) {
        let _ = writeln!(m, "**{}**\n", escape(line));
    }
    m.push_str("## Verdicts\n\n");
    let all = summary::overall(index);
    let _ = writeln!(
        m,
        "**{} of {} runs consistent with Theorem 3.1**; bound violated in {} run{}; sliding/chattering in {} run{}.\n",
        all.consistent,
        all.runs,
        all.bound_violation_runs,
        if all.bound_violation_runs == 1 { "" } else { "s" },
        all.sliding_runs,
        if all.sliding_runs == 1 { "" } else { "s" },
    );
    for s in &input.sections {
        let mark = if s.summary.flagged() { "⚠ " } else { "" };
        let _ = writeln!(m, "- {mark}{}", escape(&s.summary.line()));
        if let Some(l) = s.summary.seed_line() {
            let _ = writeln!(m, "  - {}", escape(&l));
        }
    }
    m.push('\n');
    if input.rows.iter().any(|r| r.flagged) {
        m.push_str(
            "Runs marked with a bold ⚠ have a verdict that is not consistent with the theorem, or a loss that \
             rose above the bound at some checkpoint.\n\n",
        );
    }
    let _ = writeln!(m, "| | {} |", COLUMNS.map(escape).join(" | "));
    let _ = writeln!(m, "|---|{}", "---|".repeat(COLUMNS.len()));
    for r in &input.rows {
        let flag = if r.flagged { "**⚠**" } else { "" };
        let cells: Vec<String> = r.cells.iter().map(|c| escape(c)).collect();
        let _ = writeln!(m, "| {flag} | {} |", cells.join(" | "));
    }
    m.push('\n');
    if summary::has_repeats(&input.spread) {
        m.push_str("### Across seeds\n\n");
        let _ = writeln!(m, "{}\n", escape(SPREAD_NOTE));
        let _ = writeln!(m, "| | {} |", SPREAD_COLUMNS.map(escape).join(" | "));
        let _ = writeln!(m, "|---|{}", "---|".repeat(SPREAD_COLUMNS.len()));
        for r in &input.spread {
            let flag = if r.flagged() { "**⚠**" } else { "" };
            let cells: Vec<String> = r.cells().iter().map(|c| escape(c)).collect();
            let _ = writeln!(m, "| {flag} | {} |", cells.join(" | "));
        }
        m.push('\n');
    }

    m.push_str("## How to read this\n\n");
    for (term, text) in HOW_TO_READ {
        let _ = writeln!(m, "**{}.** {}\n", escape(term), escape(text));
    }

    if let Some(t) = &input.threshold {
        m.push_str("## Is p ≥ nm enough? Lemma 3.2 measured\n\n");
        let _ = writeln!(m, "{}\n", escape(&t.line));
        for p in &t.plots {
            let _ = writeln!(m, "![{}]({})\n", escape(&p.caption), p.png_file);
            let _ = writeln!(m, "{}\n", escape(&p.caption));
        }
    }

    for s in &input.sections {
        let ab = s.ablation;
        let _ = writeln!(m, "## {}\n", escape(&ab.title));
        let _ = write!(
            m,
            "{} · swept variable: {}",
            escape(&s.summary.line()),
            escape(&ab.variable)
        );
        if ab.skip_epochs > 0 {
            let _ = write!(
                m,
                " · the loss plot leaves out the first {} epochs",
                ab.skip_epochs
            );
        }
        m.push_str("\n\n");
        for p in &s.plots {
            let alt = format!("{} {}", ab.name, p.kind.suffix());
            let _ = writeln!(
                m,
                "![{}]({})\n\n*{}* ([SVG]({}))\n",
                escape(&alt),
                url_path(&p.png_file),
                escape(p.kind.caption()),
                url_path(&p.svg_file)
            );
        }
    }

    if !input.warnings.is_empty() {
        m.push_str("## Warnings\n\n");
        for w in input.warnings {
            let _ = writeln!(m, "- {}", escape(w));
        }
        m.push('\n');
    }
    m
}

/// A relative path usable as a Markdown link target (spaces and parentheses percent-encoded).
fn url_path(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    for c in p.chars() {
        match c {
            ' ' => out.push_str("%20"),
            '(' => out.push_str("%28"),
            ')' => out.push_str("%29"),
            '<' => out.push_str("%3C"),
            '>' => out.push_str("%3E"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_table_breaking_and_markup_characters() {
        assert_eq!(escape("a|b"), "a\\|b");
        assert_eq!(escape("λ_min *x* <1>"), "λ\\_min \\*x\\* \\<1\\>");
        assert_eq!(escape("two\nlines"), "two lines");
    }

    #[test]
    fn link_targets_are_encoded() {
        assert_eq!(url_path("plots/a b(1).png"), "plots/a%20b%281%29.png");
    }
}
