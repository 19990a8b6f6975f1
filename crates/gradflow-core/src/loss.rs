//! The squared losses L(θ) = c‖u(θ) − vec(y)‖²: `mse` (c = 1/(nm), PyTorch's `nn.MSELoss()`, the
//! paper's experiments) and `half-sse` (c = 1/2, the usual theory convention).

use crate::batch::Batch;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossKind {
    Mse,
    HalfSse,
}

impl LossKind {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Mse => "mse",
            Self::HalfSse => "half-sse",
        }
    }
    /// The constant c in L = c‖e‖² for n samples with m outputs each.
    pub fn c(&self, n: usize, m: usize) -> f64 {
        match self {
            Self::Mse => 1.0 / (n * m) as f64,
            Self::HalfSse => 0.5,
        }
    }
    /// L and the cotangent ∂L/∂u = 2c e, for outputs u and targets y (both m × n).
    pub fn value_and_cotangent(&self, u: &Batch, y: &Batch) -> (f64, Batch) {
        let c = self.c(u.n(), u.features());
        let mut g = u.clone();
        let mut sse = 0.0;
        for (gi, yi) in g.as_mut_slice().iter_mut().zip(y.as_slice()) {
            let e = *gi - yi;
            sse += e * e;
            *gi = 2.0 * c * e;
        }
        (c * sse, g)
    }
    pub fn value(&self, u: &Batch, y: &Batch) -> f64 {
        let c = self.c(u.n(), u.features());
        c * u
            .as_slice()
            .iter()
            .zip(y.as_slice())
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f64>()
    }
}
