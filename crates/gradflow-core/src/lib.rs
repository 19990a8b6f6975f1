//! gradflow's numerical core: gradient flow on networks built from polynomial layers and
//! piecewise-polynomial activations — layers, models, training, the neural tangent kernel and its
//! spectra, the kink-aware flow solver, and array and parameter I/O.
//!
//! It carries no plotting, command-line or progress-bar dependencies: the `gradflow` crate (the
//! command line, run directories, reports) and the Python bindings build on it. The public API
//! mirrors what a researcher does: build a [`model::Model`] (from a preset or from layers), make or
//! load data, train it by gradient descent or integrate the flow, and compute NTK spectra.
//!
//! ```
//! use gradflow_core::activation::Activation;
//! use gradflow_core::data::Dataset;
//! use gradflow_core::init::{init_params, InitScheme};
//! use gradflow_core::ntk::{ntk_spectrum, NtkOptions};
//! use gradflow_core::presets;
//!
//! // n = 12 points in the unit ball of R^3 with m = 2 targets; a 3 → [16] → 2 leaky-ReLU net.
//! let data = Dataset::ball(12, 3, 2, 0);
//! let model = presets::dnn(3, &[16], 2, &Activation::LeakyRelu { slope: 0.01 });
//! let theta = init_params(&model.param_specs(), &InitScheme::Torch, 0);
//! assert!(model.p() >= data.n() * data.m()); // p = 98 ≥ nm = 24: over-parametrised
//!
//! // H(θ) = J Jᵀ: its least eigenvalue, J's rank, and a proven lower bound where one exists.
//! let h = ntk_spectrum(&model, &theta, &data.x, &NtkOptions::default())?;
//! assert_eq!(h.dim, 24);
//! assert!(h.lambda_min > 0.0 && h.lambda_min <= h.lambda_max);
//! assert_eq!(h.jacobian.jacobian_rank, Some(24));
//! # Ok::<(), gradflow_core::Error>(())
//! ```

pub mod activation;
pub mod batch;
pub mod config;
pub mod data;
pub mod engine;
pub mod error;
pub mod flow;
pub mod graph;
pub mod init;
pub mod io;
pub mod kinks;
pub mod layers;
pub mod loss;
pub mod model;
pub mod ntk;
pub mod oracle;
pub mod params;
mod prefetch;
pub mod presets;
pub mod rng;
pub mod spec;
pub mod theory;
pub mod train;

pub use batch::Batch;
pub use error::{Error, Result};

/// Held by unit tests that change faer's global parallelism and by those that compare two
/// computations bit for bit: the parallelism fixes the order of faer's sums, so such a
/// comparison must not overlap a change of it in another test thread.
#[cfg(test)]
pub(crate) fn parallelism_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
