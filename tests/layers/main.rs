//! Integration tests, layers: the Layer contract and every layer: derivatives by finite differences, activations, image, graph and combinator layers, initialisation.
//! One binary per area; the helpers all areas share are in `tests/common/`.

#[path = "../common/mod.rs"]
mod common;

mod activations;
mod derivatives;
mod graph_and_combinators;
mod image;
mod init;
