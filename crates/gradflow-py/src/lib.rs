//! gradflow's Python extension module `gradflow._gradflow`: the compiled half of the `gradflow`
//! package (the Python half, in `python/gradflow/`, wraps it into `Model`, `train`, `Run`, …).
//!
//! Everything here goes through the same code paths as the command line: a model is built from a
//! config (the `[model]` table of a TOML file, passed as JSON and validated by
//! [`Config::from_str`]), a run is written by [`gradflow::run::execute`], errors carry the CLI's
//! messages. Long calls run on a worker thread while the calling thread waits with the GIL
//! released and answers Ctrl-C ([`interruptible`]); a panic becomes a Python exception, never an
//! abort.

mod arrays;
mod model;
mod runs;

use gradflow::config::Config;
use gradflow::error::Error;
use pyo3::prelude::*;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

pyo3::create_exception!(
    _gradflow,
    GradflowError,
    pyo3::exceptions::PyValueError,
    "A gradflow error: bad input (with the field and the fix), a budget exceeded, a failed run."
);

/// A core error as a Python exception with the CLI's message (`KeyboardInterrupt` for an
/// interrupted run).
pub(crate) fn to_py(e: Error) -> PyErr {
    match e {
        Error::Interrupted(msg) => pyo3::exceptions::PyKeyboardInterrupt::new_err(msg),
        other => GradflowError::new_err(other.to_string()),
    }
}

/// Parses a config given as JSON (the TOML file's structure) exactly as the CLI parses a file:
/// JSON → TOML text → [`Config::from_str`], so the checks and messages are the CLI's. `label`
/// stands where the CLI names the file; line numbers, which would point into the generated
/// text, are dropped from the messages.
pub(crate) fn parse_config(json: &str, label: &str, base_dir: &Path) -> Result<Config, Error> {
    let value: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| Error::Invalid(format!("{label}: not a JSON object: {e}")))?;
    let table = toml::Value::try_from(&value)
        .map_err(|e| Error::Invalid(format!("{label}: cannot be written as TOML: {e}")))?;
    let text = toml::to_string(&table)
        .map_err(|e| Error::Invalid(format!("{label}: cannot be written as TOML: {e}")))?;
    Config::from_str(&text, Path::new(label), base_dir).map_err(|e| match e {
        Error::Config {
            file,
            field,
            message,
        } => Error::Config {
            file,
            field,
            message: without_line(&message),
        },
        other => other,
    })
}

/// Drops a trailing " (line N)" or " (in `f` at line N)" from a config message.
fn without_line(message: &str) -> String {
    if let Some(at) = message.rfind(" (") {
        let tail = &message[at..];
        if tail.ends_with(')') && tail.contains("line ") {
            let digits = tail.trim_end_matches(')').rsplit(' ').next().unwrap_or("");
            if !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) {
                return message[..at].to_string();
            }
        }
    }
    message.to_string()
}

/// What a worker thread hands back: its result, or its panic's message.
type Outcome<T> = Result<Result<T, Error>, String>;

/// Runs `work` on a worker thread while this thread waits with the GIL released, checking for
/// signals every 50 ms. On Ctrl-C it calls `on_interrupt` (training uses it to stop at the next
/// epoch boundary) and then either waits up to `grace` for the worker to finish cleanly (its own
/// error, if any, is returned — an interrupted run's) or leaves it running detached, and raises
/// `KeyboardInterrupt`. A panic in `work` becomes a [`GradflowError`].
pub(crate) fn interruptible<T, F>(
    py: Python<'_>,
    work: F,
    on_interrupt: fn(),
    grace: Duration,
) -> PyResult<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, Error> + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Outcome<T>>();
    std::thread::Builder::new()
        .name("gradflow-worker".into())
        .spawn(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
                .map_err(|p| panic_message(p.as_ref()));
            let _ = tx.send(outcome);
        })
        .map_err(|e| GradflowError::new_err(format!("cannot start a worker thread: {e}")))?;
    let deliver = |outcome: Outcome<T>| {
        match outcome {
        Ok(result) => result.map_err(to_py),
        Err(msg) => Err(GradflowError::new_err(format!(
            "internal error (a bug in gradflow; please report it with the call that caused it): {msg}"
        ))),
    }
    };
    // The receiver travels into each GIL-free wait and back (it is Send, not Sync).
    let mut rx = rx;
    loop {
        let (back, got) = py.detach(move || {
            let got = rx.recv_timeout(Duration::from_millis(50));
            (rx, got)
        });
        rx = back;
        match got {
            Ok(outcome) => return deliver(outcome),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(GradflowError::new_err(
                    "the worker thread ended without a result",
                ))
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if let Err(interrupt) = py.check_signals() {
            on_interrupt();
            if !grace.is_zero() {
                if let Ok(outcome) = py.detach(move || rx.recv_timeout(grace)) {
                    // The worker stopped cleanly; its own interruption error (if it returned
                    // one) says what was kept.
                    if let Err(e) = deliver(outcome) {
                        if e.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py) {
                            return Err(e);
                        }
                    }
                }
            }
            return Err(interrupt);
        }
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".into()
    }
}

fn nothing() {}

/// Raises a panic inside the worker machinery (for the test that panics never abort).
#[pyfunction]
fn _panic_for_test(py: Python<'_>) -> PyResult<()> {
    interruptible(
        py,
        || -> Result<(), Error> { panic!("deliberate test panic") },
        nothing,
        Duration::ZERO,
    )
}

#[pymodule]
fn _gradflow(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("GradflowError", m.py().get_type::<GradflowError>())?;
    m.add_class::<model::CoreModel>()?;
    m.add_function(wrap_pyfunction!(runs::train, m)?)?;
    m.add_function(wrap_pyfunction!(runs::reproduce, m)?)?;
    m.add_function(wrap_pyfunction!(runs::default_solver, m)?)?;
    m.add_function(wrap_pyfunction!(runs::read_safetensors, m)?)?;
    m.add_function(wrap_pyfunction!(runs::build_report, m)?)?;
    m.add_function(wrap_pyfunction!(_panic_for_test, m)?)?;
    Ok(())
}
