//! Integration tests, cli: the `gradflow` binary end to end: its files read back by independent readers, bad input, reports, resume after a signal, verdicts and witnesses.
//! One binary per area; the helpers all areas share are in `tests/common/`.

#[path = "../common/mod.rs"]
mod common;

mod bad_input;
mod commands;
mod flow_resume;
mod report;
mod reproduce_no_ntk;
mod reproduce_threshold;
mod resume;
mod slurm;
mod verdicts;
mod witness;
