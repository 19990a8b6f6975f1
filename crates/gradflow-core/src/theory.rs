//! The paper's claims as checkable numbers: over-parametrisation p ≥ nm, the Grönwall bound
//! L(t) ≤ L(0)·exp(−4c ∫₀ᵗ λ_min(H(s)) ds) tested at every NTK checkpoint, and the fitted linear
//! rate of log L.
//!
//! The integral is the trapezoid rule over the checkpoints, so it is only as good as their
//! spacing: with checkpoints far apart a fast-changing λ_min can make the estimate (and the
//! verdict) wrong either way. The checkpoint times and values are saved so anyone can redo it.

use serde::Serialize;

/// p ≥ nm: the necessary condition for λ_min(H) > 0.
pub fn overparametrized(p: usize, n: usize, m: usize) -> bool {
    p >= n * m
}

/// One checkpoint of the bound.
#[derive(Clone, Copy, Debug, Serialize, serde::Deserialize)]
pub struct BoundCheck {
    pub epoch: usize,
    pub t: f64,
    pub loss: f64,
    pub lambda_min: f64,
    /// ∫₀ᵗ λ_min ds by the trapezoid rule over checkpoints.
    pub integral: f64,
    /// L(0)·exp(−4c ∫λ_min).
    pub bound: f64,
    /// loss ≤ bound (with a relative slack of 1e-9 for rounding).
    pub holds: bool,
}

/// Accumulates ∫λ_min over checkpoints and checks the bound at each.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct BoundTracker {
    c: f64,
    initial_loss: f64,
    last: Option<(f64, f64)>,
    integral: f64,
    pub checks: Vec<BoundCheck>,
}

impl BoundTracker {
    /// `c` is the loss constant (L = c‖e‖²), `initial_loss` is L(0).
    pub fn new(c: f64, initial_loss: f64) -> Self {
        Self {
            c,
            initial_loss,
            last: None,
            integral: 0.0,
            checks: Vec::new(),
        }
    }
    pub fn observe(&mut self, epoch: usize, t: f64, loss: f64, lambda_min: f64) -> BoundCheck {
        if let Some((t0, l0)) = self.last {
            self.integral += 0.5 * (t - t0) * (l0 + lambda_min);
        }
        self.last = Some((t, lambda_min));
        let bound = self.initial_loss * (-4.0 * self.c * self.integral).exp();
        let check = BoundCheck {
            epoch,
            t,
            loss,
            lambda_min,
            integral: self.integral,
            bound,
            holds: loss <= bound * (1.0 + 1e-9),
        };
        self.checks.push(check);
        check
    }
    pub fn violations(&self) -> Vec<BoundCheck> {
        self.checks.iter().filter(|c| !c.holds).copied().collect()
    }
}

/// Least-squares slope of ln L against t: the fitted linear rate r in L ≈ A·e^{−r t}
/// (r > 0 means decay). Points with non-positive loss are skipped. None with < 2 points.
pub fn fitted_rate(t: &[f64], loss: &[f64]) -> Option<f64> {
    let pts: Vec<(f64, f64)> = t
        .iter()
        .zip(loss)
        .filter(|(_, &l)| l > 0.0)
        .map(|(&t, &l)| (t, l.ln()))
        .collect();
    if pts.len() < 2 {
        return None;
    }
    let k = pts.len() as f64;
    let (mt, ml) = pts
        .iter()
        .fold((0.0, 0.0), |(a, b), (t, l)| (a + t / k, b + l / k));
    let (mut stt, mut stl) = (0.0, 0.0);
    for (t, l) in &pts {
        stt += (t - mt) * (t - mt);
        stl += (t - mt) * (l - ml);
    }
    (stt > 0.0).then(|| -stl / stt)
}
