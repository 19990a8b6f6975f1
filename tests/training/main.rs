//! Integration tests, training: presets, data, graphs and gradient-descent training: against hand computations, independent forward passes and the loss's closed forms.
//! One binary per area; the helpers all areas share are in `tests/common/`.

#[path = "../common/mod.rs"]
mod common;

mod data_and_graph;
mod fuzz_inputs;
mod numerical_health;
mod presets;
mod presets_extra;
