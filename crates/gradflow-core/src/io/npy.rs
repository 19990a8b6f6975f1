//! NumPy `.npy` reading and writing for the data matrices (inputs X, targets Y) and for result
//! vectors and matrices of a run (spectra, predictions).
//!
//! Reading accepts what researchers actually save with `np.save`: float64 or float32 (either byte
//! order; float32 is widened to f64), 2-D `(rows, cols)` or 1-D `(n,)` arrays (a 1-D array becomes
//! an `(n, 1)` column), in C or Fortran order (converted to row-major). Everything else — integer
//! or structured dtypes, 0-d or ≥3-d arrays, truncated or foreign files — is rejected with an
//! [`Error::Input`] that names the file and says what was found and what is accepted.
//!
//! The header (a Python dict literal) is parsed here by a small bounded parser rather than by
//! `npyz`, because the reader must never panic on malformed bytes and `npyz` 0.9 overflows (and
//! panics under overflow checks) on absurd shapes such as `(2**32, 2**32, 2**32)`; all size
//! arithmetic below is checked.
//!
//! Writing always produces float64, little-endian, C-order files (format version 1.0, or 2.0 if
//! the header would not fit), written atomically through [`write_atomic`].

use std::path::Path;

use crate::error::{Error, Result};
use crate::io::atomic::write_atomic;

const MAGIC: &[u8] = b"\x93NUMPY";

/// Reads a float64/float32 `.npy` file as `(row-major data, rows, cols)`.
///
/// A 1-D array of length n is returned as an `(n, 1)` matrix.
pub fn read_matrix(path: &Path) -> Result<(Vec<f64>, usize, usize)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_matrix(&bytes).map_err(|m| Error::input(path, m))
}

/// Writes a `rows × cols` row-major matrix as a 2-D float64 little-endian C-order `.npy` file,
/// atomically (`numpy.load` reads it as a `(rows, cols)` float64 array).
///
/// ```
/// use gradflow_core::io::npy::{read_matrix, write_matrix};
///
/// let dir = std::env::temp_dir().join(format!("gradflow-doc-npy-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("x.npy");
/// write_matrix(&path, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3)?;
/// // 6 data values after numpy's header (magic, version, length, dict padded to 64 bytes).
/// assert_eq!(std::fs::metadata(&path).unwrap().len(), 128 + 6 * 8);
/// assert_eq!(read_matrix(&path)?, (vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3));
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), gradflow_core::Error>(())
/// ```
pub fn write_matrix(path: &Path, data: &[f64], rows: usize, cols: usize) -> Result<()> {
    if rows.checked_mul(cols) != Some(data.len()) {
        return Err(Error::Invalid(format!(
            "{}: cannot write a {rows} × {cols} matrix from {} values",
            path.display(),
            data.len()
        )));
    }
    write_atomic(path, &to_npy_bytes(data, &[rows, cols]))
}

/// Writes `data` as a 1-D float64 little-endian `.npy` file, atomically.
pub fn write_vector(path: &Path, data: &[f64]) -> Result<()> {
    write_atomic(path, &to_npy_bytes(data, &[data.len()]))
}

