//! The kernel-regime view of a run: the linearised prediction and the NTK's drift.
//!
//! Linearising the network at θ(0) freezes the NTK, and the flow of the errors becomes linear:
//! de/dt = −2c H(0) e, so e_lin(t) = exp(−2c H(0) t) e(0) and, with H(0) = Σ λ_k q_k q_kᵀ,
//!
//! L_lin(t) = c‖e_lin(t)‖² = c Σ_k exp(−4c λ_k t) (q_kᵀ e(0))².
//!
//! Its gap to the real loss, and the relative drift ‖H(t) − H(0)‖_F / ‖H(0)‖_F, say how far a run
//! is from lazy training. Both need the dense nm × nm kernel, so they are computed only when it
//! is small enough ([`dense_kernel_affordable`]).

use crate::batch::Batch;
use crate::loss::LossKind;
use crate::model::Model;
use crate::ntk::gram::{gram, gram_bytes};
use faer::Mat;

/// Largest nm for which runs compute the linearised prediction and the drift by default (a
/// dense symmetric eigen-decomposition of this size takes seconds on two cores).
pub const MAX_DENSE_NM: usize = 3000;

/// True when H fits in `budget_bytes` three times over and nm ≤ [`MAX_DENSE_NM`].
pub fn dense_kernel_affordable(model: &Model, n: usize, budget_bytes: u64) -> bool {
    n * model.out_dim() <= MAX_DENSE_NM && 3 * gram_bytes(model, n) <= budget_bytes
}

/// The kernel-regime view of a run from θ(0) on (x, y), from one Gram matrix H(0): the
/// linearised loss, and with `with_drift` H(0) kept for the drift.
pub fn kernel_view(
    model: &Model,
    theta0: &[f64],
    x: &Batch,
    y: &Batch,
    loss: LossKind,
    with_drift: bool,
) -> (Option<Linearised>, Option<Drift>) {
    let (h0, _) = gram(model, theta0, x);
    let u = model.outputs(theta0, x);
    let e0: Vec<f64> = u
        .as_slice()
        .iter()
        .zip(y.as_slice())
        .map(|(a, b)| a - b)
        .collect();
    let lin = Linearised::from_kernel(&h0, &e0, loss.c(x.n(), y.features()));
    (lin, with_drift.then(|| Drift::from_kernel(h0)))
}

/// L_lin(t) for one initial state.
#[derive(Clone, Debug)]
pub struct Linearised {
    c: f64,
    /// Eigenvalues of H(0) (clamped at 0) and the squared projections (q_kᵀ e(0))².
    lambdas: Vec<f64>,
    weights: Vec<f64>,
}

impl Linearised {
    /// From a kernel H(0) and the initial errors e(0) (ordering i·m + a), with L = c‖e‖².
    /// None when the eigen-decomposition fails (a non-finite kernel).
    pub fn from_kernel(h: &Mat<f64>, e0: &[f64], c: f64) -> Option<Self> {
        let eig = h.self_adjoint_eigen(faer::Side::Lower).ok()?;
        let (q, s) = (eig.U(), eig.S());
        let k = e0.len();
        let mut lambdas = Vec::with_capacity(k);
        let mut weights = Vec::with_capacity(k);
        for j in 0..k {
            let proj: f64 = (0..k).map(|i| q[(i, j)] * e0[i]).sum();
            lambdas.push(s[j].max(0.0));
            weights.push(proj * proj);
        }
        Some(Self {
            c,
            lambdas,
            weights,
        })
    }

    /// L_lin(t).
    pub fn loss(&self, t: f64) -> f64 {
        self.c
            * self
                .lambdas
                .iter()
                .zip(&self.weights)
                .map(|(l, w)| (-4.0 * self.c * l * t).exp() * w)
                .sum::<f64>()
    }
}

/// ‖H(t) − H(0)‖_F / ‖H(0)‖_F against a stored H(0).
#[derive(Clone, Debug)]
pub struct Drift {
    h0: Mat<f64>,
    norm0: f64,
}

impl Drift {
    /// Against the kernel H(0).
    pub fn from_kernel(h0: Mat<f64>) -> Self {
        let norm0 = h0.norm_l2();
        Self { h0, norm0 }
    }

    /// The relative drift at θ.
    pub fn at(&self, model: &Model, theta: &[f64], x: &Batch) -> f64 {
        let (h, _) = gram(model, theta, x);
        (&h - &self.h0).norm_l2() / self.norm0.max(f64::MIN_POSITIVE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A diagonal kernel: L_lin(t) = c Σ exp(−4cλ_k t) e_k², by hand.
    #[test]
    fn diagonal_kernel_by_hand() {
        let h = Mat::<f64>::from_fn(3, 3, |i, j| if i == j { [1.0, 2.0, 0.5][i] } else { 0.0 });
        let e0 = [1.0, -2.0, 0.5];
        let c = 0.1;
        let lin = Linearised::from_kernel(&h, &e0, c).unwrap();
        let t = 1.7;
        let want = c
            * ((-0.4f64 * 1.0 * t).exp() * 1.0
                + (-0.4f64 * 2.0 * t).exp() * 4.0
                + (-0.4f64 * 0.5 * t).exp() * 0.25);
        assert!(
            (lin.loss(t) - want).abs() < 1e-14,
            "{} vs {want}",
            lin.loss(t)
        );
        assert!((lin.loss(0.0) - c * 5.25).abs() < 1e-14);
    }
}
