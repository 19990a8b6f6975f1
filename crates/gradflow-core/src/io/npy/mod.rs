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

mod header;
#[cfg(test)]
mod tests;

use header::Header;

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
