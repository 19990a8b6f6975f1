//! The identity map y = x: the skip branch of a U-Net's fan-out (x and the processed x are
//! concatenated along channels), and a neutral element for composing networks by hand.

use super::{no_tape, Batch, Layer, Structure, Tape};

#[derive(Clone, Debug)]
pub struct Identity {
    pub dim: usize,
}

impl Identity {
    pub fn new(dim: usize) -> Self {
        Self { dim }
    }
}

impl Layer for Identity {
    fn describe(&self) -> String {
        format!("identity ({})", self.dim)
    }
    fn in_dim(&self) -> usize {
        self.dim
    }
    fn out_dim(&self) -> usize {
        self.dim
    }
    fn forward(&self, _: &[f64], x: &Batch) -> (Batch, Tape) {
        (x.clone(), no_tape())
    }
    fn vjp(&self, _: &[f64], _: &Batch, _: &Tape, y_bar: &Batch, _: &mut [f64]) -> Batch {
        y_bar.clone()
    }
    fn jvp(&self, _: &[f64], _: &Batch, _: &Tape, x_dot: &Batch, _: &[f64]) -> Batch {
        x_dot.clone()
    }
    /// The composition of no layers.
    fn structure(&self) -> Structure<'_> {
        Structure::Serial(Vec::new())
    }
}
