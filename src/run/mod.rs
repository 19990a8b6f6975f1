//! One training run from a validated [`crate::config::Config`]: build data, graph, model and θ₀
//! ([`prepare`]), then train and write the run directory ([`execute`]):
//!
//! `config.toml` (resolved), `x.npy`, `y.npy`, `edges.csv` (graph presets), `params_init.safetensors`,
//! `params_final.safetensors`, `metrics.csv` (`epoch,t,loss,grad_norm,kink_crossings,chattering`),
//! `ntk.csv` (`epoch,t,loss,lambda_min,lambda_max,condition,lambda_min_accuracy,integral_lambda_min,
//! bound,bound_holds,gd_stability`)
//! and `summary.json`.
//!
//! The directory is built under a hidden staging name next to the target and renamed into place
//! when the run ends (completed or diverged), so a killed run never leaves a directory that
//! looks finished. Everything that can be wrong with the input is checked in [`prepare`], before
//! anything is written.
//!
//! - `build.rs` — [`prepare`]: data, graph, model, θ₀ and the memory checks;
//! - `output.rs` — `--out` checks, the staging directory, [`execute`], the checkpoint file;
//! - `gd_run.rs`, `flow_run.rs` — the two run loops;
//! - `writer.rs` — the one writer both loops write the run directory through;
//! - `state.rs` — the run's state between records ([`Checkpoint`]), NTK checkpoints;
//! - `summary.rs` — `summary.json` ([`RunSummary`]) and the CSV headers;
//! - `witness/` — the witness directory of a rank-deficient Jacobian.

mod build;
pub mod flow_run;
mod gd_run;
mod output;
mod state;
mod summary;
pub mod witness;
mod writer;

pub use build::{prepare, training_bytes, Prepared};
pub use output::{check_output_dir, execute, CHECKPOINT_FILE};
pub use state::{Checkpoint, FlowRunState, PERSISTENCE_DRAWS, PERSISTENCE_REL};
pub use summary::{
    CertificationTally, FlowRunSummary, GdComparison, KernelSummary, RunSummary, RunTiming, Status,
    FLOW_METRICS_HEADER, METRICS_HEADER, NTK_HEADER,
};

/// Options that do not change results.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Draw a progress bar on stderr (hidden anyway when stderr is not a terminal).
    pub progress: bool,
    /// Replace an existing run directory at `out`.
    pub force: bool,
    /// Continue the interrupted run in `out` from its checkpoint.
    pub resume: bool,
    /// Behave as if interrupted right after this epoch (for tests of resumption).
    pub stop_after_epoch: Option<usize>,
    /// Flow runs: behave as if interrupted right after this accepted step (counted from t = 0).
    pub stop_after_step: Option<u64>,
}
