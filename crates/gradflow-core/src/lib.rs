//! gradflow's numerical core: gradient flow on networks built from polynomial layers and
//! piecewise-polynomial activations — layers, models, training, the neural tangent kernel and its
//! spectra, the kink-aware flow solver, and array and parameter I/O.
//!
//! It carries no plotting, command-line or progress-bar dependencies: the `gradflow` crate (the
//! command line, run directories, reports) and the Python bindings build on it. The public API
//! mirrors what a researcher does: build a [`model::Model`] (from a preset or from layers), make or
//! load data, train it by gradient descent or integrate the flow, and compute NTK spectra.

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
