//! A small reader for the numeric CSV tables a run directory holds (`metrics.csv`, `ntk.csv`):
//! one header row of column names, then rows of f64.
//!
//! The report needs nothing more, and these files are written by gradflow itself with
//! `f64::to_string`, so the format is narrow: comma-separated, no quoting. Values may be `inf`,
//! `-inf`, `infinity` or `NaN` (any case), because a run writes `inf` for the condition number of a
//! singular NTK. Blank lines are skipped and a UTF-8 byte-order mark is ignored.
//!
//! Every malformed line is an [`Error::Input`] that names the file, the 1-based line number and
//! what is wrong. The one tolerated defect is the trace a killed run can leave in a file that grows
//! row by row: a *last* line without a trailing newline and with too few fields is dropped.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// A parsed numeric table.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    /// The file it was read from (used in error messages).
    pub path: PathBuf,
    pub columns: Vec<String>,
    /// Every row has exactly `columns.len()` values.
    pub rows: Vec<Vec<f64>>,
}

impl Table {
    /// Reads and parses `path`.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            Error::input(
                path,
                format!(
                    "not a UTF-8 text file (invalid byte at offset {})",
                    e.valid_up_to()
                ),
            )
        })?;
        Self::parse(text, path)
    }

    /// Parses CSV text; `path` is only used to name the source in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let complete = text.ends_with('\n');
        let lines: Vec<&str> = text.lines().collect();
        let mut columns: Option<Vec<String>> = None;
        let mut rows = Vec::new();
        for (idx, raw) in lines.iter().enumerate() {
            let line_no = idx + 1;
            let line = raw.trim();
            if line.is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            let Some(cols) = columns.as_ref() else {
                if let Some(f) = fields.iter().find(|f| f.is_empty()) {
                    return Err(Error::input(
                        path,
                        format!(
                            "line {line_no}: the header has an empty column name {f:?} in {line:?}"
                        ),
                    ));
                }
                columns = Some(fields.iter().map(|s| s.to_string()).collect());
                continue;
            };
            if fields.len() != cols.len() {
                let last = idx + 1 == lines.len();
                if last && !complete && fields.len() < cols.len() {
                    break; // a row cut short by a killed writer
                }
                return Err(Error::input(
                    path,
                    format!(
                        "line {line_no}: expected {} comma-separated values (columns {}), found {}",
                        cols.len(),
                        cols.join(","),
                        fields.len()
                    ),
                ));
            }
            let mut row = Vec::with_capacity(fields.len());
            for (k, f) in fields.iter().enumerate() {
                let v = parse_number(f).ok_or_else(|| {
                    Error::input(
                        path,
                        format!(
                            "line {line_no}, column {} (`{}`): {f:?} is not a number (accepted: decimal or \
                             scientific notation, inf, -inf, NaN)",
                            k + 1,
                            cols[k]
                        ),
                    )
                })?;
                row.push(v);
            }
            rows.push(row);
        }
        let columns = columns.ok_or_else(|| {
            Error::input(path, "empty file: expected a header row of column names")
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            columns,
            rows,
        })
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The position of column `name`, if present.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }

    /// Column `name` as a vector; the error names the file and the columns it does have.
    pub fn column(&self, name: &str) -> Result<Vec<f64>> {
        let k = self.column_index(name).ok_or_else(|| {
            Error::input(
                &self.path,
                format!(
                    "no column `{name}` (the header has: {})",
                    self.columns.join(", ")
                ),
            )
        })?;
        Ok(self.rows.iter().map(|r| r[k]).collect())
    }

    /// Pairs (x, y) of two columns, row by row.
    pub fn xy(&self, x: &str, y: &str) -> Result<Vec<(f64, f64)>> {
        Ok(self.column(x)?.into_iter().zip(self.column(y)?).collect())
    }
}

/// Parses one field: a float in Rust's syntax, or `inf` / `infinity` / `nan` in any case with an
/// optional sign.
pub fn parse_number(s: &str) -> Option<f64> {
    if let Ok(v) = s.parse::<f64>() {
        return Some(v);
    }
    let (sign, body) = match s.as_bytes().first() {
        Some(b'-') => (-1.0, &s[1..]),
        Some(b'+') => (1.0, &s[1..]),
        _ => (1.0, s),
    };
    let lower = body.to_ascii_lowercase();
    match lower.as_str() {
        "inf" | "infinity" => Some(sign * f64::INFINITY),
        "nan" => Some(f64::NAN),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Table> {
        Table::parse(text, Path::new("run/ntk.csv"))
    }

    #[test]
    fn reads_header_rows_and_special_values() {
        let t =
            parse("\u{feff}epoch,t,condition\n0,0,inf\n\n10,0.5,NaN\n20,1,-Infinity\n30,1.5,1e3\n")
                .unwrap();
        assert_eq!(t.columns, ["epoch", "t", "condition"]);
        assert_eq!(t.len(), 4);
        let c = t.column("condition").unwrap();
        assert_eq!(c[0], f64::INFINITY);
        assert!(c[1].is_nan());
        assert_eq!(c[2], f64::NEG_INFINITY);
        assert_eq!(c[3], 1000.0);
        assert_eq!(t.xy("epoch", "t").unwrap()[1], (10.0, 0.5));
    }

    #[test]
    fn header_only_is_an_empty_table() {
        let t = parse("epoch,t\n").unwrap();
        assert!(t.is_empty());
        assert_eq!(t.column("t").unwrap(), Vec::<f64>::new());
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let e = parse("epoch,t\n0,0\n1,abc\n").unwrap_err().to_string();
        assert!(
            e.contains("run/ntk.csv")
                && e.contains("line 3")
                && e.contains("`t`")
                && e.contains("abc"),
            "{e}"
        );
        let e = parse("epoch,t\n0,0,7\n1,1\n").unwrap_err().to_string();
        assert!(
            e.contains("run/ntk.csv") && e.contains("line 2") && e.contains("expected 2"),
            "{e}"
        );
        let e = parse("").unwrap_err().to_string();
        assert!(e.contains("empty file"), "{e}");
        let e = parse("epoch,t\n")
            .unwrap()
            .column("loss")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no column `loss`") && e.contains("epoch, t"),
            "{e}"
        );
    }

    #[test]
    fn a_cut_short_last_line_is_dropped_but_only_there() {
        let t = parse("epoch,t,loss\n0,0,1\n1,0.1,0.").unwrap();
        assert_eq!(t.len(), 2);
        let t = parse("epoch,t,loss\n0,0,1\n1,0.1").unwrap();
        assert_eq!(t.len(), 1);
        assert!(parse("epoch,t,loss\n0,0\n1,0.1,1\n").is_err());
        assert!(parse("epoch,t,loss\n0,0,1\n1,0.1\n").is_err());
    }

    #[test]
    fn read_reports_missing_files() {
        let e = Table::read(Path::new("/nonexistent/gradflow/metrics.csv")).unwrap_err();
        assert!(matches!(e, Error::Io { .. }));
        assert!(e.to_string().contains("metrics.csv"));
    }
}
