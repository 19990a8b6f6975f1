//! Named-tensor checkpoints in the safetensors format (model parameters such as `0.weight`, saved
//! and reloaded between runs, and readable from Python with `safetensors.numpy.load_file`).
//!
//! Writing stores every tensor as F64 (the crate computes in f64) plus an optional string→string
//! metadata map, atomically through [`write_atomic`]. The safetensors library orders tensors in
//! the file by dtype and then by name; since all are F64 here, file order is name order.
//!
//! Reading accepts F64 and F32 tensors (F32 is widened to f64) and rejects other dtypes with an
//! [`Error::Input`] naming the tensor and its dtype. Malformed files never panic: the header
//! length is checked against the file size before anything else, every tensor's byte range is
//! checked against the data section (the safetensors crate adds offsets without overflow checks),
//! and only then is the file handed to the library's own validating parser. Tensors are returned
//! in file order (by data offset).

use std::collections::BTreeMap;
use std::path::Path;

use ::safetensors::tensor::{Dtype, SafeTensors};

use crate::error::{Error, Result};
use crate::io::atomic::write_atomic;

/// The safetensors crate refuses headers larger than this; so do we, before parsing.
const MAX_HEADER_SIZE: u64 = 100_000_000;

/// A named, row-major (C-order) f64 tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

/// Writes `tensors` as F64 safetensors with `metadata` in the `__metadata__` header, atomically.
///
/// Fails with [`Error::Invalid`] if a tensor's data length does not match its shape, or if two
/// tensors share a name.
pub fn write_tensors(
    path: &Path,
    tensors: &[NamedTensor],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let invalid = |msg: String| Error::Invalid(format!("{}: {msg}", path.display()));
    let mut seen = std::collections::HashSet::new();
    for t in tensors {
        if t.name == "__metadata__" {
            return Err(invalid(
                "`__metadata__` is reserved in safetensors and cannot name a tensor".into(),
            ));
        }
        if !seen.insert(t.name.as_str()) {
            return Err(invalid(format!("two tensors are named `{}`", t.name)));
        }
        let count = t.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if count != Some(t.data.len()) {
            return Err(invalid(format!(
                "tensor `{}` has shape {:?} but {} values",
                t.name,
                t.shape,
                t.data.len()
            )));
        }
    }
    // The header is written here rather than by `safetensors::serialize`, whose metadata map is
    // a `HashMap`: its iteration order changes from process to process, and identical runs must
    // give byte-identical files. serde_json's map is ordered (sorted keys), so this is stable.
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        let md: serde_json::Map<String, serde_json::Value> = metadata
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        header.insert("__metadata__".into(), serde_json::Value::Object(md));
    }
    let mut offset = 0usize;
    for t in tensors {
        let len = t.data.len() * 8;
        header.insert(
            t.name.clone(),
            serde_json::json!({ "dtype": "F64", "shape": t.shape, "data_offsets": [offset, offset + len] }),
        );
        offset += len;
    }
    let mut head = serde_json::to_vec(&serde_json::Value::Object(header))
        .map_err(|e| invalid(format!("cannot serialise the header: {e}")))?;
    while head.len() % 8 != 0 {
        head.push(b' ');
    }
    let mut buffer = Vec::with_capacity(8 + head.len() + offset);
    buffer.extend_from_slice(&(head.len() as u64).to_le_bytes());
    buffer.extend_from_slice(&head);
    for t in tensors {
        for v in &t.data {
            buffer.extend_from_slice(&v.to_le_bytes());
        }
    }
    write_atomic(path, &buffer)
}

/// Reads all tensors of a safetensors file, in file order, as f64.
pub fn read_tensors(path: &Path) -> Result<Vec<NamedTensor>> {
    read_tensors_with_metadata(path).map(|(t, _)| t)
}

/// Like [`read_tensors`], also returning the `__metadata__` map (empty if absent).
pub fn read_tensors_with_metadata(
    path: &Path,
) -> Result<(Vec<NamedTensor>, BTreeMap<String, String>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse(&bytes).map_err(|m| Error::input(path, m))
}

