//! gradflow: puts the paper's gradient-flow convergence theorem on trial. This crate holds what a
//! user runs — run directories ([`run`]), the paper's reproductions ([`experiment`]), reports and
//! plots ([`report`]), Ctrl-C handling ([`interrupt`]) — over the numerical core,
//! `gradflow_core`, whose modules are re-exported here under the same names.
//!
//! A run from a config, as `gradflow train` does it: validate, prepare (data, model, θ₀; nothing
//! written yet), then train and write the run directory.
//!
//! ```
//! use gradflow::config::Config;
//! use gradflow::experiment::VerdictKind;
//! use gradflow::run::{execute, prepare, RunOptions, Status};
//!
//! let toml = r#"
//!     seed = 0
//!     [data]
//!     kind = "ball"
//!     n = 8
//!     d = 3
//!     m = 1
//!     [model]
//!     preset = "dnn"
//!     hidden = [16]
//!     activation = "leaky-relu"
//!     [train]
//!     lr = 0.05
//!     epochs = 50
//!     [ntk]
//!     every = 0
//! "#;
//! let dir = std::env::temp_dir().join(format!("gradflow-doc-run-{}", std::process::id()));
//! let config = Config::from_str(toml, "example.toml".as_ref(), &dir)?;
//! let prepared = prepare(&config)?;
//! assert_eq!(prepared.model.p(), 3 * 16 + 16 + 16 + 1);
//! let summary = execute(&prepared, &dir.join("run"), &RunOptions::default())?;
//! assert_eq!(summary.status, Status::Completed);
//! assert!(summary.overparametrized && summary.final_loss < summary.initial_loss);
//! // p = 81 ≥ nm = 8 and λ_min(H) > 0 proven at both checkpoints: the theorem's claim holds.
//! assert_eq!(summary.verdict.expect("a verdict").kind, VerdictKind::Confirmed);
//! for file in ["summary.json", "metrics.csv", "ntk.csv", "params_final.safetensors"] {
//!     assert!(dir.join("run").join(file).is_file(), "{file}");
//! }
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), gradflow::Error>(())
//! ```

pub use gradflow_core::{
    activation, batch, config, data, engine, error, flow, graph, init, io, kinks, layers, loss,
    model, ntk, oracle, params, presets, rng, spec, theory, train, Batch, Error, Result,
};

pub mod experiment;
pub mod interrupt;
pub mod report;
pub mod run;