/// Serialises `data` (C order) as a complete float64 little-endian `.npy` file of the given
/// shape. An empty `shape` gives a 0-d array holding one value.
///
/// # Panics
/// If `data.len()` is not the product of `shape` (a programming error).
pub fn to_npy_bytes(data: &[f64], shape: &[usize]) -> Vec<u8> {
    let count = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .expect("to_npy_bytes: shape product overflows usize");
    assert_eq!(
        count,
        data.len(),
        "to_npy_bytes: data length does not match shape {shape:?}"
    );

    let shape_text = match shape {
        [] => "()".to_string(),
        [n] => format!("({n},)"),
        _ => {
            let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
            format!("({})", dims.join(", "))
        }
    };
    let mut header =
        format!("{{'descr': '<f8', 'fortran_order': False, 'shape': {shape_text}, }}").into_bytes();

    // Version 1.0 stores the header length in a u16; fall back to 2.0 (u32) for huge shapes.
    let (version, prefix_len) = if header.len() + 1 + 10 + 63 <= u16::MAX as usize {
        (1u8, 10usize)
    } else {
        (2u8, 12usize)
    };
    // Pad with spaces and a final newline so the data starts at a multiple of 64 bytes.
    let total = (prefix_len + header.len() + 1).next_multiple_of(64);
    header.resize(total - prefix_len - 1, b' ');
    header.push(b'\n');

    let mut out = Vec::with_capacity(total + 8 * data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[version, 0]);
    if version == 1 {
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(&header);
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// The element types the reader accepts.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Elem {
    F64 { little: bool },
    F32 { little: bool },
}

impl Elem {
    fn size(self) -> usize {
        match self {
            Elem::F64 { .. } => 8,
            Elem::F32 { .. } => 4,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Elem::F64 { .. } => "float64",
            Elem::F32 { .. } => "float32",
        }
    }
}

/// Parses a whole `.npy` file. Errors are messages for [`Error::input`].
fn parse_matrix(bytes: &[u8]) -> std::result::Result<(Vec<f64>, usize, usize), String> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        if !bytes.is_empty() && MAGIC.starts_with(bytes) {
            return Err("truncated .npy file: it ends inside the magic bytes".into());
        }
        return Err(format!(
            "not a .npy file: it does not start with the \\x93NUMPY magic bytes{}",
            if bytes.is_empty() {
                " (the file is empty)"
            } else {
                ""
            }
        ));
    }
    let (major, minor) = match bytes.get(6..8) {
        Some(v) => (v[0], v[1]),
        None => return Err("truncated .npy file: it ends before the format version".into()),
    };
    let (header_start, header_len) = match (major, minor) {
        (1, 0) => match bytes.get(8..10) {
            Some(b) => (10usize, u16::from_le_bytes([b[0], b[1]]) as usize),
            None => return Err("truncated .npy file: it ends inside the header length".into()),
        },
        (2, 0) | (3, 0) => match bytes.get(8..12) {
            Some(b) => (
                12usize,
                u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize,
            ),
            None => return Err("truncated .npy file: it ends inside the header length".into()),
        },
        _ => {
            return Err(format!(
                "unsupported .npy format version {major}.{minor} (supported: 1.0, 2.0, 3.0)"
            ))
        }
    };
    let header_end = header_start
        .checked_add(header_len)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| {
            format!(
                "truncated .npy file: the header should be {header_len} bytes but the file has only {} bytes after the preamble",
                bytes.len() - header_start
            )
        })?;
    let text = std::str::from_utf8(&bytes[header_start..header_end])
        .map_err(|_| "malformed .npy header: it is not ASCII/UTF-8 text".to_string())?;
    let header = Header::parse(text)?;

    let (rows, cols) = match header.shape.as_slice() {
        [r, c] => (*r, *c),
        [n] => (*n, 1),
        [] => {
            return Err(
                "the array is 0-d (a scalar); expected a 2-D (rows, cols) or 1-D (n,) array".into(),
            )
        }
        dims => {
            return Err(format!(
                "the array is {}-D with shape {}; expected a 2-D (rows, cols) or 1-D (n,) array",
                dims.len(),
                shape_str(dims)
            ))
        }
    };
    let shape_text = shape_str(&header.shape);
    let count = rows
        .checked_mul(cols)
        .ok_or_else(|| format!("the shape {shape_text} is too large"))?;
    let need = count
        .checked_mul(header.elem.size())
        .ok_or_else(|| format!("the shape {shape_text} is too large"))?;
    let payload = &bytes[header_end..];
    if payload.len() < need {
        return Err(format!(
            "truncated .npy file: a {} array of shape {shape_text} needs {need} data bytes but the file has only {}",
            header.elem.name(),
            payload.len()
        ));
    }
    if payload.len() > need {
        return Err(format!(
            "malformed .npy file: {} unexpected bytes after the data of a {} array of shape {shape_text}",
            payload.len() - need,
            header.elem.name()
        ));
    }

    let stored = decode(payload, header.elem);
    let data = if header.fortran_order && rows > 1 && cols > 1 {
        // Column-major storage: element (i, j) sits at j·rows + i.
        let mut out = vec![0.0; count];
        for j in 0..cols {
            for i in 0..rows {
                out[i * cols + j] = stored[j * rows + i];
            }
        }
        out
    } else {
        stored
    };
    Ok((data, rows, cols))
}

fn decode(payload: &[u8], elem: Elem) -> Vec<f64> {
    match elem {
        Elem::F64 { little } => payload
            .chunks_exact(8)
            .map(|c| {
                let b: [u8; 8] = [c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]];
                if little {
                    f64::from_le_bytes(b)
                } else {
                    f64::from_be_bytes(b)
                }
            })
            .collect(),
        Elem::F32 { little } => payload
            .chunks_exact(4)
            .map(|c| {
                let b: [u8; 4] = [c[0], c[1], c[2], c[3]];
                f64::from(if little {
                    f32::from_le_bytes(b)
                } else {
                    f32::from_be_bytes(b)
                })
            })
            .collect(),
    }
}