/// Parses a whole safetensors file. Errors are messages for [`Error::input`].
fn parse(
    bytes: &[u8],
) -> std::result::Result<(Vec<NamedTensor>, BTreeMap<String, String>), String> {
    let not_st = "not a safetensors file";
    let Some(len_bytes) = bytes.get(..8) else {
        return Err(format!(
            "{not_st}: it is only {} bytes long, shorter than the 8-byte header length",
            bytes.len()
        ));
    };
    let mut le = [0u8; 8];
    le.copy_from_slice(len_bytes);
    let header_len = u64::from_le_bytes(le);
    let available = (bytes.len() - 8) as u64;
    if header_len > available {
        return Err(format!(
            "{not_st} or truncated: the header length field says {header_len} bytes but only {available} bytes follow it"
        ));
    }
    if header_len > MAX_HEADER_SIZE {
        return Err(format!(
            "{not_st}: the header length {header_len} exceeds the {MAX_HEADER_SIZE}-byte limit"
        ));
    }
    let header_end = 8 + header_len as usize;
    let header = &bytes[8..header_end];
    if header.first() != Some(&b'{') {
        return Err(format!(
            "{not_st}: the header does not start with a JSON object"
        ));
    }
    // Pre-check the byte ranges so the library's own arithmetic cannot overflow.
    let data_len = (bytes.len() - header_end) as u64;
    let json: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(header)
        .map_err(|e| format!("{not_st}: the header is not valid JSON ({e})"))?;
    for (name, entry) in &json {
        if name == "__metadata__" {
            continue;
        }
        let offsets = entry.get("data_offsets").and_then(|o| o.as_array());
        if let Some(offsets) = offsets {
            for o in offsets.iter().filter_map(|o| o.as_u64()) {
                if o > data_len {
                    return Err(format!(
                        "truncated or corrupt safetensors file: tensor `{name}` ends at byte {o} of the data section, which has only {data_len} bytes"
                    ));
                }
            }
        }
    }

    let (n, meta) =
        SafeTensors::read_metadata(bytes).map_err(|e| format!("invalid safetensors file: {e}"))?;
    let data = bytes
        .get(8 + n..)
        .ok_or_else(|| "invalid safetensors file: header overruns the file".to_string())?;

    let mut order: Vec<(usize, String)> = Vec::new();
    for name in meta.offset_keys() {
        let start = meta.info(&name).map_or(0, |i| i.data_offsets.0);
        order.push((start, name));
    }
    order.sort();

    let mut out = Vec::with_capacity(order.len());
    for (_, name) in order {
        let Some(info) = meta.info(&name) else {
            continue;
        };
        let (s, e) = info.data_offsets;
        let raw = data.get(s..e).ok_or_else(|| {
            format!("invalid safetensors file: tensor `{name}` lies outside the data section")
        })?;
        let values: Vec<f64> = match info.dtype {
            Dtype::F64 => raw
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect(),
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
            other => {
                return Err(format!(
                    "tensor `{name}` has dtype {other:?}; only F64 and F32 tensors are accepted"
                ))
            }
        };
        let count = info.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if count != Some(values.len()) {
            return Err(format!(
                "invalid safetensors file: tensor `{name}` has shape {:?} but {} values",
                info.shape,
                values.len()
            ));
        }
        out.push(NamedTensor {
            name,
            shape: info.shape.clone(),
            data: values,
        });
    }
    let metadata = meta
        .metadata()
        .as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    Ok((out, metadata))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::test_dir;

    fn t(name: &str, shape: &[usize], data: Vec<f64>) -> NamedTensor {
        NamedTensor {
            name: name.into(),
            shape: shape.to_vec(),
            data,
        }
    }

    /// A hand-built safetensors file (header JSON padded to 8 bytes, then `payload`).
    fn hand_made(header: &str, payload: &[u8]) -> Vec<u8> {
        let mut h = header.as_bytes().to_vec();
        while !h.len().is_multiple_of(8) {
            h.push(b' ');
        }
        let mut out = (h.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&h);
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn round_trip_with_metadata() {
        let dir = test_dir("st-rt");
        let p = dir.path().join("model.safetensors");
        let tensors = vec![
            t(
                "0.weight",
                &[3, 2],
                vec![1.0, -2.0, 3.5, 4.0, 1e-300, f64::MAX],
            ),
            t("0.bias", &[3], vec![0.1, 0.2, 0.3]),
            t("1.weight", &[1, 3], vec![7.0, 8.0, 9.0]),
            t("empty", &[0, 4], vec![]),
        ];
        let mut meta = BTreeMap::new();
        meta.insert("epoch".to_string(), "12".to_string());
        meta.insert("preset".to_string(), "relu2".to_string());
        write_tensors(&p, &tensors, &meta).unwrap();

        let (back, meta_back) = read_tensors_with_metadata(&p).unwrap();
        assert_eq!(meta_back, meta);
        // The data are laid out in the order given, and read back in file order.
        let names: Vec<&str> = back.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(names, ["0.weight", "0.bias", "1.weight", "empty"]);
        for orig in &tensors {
            let got = back.iter().find(|x| x.name == orig.name).unwrap();
            assert_eq!(got, orig);
        }
        assert_eq!(read_tensors(&p).unwrap(), back);

        // No metadata at all is also fine.
        write_tensors(&p, &tensors[..1], &BTreeMap::new()).unwrap();
        let (one, m) = read_tensors_with_metadata(&p).unwrap();
        assert_eq!(one, tensors[..1].to_vec());
        assert!(m.is_empty());
    }

    #[test]
    fn reads_f32_and_rejects_other_dtypes() {
        let dir = test_dir("st-dtypes");
        let vals = [1.5f32, -2.0, 0.25, 8.0];
        let f32_bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let f64_bytes: Vec<u8> = [9.0f64].iter().flat_map(|v| v.to_le_bytes()).collect();
        // F64 first in the file, then F32: file order must be kept.
        let mut payload = f64_bytes.clone();
        payload.extend_from_slice(&f32_bytes);
        let header = r#"{"z":{"dtype":"F64","shape":[1],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2,2],"data_offsets":[8,24]}}"#;
        let p = dir.path().join("mixed.safetensors");
        std::fs::write(&p, hand_made(header, &payload)).unwrap();
        let got = read_tensors(&p).unwrap();
        assert_eq!(got[0], t("z", &[1], vec![9.0]));
        assert_eq!(got[1], t("a", &[2, 2], vec![1.5, -2.0, 0.25, 8.0]));

        let header = r#"{"idx":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#;
        let p = dir.path().join("int.safetensors");
        std::fs::write(&p, hand_made(header, &[0; 8])).unwrap();
        let msg = read_tensors(&p).unwrap_err().to_string();
        assert!(
            msg.contains("`idx`") && msg.contains("I64") && msg.contains("F64"),
            "{msg}"
        );
    }

    #[test]
    fn garbage_is_an_error() {
        let dir = test_dir("st-garbage");
        let p = dir.path().join("junk.safetensors");
        std::fs::write(&p, b"this is definitely not a safetensors file").unwrap();
        let err = read_tensors(&p).unwrap_err();
        assert!(matches!(err, Error::Input { .. }), "{err}");
        assert!(err.to_string().contains("junk.safetensors"), "{err}");

        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![], "8-byte"),
            (vec![1, 2, 3], "8-byte"),
            (u64::MAX.to_le_bytes().to_vec(), "header length"),
            (hand_made("[1,2,3]", &[]), "JSON object"),
            (hand_made("{\"a\":", &[]), "not valid JSON"),
            (
                hand_made(
                    r#"{"w":{"dtype":"F64","shape":[2],"data_offsets":[0,16]}}"#,
                    &[0; 8],
                ),
                "truncated",
            ),
            (
                hand_made(
                    r#"{"w":{"dtype":"F64","shape":[3],"data_offsets":[0,16]}}"#,
                    &[0; 16],
                ),
                "invalid safetensors",
            ),
            (
                hand_made(
                    r#"{"w":{"dtype":"F64","shape":[2305843009213693951],"data_offsets":[0,8]}}"#,
                    &[0; 8],
                ),
                "invalid safetensors",
            ),
            (
                hand_made(r#"{"w":{"dtype":"F64","shape":[1]}}"#, &[0; 8]),
                "invalid safetensors",
            ),
        ];
        for (bytes, want) in cases {
            let err = parse(&bytes).unwrap_err();
            assert!(err.contains(want), "{want}: {err}");
        }
    }

    #[test]
    fn corrupted_files_never_panic() {
        let tensors = vec![
            t("0.weight", &[3, 2], vec![1.0; 6]),
            t("0.bias", &[3], vec![2.0; 3]),
        ];
        let dir = test_dir("st-fuzz");
        let p = dir.path().join("m.safetensors");
        write_tensors(&p, &tensors, &BTreeMap::new()).unwrap();
        let valid = std::fs::read(&p).unwrap();
        for cut in 0..valid.len() {
            assert!(parse(&valid[..cut]).is_err(), "prefix of {cut} bytes");
        }
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..2000 {
            let mut b = valid.clone();
            for _ in 0..(next() % 3 + 1) {
                let i = (next() as usize) % b.len();
                b[i] = next() as u8;
            }
            let _ = parse(&b);
        }
    }

    #[test]
    fn write_rejects_inconsistent_tensors() {
        let dir = test_dir("st-bad-write");
        let p = dir.path().join("m.safetensors");
        let none = BTreeMap::new();
        let err = write_tensors(&p, &[t("w", &[2, 2], vec![1.0; 3])], &none).unwrap_err();
        assert!(err.to_string().contains("`w`"), "{err}");
        let dup = [t("w", &[1], vec![1.0]), t("w", &[1], vec![2.0])];
        assert!(write_tensors(&p, &dup, &none).is_err());
        let reserved = [t("__metadata__", &[1], vec![1.0])];
        assert!(write_tensors(&p, &reserved, &none).is_err());
        assert!(!p.exists());
    }
}
