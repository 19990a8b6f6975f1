//! File input and output: every byte the crate reads from or writes to disk goes through here,
//! so that formats, error messages (file + what is wrong + what is accepted) and durability
//! (atomic replacement) are the same everywhere.
//!
//! - [`atomic`]: write-to-temporary-then-rename, so readers never see a truncated file;
//! - [`npy`]: NumPy `.npy` matrices and vectors (data X/Y, results);
//! - [`safetensors`]: named f64 tensors (model checkpoints);
//! - [`csv`]: edge lists (sample graphs) and the growing `metrics.csv`.

pub mod atomic;
pub mod csv;
pub mod npy;
pub mod safetensors;

pub use self::atomic::{write_atomic, write_atomic_with};
pub use self::csv::{read_edges, write_edges, CsvWriter};
pub use self::npy::{read_matrix, to_npy_bytes, write_matrix, write_vector};
pub use self::safetensors::{read_tensors, read_tensors_with_metadata, write_tensors, NamedTensor};

/// A fresh, uniquely named directory under the system temp dir, removed on drop: for the unit
/// tests of this crate and of the crates built on it (hence public, hidden from the docs).
#[doc(hidden)]
pub struct TestDir(std::path::PathBuf);

impl TestDir {
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[doc(hidden)]
pub fn test_dir(tag: &str) -> TestDir {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!(
        "gradflow-test-{tag}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("cannot create a test directory");
    TestDir(dir)
}
