//! Plain-text CSV: graph edge lists (the sample graph a graph layer propagates over) and the
//! `metrics.csv` that grows row by row while training.
//!
//! Edge lists are read strictly — every malformed line is an [`Error::Input`] naming the file and
//! the 1-based line number — because a silently dropped or misread edge changes the model. The
//! format is one edge per line, `i,j`, with 0-based node (sample) indices; blank lines and lines
//! starting with `#` are ignored, whitespace around fields is trimmed, a UTF-8 byte-order mark is
//! skipped, and the first significant line may be a header whose fields are not integers (e.g.
//! `source,target`). Duplicate edges and self-loops are returned as they are; whether they are
//! allowed is the graph code's decision. Edge lists are written atomically.
//!
//! [`CsvWriter`] is deliberately *not* atomic: it appends to a live file so that a long run can
//! be watched (`tail -f metrics.csv`) and a resumed run continues the same file. A crash can
//! leave at most a partially written last line, which [`CsvWriter::append`] trims on reopening.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::io::atomic::write_atomic_with;

/// Reads an edge list over `n` nodes (indices `0..n`) from a CSV file.
pub fn read_edges(path: &Path, n: usize) -> Result<Vec<(usize, usize)>> {
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
    parse_edges(text, n).map_err(|m| Error::input(path, m))
}

fn parse_edges(text: &str, n: usize) -> std::result::Result<Vec<(usize, usize)>, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut edges = Vec::new();
    let mut first = true;
    for (idx, raw) in text.lines().enumerate() {
        let line_no = idx + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if std::mem::take(&mut first) && fields.iter().all(|f| !looks_numeric(f)) {
            continue; // header, e.g. `source,target`
        }
        if fields.len() != 2 {
            return Err(format!(
                "line {line_no}: expected two comma-separated node indices `i,j`, found {} field{} in {line:?}",
                fields.len(),
                if fields.len() == 1 { "" } else { "s" }
            ));
        }
        let i = parse_index(fields[0], line_no, n)?;
        let j = parse_index(fields[1], line_no, n)?;
        edges.push((i, j));
    }
    Ok(edges)
}

/// Whether a field starts like a number (`3`, `-1`, `1.5`, `0 1`), so that a line containing
/// one is data, not a header. Header names such as `source`, `node1`, `inf` do not.
fn looks_numeric(f: &str) -> bool {
    let b = f.trim_start_matches(['+', '-', '.']).as_bytes();
    b.first().is_some_and(u8::is_ascii_digit)
}

fn parse_index(field: &str, line_no: usize, n: usize) -> std::result::Result<usize, String> {
    let out_of_range = |shown: &str| {
        format!(
            "node index {shown} on line {line_no} is out of range: the data has n = {n} samples, indices are 0-based"
        )
    };
    match field.parse::<usize>() {
        Ok(i) if i < n => Ok(i),
        Ok(i) => Err(out_of_range(&i.to_string())),
        // All digits but too large for usize: still just out of range.
        Err(_) if !field.is_empty() && field.bytes().all(|b| b.is_ascii_digit()) => {
            Err(out_of_range(field))
        }
        Err(_) => Err(format!(
            "line {line_no}: {field:?} is not a node index (expected a non-negative integer; indices are 0-based)"
        )),
    }
}

/// Writes an edge list with a `source,target` header, atomically.
pub fn write_edges(path: &Path, edges: &[(usize, usize)]) -> Result<()> {
    write_atomic_with(path, |w| {
        w.write_all(b"source,target\n")?;
        for (i, j) in edges {
            writeln!(w, "{i},{j}")?;
        }
        Ok(())
    })
}

/// Appends rows of numbers to a CSV file with a fixed header — for `metrics.csv`.
///
/// Values are written with Rust's `{}` formatting of `f64`, the shortest text that parses back
/// to the identical value (no exponent notation; `NaN`, `inf`, `-inf` for non-finite values).
/// Rows are buffered: call [`CsvWriter::flush`] at points where the file should be up to date
/// (the buffer is also flushed, ignoring errors, when the writer is dropped).
///
/// Not atomic by design: see the module documentation.
#[derive(Debug)]
pub struct CsvWriter {
    path: PathBuf,
    out: BufWriter<File>,
    columns: usize,
}

impl CsvWriter {
    /// Creates (or truncates) `path` and writes the header line.
    pub fn create(path: &Path, header: &[&str]) -> Result<Self> {
        let file = File::create(path).map_err(|e| Error::io(path, e))?;
        let mut w = Self::new(path, file, header.len());
        w.out
            .write_all(header_line(header).as_bytes())
            .map_err(|e| Error::io(path, e))?;
        w.flush()?;
        Ok(w)
    }

