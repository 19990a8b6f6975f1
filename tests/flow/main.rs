//! Integration tests, flow: the kink-aware gradient-flow solver: against DOP853-quality references, GD's η → 0 limit, Filippov sliding invariants, and `reproduce --solver flow`.
//! One binary per area; the helpers all areas share are in `tests/common/`.

#[path = "../common/mod.rs"]
mod common;

mod compiled;
mod control;
mod filippov;
mod graph_rows;
mod kinks;
mod release;
mod reproduce;
mod richardson;
mod siamese;
mod solver;
