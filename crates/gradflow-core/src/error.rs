//! The crate's error type. Every user-facing failure names what was wrong (the file, the field)
//! and, where one exists, the fix; the CLI prints it and exits non-zero. Panics are reserved for
//! programming errors.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is missing, unknown or out of range.
    #[error("{file}: `{field}`: {message}")]
    Config {
        file: String,
        field: String,
        message: String,
    },
    /// A data file (npy, CSV, safetensors) is malformed or inconsistent.
    #[error("{path}: {message}")]
    Input { path: String, message: String },
    /// The operating system refused a read or write.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A request that cannot be carried out as asked (sizes, budgets), with the fix in the text.
    #[error("{0}")]
    Invalid(String),
    /// Training produced a non-finite value.
    #[error("{0}")]
    Diverged(String),
    /// The run was interrupted (Ctrl-C / SIGTERM) at an epoch boundary.
    #[error("{0}")]
    Interrupted(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn config(file: impl AsRef<Path>, field: &str, message: impl Into<String>) -> Self {
        Self::Config {
            file: file.as_ref().display().to_string(),
            field: field.to_string(),
            message: message.into(),
        }
    }
    pub fn input(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Self::Input {
            path: path.as_ref().display().to_string(),
            message: message.into(),
        }
    }
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}