    /// Opens `path` for appending, e.g. to continue the metrics of a resumed run.
    ///
    /// A missing or empty file gets the header. An existing file must start with exactly this
    /// header (otherwise [`Error::Input`]: the columns would not line up); a partially written
    /// last line left by a crash is removed.
    pub fn append(path: &Path, header: &[&str]) -> Result<Self> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        let mut existing = Vec::new();
        file.read_to_end(&mut existing)
            .map_err(|e| Error::io(path, e))?;
        let expected = header_line(header);
        let mut w;
        if existing.is_empty() {
            w = Self::new(path, file, header.len());
            w.out
                .write_all(expected.as_bytes())
                .map_err(|e| Error::io(path, e))?;
        } else {
            let first_end = existing.iter().position(|&b| b == b'\n');
            let first = &existing[..first_end.map_or(existing.len(), |e| e + 1)];
            let first_text = String::from_utf8_lossy(first);
            if first_text.trim_end_matches(['\r', '\n']) != expected.trim_end() {
                return Err(Error::input(
                    path,
                    format!(
                        "cannot append: the file's header is {:?} but this run writes {:?}; use a fresh output directory or remove the file",
                        first_text.trim_end(),
                        expected.trim_end()
                    ),
                ));
            }
            // Drop a torn last line (no trailing newline) so new rows start cleanly.
            if existing.last() != Some(&b'\n') {
                let keep = existing
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |p| p + 1);
                file.set_len(keep as u64).map_err(|e| Error::io(path, e))?;
            }
            w = Self::new(path, file, header.len());
        }
        w.flush()?;
        Ok(w)
    }

    fn new(path: &Path, file: File, columns: usize) -> Self {
        Self {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
            columns,
        }
    }

    /// Appends one row; `values` must have one entry per header column.
    pub fn row(&mut self, values: &[f64]) -> Result<()> {
        if values.len() != self.columns {
            return Err(Error::Invalid(format!(
                "{}: a row of {} values does not match the {} header columns",
                self.path.display(),
                values.len(),
                self.columns
            )));
        }
        let mut line = String::with_capacity(values.len() * 12);
        for (k, v) in values.iter().enumerate() {
            if k > 0 {
                line.push(',');
            }
            line.push_str(&v.to_string());
        }
        line.push('\n');
        self.out
            .write_all(line.as_bytes())
            .map_err(|e| Error::io(&self.path, e))
    }

    /// Writes buffered rows through to the file.
    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(|e| Error::io(&self.path, e))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The header as a CSV line, quoting names that contain commas, quotes or line breaks.
