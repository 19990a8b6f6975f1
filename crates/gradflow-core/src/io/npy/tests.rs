//! Tests of `.npy` reading and writing: hand-made files byte by byte, every accepted dtype and
//! order, and malformed input that must give an error naming the file.

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