fn shape_str(shape: &[usize]) -> String {
    match shape {
        [n] => format!("({n},)"),
        _ => {
            let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
            format!("({})", dims.join(", "))
        }
    }
}

/// The three fields of an `.npy` header that matter.
#[derive(Debug)]
struct Header {
    elem: Elem,
    fortran_order: bool,
    shape: Vec<usize>,
}

impl Header {
    fn parse(text: &str) -> std::result::Result<Header, String> {
        let malformed = |what: &str| format!("malformed .npy header ({what}): {:?}", text.trim());
        let mut p = Parser {
            s: text.as_bytes(),
            pos: 0,
        };
        let value = p.value(0).map_err(|e| malformed(&e))?;
        p.skip_ws();
        if p.pos != p.s.len() {
            return Err(malformed("unexpected text after the dict"));
        }
        let Lit::Dict(entries) = value else {
            return Err(malformed("expected a dict"));
        };
        let get = |key: &str| {
            entries
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v)
                .ok_or_else(|| malformed(&format!("missing key '{key}'")))
        };
        let elem = match get("descr")? {
            Lit::Str(d) => parse_descr(d)?,
            Lit::List(_) | Lit::Tuple(_) => {
                return Err(
                    "unsupported dtype: a structured (record) array; only plain float64 or float32 arrays are accepted"
                        .into(),
                )
            }
            _ => return Err(malformed("'descr' is not a string")),
        };
        let fortran_order = match get("fortran_order")? {
            Lit::Bool(b) => *b,
            _ => return Err(malformed("'fortran_order' is not True or False")),
        };
        let shape = match get("shape")? {
            Lit::Tuple(items) | Lit::List(items) => items
                .iter()
                .map(|v| match v {
                    Lit::Int(i) => usize::try_from(*i)
                        .map_err(|_| malformed(&format!("invalid dimension {i} in 'shape'"))),
                    _ => Err(malformed("'shape' holds a non-integer")),
                })
                .collect::<std::result::Result<Vec<usize>, String>>()?,
            _ => return Err(malformed("'shape' is not a tuple")),
        };
        Ok(Header {
            elem,
            fortran_order,
            shape,
        })
    }
}

/// Interprets a NumPy type string such as `'<f8'`.
fn parse_descr(d: &str) -> std::result::Result<Elem, String> {
    let native_little = cfg!(target_endian = "little");
    let (little, rest) = match d.as_bytes().first() {
        Some(b'<') => (true, &d[1..]),
        Some(b'>') => (false, &d[1..]),
        Some(b'=') | Some(b'|') => (native_little, &d[1..]),
        _ => (native_little, d),
    };
    match rest {
        "f8" => Ok(Elem::F64 { little }),
        "f4" => Ok(Elem::F32 { little }),
        _ => Err(format!(
            "unsupported dtype '{d}' ({}); only float64 ('<f8'/'>f8') and float32 ('<f4'/'>f4') arrays are accepted — convert with `arr.astype(np.float64)` before saving",
            describe_dtype(rest)
        )),
    }
}

/// A human name for a NumPy type string without its byte-order character.
fn describe_dtype(t: &str) -> String {
    let (kind, size) = t.split_at(t.find(|c: char| c.is_ascii_digit()).unwrap_or(t.len()));
    let bits = size.parse::<u32>().ok().and_then(|b| b.checked_mul(8));
    let sized = |name: &str| match bits {
        Some(b) => format!("{b}-bit {name}"),
        None => name.to_string(),
    };
    match kind {
        "f" | "e" | "d" | "g" => sized("float"),
        "i" => sized("signed integer"),
        "u" => sized("unsigned integer"),
        "c" => sized("complex"),
        "b" | "?" => "boolean".into(),
        "O" => "Python objects".into(),
        "U" | "S" | "a" => "strings".into(),
        "M" | "m" => "datetime".into(),
        "V" => "raw bytes".into(),
        _ => "unrecognised type".into(),
    }
}

/// The subset of Python literals that appears in `.npy` headers.
#[derive(Debug)]
enum Lit {
    Str(String),
    Int(i128),
    Bool(bool),
    None,
    Tuple(Vec<Lit>),
    List(Vec<Lit>),
    Dict(Vec<(String, Lit)>),
}

