//! Atomic file replacement: every output file of a run (matrices, checkpoints, edge lists, JSON
//! summaries) is written to a temporary file in the same directory, flushed and fsynced, then
//! renamed over the destination. A reader — another process, or this one after a crash or
//! Ctrl-C — therefore sees either the old complete file or the new complete file, never a
//! truncated one.
//!
//! The temporary file is named `.{file}.tmp-{pid}-{counter}` so that it is hidden, cannot collide
//! with another writer (process id + per-process counter), and is recognisably ours if a hard
//! kill ever leaves one behind. On any error — including a panic inside a streaming writer — the
//! temporary file is removed.
//!
//! `rename` is atomic only within one file system, which is why the temporary file lives next to
//! the destination rather than in `/tmp`. If `path` is a symbolic link, the link itself is
//! replaced by a regular file.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// Distinguishes temporary files of concurrent writers inside one process.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `path` atomically (temporary file + fsync + rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Like [`write_atomic`], but the content is produced by `f`, which writes into a buffered
/// stream. Use this for large outputs that should not be assembled in memory first.
///
/// If `f` returns an error (or panics) the destination is left untouched and the temporary file
/// is removed.
pub fn write_atomic_with(
    path: &Path,
    f: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let (dir, tmp) = temp_path(path)?;
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| {
            Error::io(
                path,
                with_context(e, "cannot create a temporary file", &tmp),
            )
        })?;
    // From here on the guard removes the temporary file unless the rename succeeded.
    let mut guard = TempGuard {
        path: Some(tmp.clone()),
    };

    let mut out = BufWriter::new(file);
    f(&mut out).map_err(|e| Error::io(path, e))?;
    let file = out
        .into_inner()
        .map_err(|e| Error::io(path, e.into_error()))?;
    file.sync_all().map_err(|e| Error::io(path, e))?;
    drop(file);

    fs::rename(&tmp, path).map_err(|e| {
        Error::io(
            path,
            with_context(e, "cannot rename the temporary file", &tmp),
        )
    })?;
    guard.path = None;

    // Make the rename itself durable. Best effort: not every platform or file system allows
    // opening or syncing a directory, and the data is already complete and in place.
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The directory of `path` and a fresh temporary file name inside it.
fn temp_path(path: &Path) -> Result<(PathBuf, PathBuf)> {
    let name = path.file_name().ok_or_else(|| {
        Error::Invalid(format!(
            "{}: cannot write to this path: it does not name a file",
            path.display()
        ))
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}-{}", std::process::id(), n));
    let tmp = dir.join(tmp_name);
    Ok((dir, tmp))
}

fn with_context(e: std::io::Error, what: &str, tmp: &Path) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{what} {}: {e}", tmp.display()))
}

/// Removes the temporary file on drop unless disarmed (`path = None`).
struct TempGuard {
    path: Option<PathBuf>,
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::test_dir;

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn writes_new_file_and_leaves_no_temp_files() {
        let dir = test_dir("atomic-new");
        let p = dir.path().join("out.bin");
        write_atomic(&p, b"hello").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"hello");
        assert_eq!(entries(dir.path()), vec!["out.bin".to_string()]);
    }

    #[test]
    fn replaces_existing_file() {
        let dir = test_dir("atomic-replace");
        let p = dir.path().join("out.txt");
        fs::write(&p, b"old content that is longer than the new one").unwrap();
        write_atomic(&p, b"new").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new");
        write_atomic_with(&p, |w| {
            w.write_all(b"streamed ")?;
            w.write_all(b"content")
        })
        .unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"streamed content");
        assert_eq!(entries(dir.path()), vec!["out.txt".to_string()]);
    }

    #[test]
    fn failing_writer_keeps_old_file_and_removes_temp() {
        let dir = test_dir("atomic-fail");
        let p = dir.path().join("keep.txt");
        fs::write(&p, b"original").unwrap();
        let err = write_atomic_with(&p, |w| {
            w.write_all(b"partial")?;
            Err(std::io::Error::other("simulated failure"))
        })
        .unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
        assert_eq!(fs::read(&p).unwrap(), b"original");
        assert_eq!(entries(dir.path()), vec!["keep.txt".to_string()]);
    }

    #[test]
    fn panicking_writer_removes_temp() {
        let dir = test_dir("atomic-panic");
        let p = dir.path().join("x.txt");
        let r = std::panic::catch_unwind(|| {
            let _ = write_atomic_with(&p, |w| {
                w.write_all(b"partial")?;
                panic!("boom");
            });
        });
        assert!(r.is_err());
        assert!(entries(dir.path()).is_empty());
    }

    #[test]
    fn missing_directory_is_an_io_error() {
        let dir = test_dir("atomic-missing");
        let p = dir.path().join("no/such/dir/out.txt");
        let err = write_atomic(&p, b"x").unwrap_err();
        assert!(matches!(err, Error::Io { .. }));
        assert!(err.to_string().contains("out.txt"), "{err}");
    }

    #[test]
    fn temp_names_are_hidden_and_unique() {
        let (d1, a) = temp_path(Path::new("run/model.safetensors")).unwrap();
        let (_, b) = temp_path(Path::new("run/model.safetensors")).unwrap();
        assert_eq!(d1, PathBuf::from("run"));
        assert_ne!(a, b);
        let name = a.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(".model.safetensors.tmp-"), "{name}");
        let (d2, _) = temp_path(Path::new("bare.txt")).unwrap();
        assert_eq!(d2, PathBuf::from("."));
        assert!(temp_path(Path::new("/")).is_err());
    }
}
