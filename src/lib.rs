//! gradflow: gradient flow on networks built from polynomial layers and piecewise-polynomial
//! activations — training, the neural tangent kernel, and the checks of the paper's Theorem 3.1.
//!
//! The public API mirrors what a researcher does: build a [`model::Model`] (from a preset or
//! from layers), make or load data, train it by gradient descent, compute NTK spectra, and read
//! back every number from a run directory.

pub mod activation;
pub mod batch;
pub mod config;
pub mod data;
pub mod engine;
pub mod error;
pub mod experiment;
pub mod flow;
pub mod graph;
pub mod init;
pub mod interrupt;
pub mod io;
pub mod kinks;
pub mod layers;
pub mod loss;
pub mod model;
pub mod ntk;
pub mod params;
mod prefetch;
pub mod presets;
pub mod report;
pub mod rng;
pub mod run;
pub mod theory;
pub mod train;

pub use batch::Batch;
pub use error::{Error, Result};