/// A recursive-descent parser with a nesting limit, so hostile headers cannot exhaust the stack.
struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
}

const MAX_DEPTH: usize = 16;

impl Parser<'_> {
    fn skip_ws(&mut self) {
        while self.pos < self.s.len() && self.s[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.s.get(self.pos).copied()
    }

    fn value(&mut self, depth: usize) -> std::result::Result<Lit, String> {
        if depth > MAX_DEPTH {
            return Err("nested too deeply".into());
        }
        match self.peek() {
            None => Err("unexpected end".into()),
            Some(b'{') => {
                self.pos += 1;
                let mut entries = Vec::new();
                loop {
                    if self.peek() == Some(b'}') {
                        self.pos += 1;
                        return Ok(Lit::Dict(entries));
                    }
                    let key = match self.value(depth + 1)? {
                        Lit::Str(k) => k,
                        _ => return Err("a dict key is not a string".into()),
                    };
                    if self.peek() != Some(b':') {
                        return Err("expected ':' in dict".into());
                    }
                    self.pos += 1;
                    let v = self.value(depth + 1)?;
                    entries.push((key, v));
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b'}') => {}
                        _ => return Err("expected ',' or '}' in dict".into()),
                    }
                }
            }
            Some(open @ (b'(' | b'[')) => {
                self.pos += 1;
                let close = if open == b'(' { b')' } else { b']' };
                let mut items = Vec::new();
                let mut saw_comma = false;
                loop {
                    if self.peek() == Some(close) {
                        self.pos += 1;
                        // `(3)` is just 3 in Python; numpy never writes it, but be faithful.
                        if open == b'(' && items.len() == 1 && !saw_comma {
                            return Ok(items.pop().unwrap_or(Lit::None));
                        }
                        return Ok(if open == b'(' {
                            Lit::Tuple(items)
                        } else {
                            Lit::List(items)
                        });
                    }
                    items.push(self.value(depth + 1)?);
                    match self.peek() {
                        Some(b',') => {
                            self.pos += 1;
                            saw_comma = true;
                        }
                        Some(c) if c == close => {}
                        _ => return Err("expected ',' or a closing bracket".into()),
                    }
                }
            }
            Some(q @ (b'\'' | b'"')) => {
                self.pos += 1;
                let mut out = Vec::new();
                loop {
                    match self.s.get(self.pos).copied() {
                        None => return Err("unterminated string".into()),
                        Some(b'\\') => {
                            let c = *self
                                .s
                                .get(self.pos + 1)
                                .ok_or_else(|| "unterminated string".to_string())?;
                            out.push(c);
                            self.pos += 2;
                        }
                        Some(c) if c == q => {
                            self.pos += 1;
                            break;
                        }
                        Some(c) => {
                            out.push(c);
                            self.pos += 1;
                        }
                    }
                }
                String::from_utf8(out)
                    .map(Lit::Str)
                    .map_err(|_| "a string is not UTF-8".into())
            }
            Some(c) if c == b'-' || c == b'+' || c.is_ascii_digit() => {
                let start = self.pos;
                self.pos += 1;
                while self.pos < self.s.len() && self.s[self.pos].is_ascii_digit() {
                    self.pos += 1;
                }
                let digits = std::str::from_utf8(&self.s[start..self.pos]).unwrap_or("");
                let n: i128 = digits
                    .parse()
                    .map_err(|_| format!("invalid integer {digits:?}"))?;
                // Python 2 era files write long integers as `3L`.
                if matches!(self.s.get(self.pos), Some(b'L' | b'l')) {
                    self.pos += 1;
                }
                Ok(Lit::Int(n))
            }
            Some(c) if c.is_ascii_alphabetic() => {
                let start = self.pos;
                while self.pos < self.s.len() && self.s[self.pos].is_ascii_alphanumeric() {
                    self.pos += 1;
                }
                match &self.s[start..self.pos] {
                    b"True" => Ok(Lit::Bool(true)),
                    b"False" => Ok(Lit::Bool(false)),
                    b"None" => Ok(Lit::None),
                    w => Err(format!("unexpected word {:?}", String::from_utf8_lossy(w))),
                }
            }
            Some(c) => Err(format!("unexpected character {:?}", c as char)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::test_dir;

    /// Builds a version-1.0 `.npy` file by hand: magic, version, u16 header length, the dict
    /// padded with spaces to a multiple of 64 bytes in total and ending in '\n', then `payload`.
    fn hand_made(dict: &str, payload: &[u8]) -> Vec<u8> {
        let mut header = dict.as_bytes().to_vec();
        while !(10 + header.len() + 1).is_multiple_of(64) {
            header.push(b' ');
        }
        header.push(b'\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(&header);
        assert_eq!(out.len() % 64, 0);
        out.extend_from_slice(payload);
        out
    }

    fn input_message(r: Result<(Vec<f64>, usize, usize)>) -> String {
        match r {
            Err(e @ Error::Input { .. }) => e.to_string(),
            other => panic!("expected an input error, got {other:?}"),
        }
    }

    #[test]
    fn round_trip_3x4() {
        let dir = test_dir("npy-rt");
        let p = dir.path().join("m.npy");
        let data: Vec<f64> = (0..12).map(|k| k as f64 * 0.1 - 0.35).collect();
        write_matrix(&p, &data, 3, 4).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
        assert_eq!((bytes.len() - 12 * 8) % 64, 0);
        assert_eq!(bytes[bytes.len() - 12 * 8 - 1], b'\n');
        let (back, r, c) = read_matrix(&p).unwrap();
        assert_eq!((r, c), (3, 4));
        assert_eq!(back, data);
    }

    #[test]
    fn vector_becomes_column() {
        let dir = test_dir("npy-vec");
        let p = dir.path().join("v.npy");
        write_vector(&p, &[1.5, f64::NAN, -0.0]).unwrap();
        let text = std::fs::read(&p).unwrap();
        assert!(String::from_utf8_lossy(&text[..64]).contains("'shape': (3,)"));
        let (v, r, c) = read_matrix(&p).unwrap();
        assert_eq!((r, c), (3, 1));
        assert_eq!(v[0], 1.5);
        assert!(v[1].is_nan());
        assert!(v[2] == 0.0 && v[2].is_sign_negative());
    }

    #[test]
    fn write_matrix_rejects_wrong_length() {
        let dir = test_dir("npy-len");
        let err = write_matrix(&dir.path().join("m.npy"), &[1.0; 5], 2, 3).unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{err}");
    }

    #[test]
    fn reads_f32_little_and_big_endian() {
        let dir = test_dir("npy-f32");
        let vals = [1.0f32, -2.5, 0.125, 3.0e7, 7.0, -0.75];
        let le: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let be: Vec<u8> = vals.iter().flat_map(|v| v.to_be_bytes()).collect();
        for (descr, payload) in [("<f4", le), (">f4", be)] {
            let p = dir.path().join(format!("f32{}.npy", &descr[..1] == "<"));
            let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (2, 3), }}");
            std::fs::write(&p, hand_made(&dict, &payload)).unwrap();
            let (data, r, c) = read_matrix(&p).unwrap();
            assert_eq!((r, c), (2, 3));
            let want: Vec<f64> = vals.iter().map(|&v| v as f64).collect();
            assert_eq!(data, want, "{descr}");
        }
    }

    #[test]
    fn reads_big_endian_f64() {
        let dir = test_dir("npy-be");
        let p = dir.path().join("be.npy");
        let payload: Vec<u8> = [1.0f64, 2.0].iter().flat_map(|v| v.to_be_bytes()).collect();
        let dict = "{'descr': '>f8', 'fortran_order': False, 'shape': (2,), }";
        std::fs::write(&p, hand_made(dict, &payload)).unwrap();
        assert_eq!(read_matrix(&p).unwrap(), (vec![1.0, 2.0], 2, 1));
    }

    #[test]
    fn reads_fortran_order() {
        // The matrix [[1, 2, 3], [4, 5, 6]] stored column by column: 1 4 2 5 3 6.
        let dir = test_dir("npy-fortran");
        let p = dir.path().join("f.npy");
        let stored = [1.0f64, 4.0, 2.0, 5.0, 3.0, 6.0];
        let payload: Vec<u8> = stored.iter().flat_map(|v| v.to_le_bytes()).collect();
        let dict = "{'descr': '<f8', 'fortran_order': True, 'shape': (2, 3), }";
        std::fs::write(&p, hand_made(dict, &payload)).unwrap();
        let (data, r, c) = read_matrix(&p).unwrap();
        assert_eq!((r, c), (2, 3));
        assert_eq!(data, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    }

    #[test]
    fn accepts_python2_style_header() {
        let payload: Vec<u8> = [1.0f64, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let bytes = hand_made(
            "{\"descr\": \"<f8\", \"fortran_order\": False, \"shape\": (1L, 2L)}",
            &payload,
        );
        assert_eq!(parse_matrix(&bytes).unwrap(), (vec![1.0, 2.0], 1, 2));
    }

    #[test]
    fn truncated_file_is_an_error() {
        let dir = test_dir("npy-trunc");
        let p = dir.path().join("t.npy");
        let full = to_npy_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
        std::fs::write(&p, &full[..full.len() - 5]).unwrap();
        let msg = input_message(read_matrix(&p));
        assert!(msg.contains("truncated") && msg.contains("t.npy"), "{msg}");
        // Every prefix of a valid file fails cleanly (no panic), including inside the header.
        for cut in 0..full.len() {
            assert!(parse_matrix(&full[..cut]).is_err(), "prefix of {cut} bytes");
        }
    }

    #[test]
    fn int64_file_is_an_error_naming_the_dtype() {
        let dir = test_dir("npy-int");
        let p = dir.path().join("i.npy");
        let payload: Vec<u8> = [1i64, 2, 3].iter().flat_map(|v| v.to_le_bytes()).collect();
        let dict = "{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }";
        std::fs::write(&p, hand_made(dict, &payload)).unwrap();
        let msg = input_message(read_matrix(&p));
        assert!(msg.contains("'<i8'"), "{msg}");
        assert!(msg.contains("64-bit signed integer"), "{msg}");
        assert!(msg.contains("float64") && msg.contains("float32"), "{msg}");
    }

    #[test]
    fn rejects_bad_shapes_and_foreign_files() {
        let cases: &[(&str, &[u8], &str)] = &[
            ("{'descr': '<f8', 'fortran_order': False, 'shape': (), }", &[0; 8], "0-d"),
            (
                "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 1, 1), }",
                &[0; 8],
                "3-D",
            ),
            (
                "{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4294967296), }",
                &[],
                "3-D",
            ),
            (
                "{'descr': '<f8', 'fortran_order': False, 'shape': (18446744073709551615, 3), }",
                &[],
                "too large",
            ),
            (
                "{'descr': '<f8', 'fortran_order': False, 'shape': (-1, 3), }",
                &[],
                "invalid dimension",
            ),
            (
                "{'descr': [('a', '<f8')], 'fortran_order': False, 'shape': (1,), }",
                &[0; 8],
                "structured",
            ),
            ("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", &[0; 8], "objects"),
            ("{'descr': '<f8', 'shape': (1,), }", &[0; 8], "fortran_order"),
            ("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }", &[0; 9], "unexpected"),
            ("[1, 2", &[], "malformed"),
        ];
        for (dict, payload, want) in cases {
            let err = parse_matrix(&hand_made(dict, payload)).unwrap_err();
            assert!(err.contains(want), "{dict}: {err}");
        }
        let deep = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
        assert!(parse_matrix(&hand_made(&deep, &[]))
            .unwrap_err()
            .contains("deeply"));
        assert!(parse_matrix(b"x,y\n1,2\n")
            .unwrap_err()
            .contains("not a .npy file"));
        assert!(parse_matrix(b"").unwrap_err().contains("empty"));
        assert!(parse_matrix(b"\x93NUMPY\x09\x00abcd")
            .unwrap_err()
            .contains("version 9.0"));
        // A version-2.0 header length pointing far past the end of the file.
        let err = parse_matrix(b"\x93NUMPY\x02\x00\xff\xff\xff\xff{}").unwrap_err();
        assert!(err.contains("truncated"), "{err}");
    }

    #[test]
    fn garbage_never_panics() {
        // A cheap deterministic fuzz: random bytes and random corruptions of a valid file.
        let valid = to_npy_bytes(&[1.0, 2.0, 3.0, 4.0], &[2, 2]);
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..2000 {
            let mut b = valid.clone();
            for _ in 0..(next() % 4 + 1) {
                let i = (next() as usize) % b.len();
                b[i] = next() as u8;
            }
            let cut = (next() as usize) % (b.len() + 1);
            let _ = parse_matrix(&b[..cut]);
            let _ = parse_matrix(&b);
        }
    }

    #[test]
    fn large_header_uses_version_2() {
        let shape = vec![1usize; 30000];
        let bytes = to_npy_bytes(&[4.0], &shape);
        assert_eq!(&bytes[6..8], &[2, 0]);
        let len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
        assert_eq!((12 + len) % 64, 0);
        assert_eq!(bytes.len(), 12 + len + 8);
    }
}