fn header_line(header: &[&str]) -> String {
    let fields: Vec<String> = header
        .iter()
        .map(|h| {
            if h.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", h.replace('"', "\"\""))
            } else {
                h.to_string()
            }
        })
        .collect();
    format!("{}\n", fields.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::test_dir;

    #[test]
    fn reads_header_comments_blanks_and_whitespace() {
        let dir = test_dir("csv-read");
        let p = dir.path().join("edges.csv");
        let text =
            "\u{feff}# kNN graph, k = 2\nsource, target\r\n\n0,1\n  2 , 3  \n# comment\n\n4,4\r\n";
        std::fs::write(&p, text).unwrap();
        let edges = read_edges(&p, 5).unwrap();
        assert_eq!(edges, vec![(0, 1), (2, 3), (4, 4)]);
    }

    #[test]
    fn header_is_optional() {
        assert_eq!(parse_edges("0,1\n1,2\n", 3).unwrap(), vec![(0, 1), (1, 2)]);
        assert_eq!(parse_edges("", 3).unwrap(), vec![]);
        assert_eq!(parse_edges("i,j\n", 3).unwrap(), vec![]);
    }

    #[test]
    fn out_of_range_names_line_and_n() {
        let dir = test_dir("csv-range");
        let p = dir.path().join("edges.csv");
        let mut text = String::from("source,target\n# c\n");
        for k in 0..4 {
            text.push_str(&format!("{k},{}\n", k + 1));
        }
        text.push_str("5,1200\n");
        std::fs::write(&p, &text).unwrap();
        let err = read_edges(&p, 1000).unwrap_err();
        assert!(matches!(err, Error::Input { .. }));
        let msg = err.to_string();
        assert!(
            msg.contains(
                "node index 1200 on line 7 is out of range: the data has n = 1000 samples, indices are 0-based"
            ),
            "{msg}"
        );
        assert!(msg.starts_with(&p.display().to_string()), "{msg}");

        let msg = parse_edges("0,99999999999999999999999999\n", 10).unwrap_err();
        assert!(
            msg.contains("99999999999999999999999999 on line 1 is out of range"),
            "{msg}"
        );
    }

    #[test]
    fn malformed_lines_name_the_line() {
        let cases = [
            ("source,target\n0,1\n1,2,3\n", "line 3", "found 3 fields"),
            ("0 1\n", "line 1", "found 1 field "),
            ("0,1\n1,x\n", "line 2", "\"x\" is not a node index"),
            ("0,-1\n", "line 1", "\"-1\" is not a node index"),
            ("0,1.5\n", "line 1", "\"1.5\" is not a node index"),
            (
                "# only a comment\n\n1,\n",
                "line 3",
                "\"\" is not a node index",
            ),
            // A numeric first line is data, not a header, so its errors are reported.
            ("1.0,2.0\n", "line 1", "\"1.0\" is not a node index"),
        ];
        for (text, line, what) in cases {
            let msg = parse_edges(text, 10).unwrap_err();
            assert!(msg.contains(line) && msg.contains(what), "{text:?}: {msg}");
        }
        let dir = test_dir("csv-utf8");
        let p = dir.path().join("bin.csv");
        std::fs::write(&p, b"0,1\n\xff\xfe\n").unwrap();
        assert!(matches!(read_edges(&p, 2), Err(Error::Input { .. })));
    }

    #[test]
    fn write_then_read_edges() {
        let dir = test_dir("csv-rt");
        let p = dir.path().join("graph.csv");
        let edges = vec![(0, 1), (1, 0), (2, 2), (7, 3)];
        write_edges(&p, &edges).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.starts_with("source,target\n0,1\n"), "{text}");
        assert_eq!(read_edges(&p, 8).unwrap(), edges);
        assert!(read_edges(&p, 7).is_err());
    }

    #[test]
    fn csv_writer_round_trips_floats_and_appends() {
        let dir = test_dir("csv-writer");
        let p = dir.path().join("metrics.csv");
        let rows = [
            [0.0, 0.1 + 0.2, 1e-300],
            [1.0, f64::MAX, -2.5e-7],
            [2.0, f64::NAN, f64::INFINITY],
        ];
        {
            let mut w = CsvWriter::create(&p, &["epoch", "loss", "grad norm"]).unwrap();
            for r in &rows[..2] {
                w.row(r).unwrap();
            }
            w.flush().unwrap();
            assert!(matches!(w.row(&[1.0]), Err(Error::Invalid(_))));
            assert_eq!(w.path(), p.as_path());
        }
        {
            let mut w = CsvWriter::append(&p, &["epoch", "loss", "grad norm"]).unwrap();
            w.row(&rows[2]).unwrap();
        } // dropped without flush: BufWriter flushes on drop

        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0], "epoch,loss,grad norm");
        // Plain decimal notation, never `1e-300`.
        assert!(!lines[1..].iter().any(|l| l.contains('e')), "{text}");
        for (line, want) in lines[1..].iter().zip(&rows) {
            let got: Vec<f64> = line.split(',').map(|f| f.parse().unwrap()).collect();
            for (g, w) in got.iter().zip(want) {
                assert!(g == w || (g.is_nan() && w.is_nan()), "{line}");
            }
        }

        let err = CsvWriter::append(&p, &["epoch", "loss"]).unwrap_err();
        assert!(err.to_string().contains("header"), "{err}");
    }

    #[test]
    fn append_trims_torn_last_line_and_creates_missing_file() {
        let dir = test_dir("csv-torn");
        let p = dir.path().join("metrics.csv");
        std::fs::write(&p, "a,b\n1,2\n3,").unwrap();
        let mut w = CsvWriter::append(&p, &["a", "b"]).unwrap();
        w.row(&[5.0, 6.0]).unwrap();
        w.flush().unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "a,b\n1,2\n5,6\n");

        let q = dir.path().join("new.csv");
        let mut w = CsvWriter::append(&q, &["x", "y,z"]).unwrap();
        w.row(&[0.5, -1.0]).unwrap();
        w.flush().unwrap();
        assert_eq!(std::fs::read_to_string(&q).unwrap(), "x,\"y,z\"\n0.5,-1\n");
        drop(w);
        assert!(CsvWriter::append(&q, &["x", "y,z"]).is_ok());
    }
}
