//! gradflow: puts the paper's gradient-flow convergence theorem on trial. This crate holds what a
//! user runs — run directories ([`run`]), the paper's reproductions ([`experiment`]), reports and
//! plots ([`report`]), Ctrl-C handling ([`interrupt`]) — over the numerical core,
//! `gradflow_core`, whose modules are re-exported here under the same names.

pub use gradflow_core::{
    activation, batch, config, data, engine, error, flow, graph, init, io, kinks, layers, loss,
    model, ntk, oracle, params, presets, rng, spec, theory, train, Batch, Error, Result,
};

pub mod experiment;
pub mod interrupt;
pub mod report;
pub mod run;
