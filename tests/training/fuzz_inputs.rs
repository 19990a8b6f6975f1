//! Fuzzing of everything a user hands in: thousands of seeded random mutations (byte flips,
//! insertions, deletions, truncations, splices of TOML punctuation) of the example configs, and
//! random edge-list CSVs. Every input must give Ok or a clean error — never a panic or a hang.
//! (The .npy and safetensors readers are fuzzed the same way in their unit tests.)

use gradflow::config::Config;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::path::Path;

const TOKENS: [&[u8]; 14] = [
    b"[",
    b"]",
    b"=",
    b"\"",
    b"{",
    b"}",
    b",",
    b"\n",
    b"-1",
    b"1e999",
    b"nan",
    b"[model]",
    b"hidden = []",
    b"k = 0",
];

fn mutate(rng: &mut StdRng, src: &[u8]) -> Vec<u8> {
    let mut v = src.to_vec();
    for _ in 0..rng.random_range(1..6) {
        let at = if v.is_empty() {
            0
        } else {
            rng.random_range(0..v.len())
        };
        match rng.random_range(0..5) {
            0 if !v.is_empty() => v[at] = rng.random(),
            1 => {
                let t = TOKENS[rng.random_range(0..TOKENS.len())];
                v.splice(at..at, t.iter().copied());
            }
            2 if !v.is_empty() => {
                let end = (at + rng.random_range(1..20)).min(v.len());
                v.drain(at..end);
            }
            3 => v.truncate(at),
            _ => {
                // Duplicate a line elsewhere (repeated keys and sections).
                let text = String::from_utf8_lossy(src).to_string();
                let lines: Vec<&str> = text.lines().collect();
                if !lines.is_empty() {
                    let line = lines[rng.random_range(0..lines.len())];
                    v.splice(at..at, format!("\n{line}\n").bytes());
                }
            }
        }
    }
    v
}

#[test]
fn mutated_configs_never_panic() {
    let mut rng = StdRng::seed_from_u64(2026);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let src = std::fs::read(&path).unwrap();
        for _ in 0..1500 {
            let bytes = mutate(&mut rng, &src);
            let text = String::from_utf8_lossy(&bytes).to_string();
            let result = std::panic::catch_unwind(|| Config::from_str(&text, &path, &dir));
            match result {
                Ok(Ok(c)) => {
                    // A config that parses must also describe itself and parse back.
                    let back = Config::from_str(&c.to_toml(), &path, &dir);
                    assert!(back.is_ok(), "resolved config does not re-parse:\n{text}");
                }
                Ok(Err(e)) => assert!(!e.to_string().is_empty()),
                Err(_) => panic!("Config::from_str panicked on:\n{text}"),
            }
            checked += 1;
        }
    }
    assert!(checked >= 5 * 1500);
}

#[test]
fn random_edge_lists_never_panic() {
    let mut rng = StdRng::seed_from_u64(7);
    let dir = std::env::temp_dir().join(format!("gradflow-fuzz-edges-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("edges.csv");
    let alphabet: &[u8] = b"0123456789,,,\n\n #-abc \xff\r";
    for _ in 0..2000 {
        let len = rng.random_range(0..80);
        let bytes: Vec<u8> = (0..len)
            .map(|_| alphabet[rng.random_range(0..alphabet.len())])
            .collect();
        std::fs::write(&path, &bytes).unwrap();
        let n = rng.random_range(1..50);
        let r = std::panic::catch_unwind(|| gradflow::io::read_edges(&path, n));
        match r {
            Ok(Ok(edges)) => assert!(edges.iter().all(|&(i, j)| i < n && j < n)),
            Ok(Err(e)) => assert!(e.to_string().contains("edges.csv")),
            Err(_) => panic!(
                "read_edges panicked on {:?}",
                String::from_utf8_lossy(&bytes)
            ),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
