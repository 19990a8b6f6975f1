//! Lanczos with full reorthogonalisation for one extreme eigenpair of a symmetric operator given
//! only as products v ↦ A v. The answer comes with its own accuracy: the residual
//! r = ‖A y − θ y‖ of the returned unit Ritz vector y, and for a symmetric A some eigenvalue lies
//! within r of θ (Bauer–Fike / Kahan), so every reported eigenvalue carries a checkable bound.

use crate::rng::{stream, Stream};
use faer::Mat;
use rand_distr::{Distribution, StandardNormal};

#[derive(Clone, Debug)]
pub struct LanczosResult {
    /// The Ritz value θ.
    pub value: f64,
    /// The unit Ritz vector y.
    pub vector: Vec<f64>,
    /// ‖A y − θ y‖ from one extra product: an eigenvalue of A lies within it of θ.
    pub residual: f64,
    pub iterations: usize,
    pub converged: bool,
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The largest (`largest = true`) or smallest eigenpair of the symmetric operator `op`
/// (`op(v, out)` sets out = A v) on R^dim. Stops when the estimated residual is below
/// `tol`·max(|θ|, ‖T‖) or after `max_iter` products.
pub fn lanczos(
    dim: usize,
    op: &mut dyn FnMut(&[f64], &mut [f64]),
    largest: bool,
    max_iter: usize,
    tol: f64,
    seed: u64,
) -> LanczosResult {
    let max_iter = max_iter.clamp(1, dim);
    let mut rng = stream(seed, Stream::Init);
    let mut v: Vec<f64> = (0..dim).map(|_| StandardNormal.sample(&mut rng)).collect();
    let nv = dot(&v, &v).sqrt();
    v.iter_mut().for_each(|x| *x /= nv);
    let mut basis: Vec<Vec<f64>> = vec![v];
    let (mut alpha, mut beta) = (Vec::<f64>::new(), Vec::<f64>::new());
    let mut w = vec![0.0; dim];
    let mut best = (0.0, Vec::new());
    let mut converged = false;
    for j in 0..max_iter {
        op(&basis[j], &mut w);
        let a = dot(&basis[j], &w);
        alpha.push(a);
        // Full reorthogonalisation, twice (classical Gram–Schmidt "twice is enough").
        for _ in 0..2 {
            for q in &basis {
                let c = dot(q, &w);
                w.iter_mut().zip(q).for_each(|(wi, qi)| *wi -= c * qi);
            }
        }
        let b = dot(&w, &w).sqrt();
        let (theta, s) = ritz(&alpha, &beta, largest);
        let scale = alpha
            .iter()
            .map(|x| x.abs())
            .fold(0.0, f64::max)
            .max(theta.abs())
            .max(f64::MIN_POSITIVE);
        let estimate = b * s.last().unwrap().abs();
        best = (theta, s);
        if estimate <= tol * scale || b <= 1e-14 * scale || j + 1 == max_iter {
            converged = estimate <= tol * scale || b <= 1e-14 * scale;
            break;
        }
        beta.push(b);
        basis.push(w.iter().map(|x| x / b).collect());
    }
    let (_, s) = best;
    let mut y = vec![0.0; dim];
    for (q, &sk) in basis.iter().zip(&s) {
        y.iter_mut().zip(q).for_each(|(yi, qi)| *yi += sk * qi);
    }
    let ny = dot(&y, &y).sqrt();
    y.iter_mut().for_each(|x| *x /= ny);
    op(&y, &mut w);
    let rq = dot(&y, &w);
    let residual = w
        .iter()
        .zip(&y)
        .map(|(a, b)| (a - rq * b).powi(2))
        .sum::<f64>()
        .sqrt();
    LanczosResult {
        value: rq,
        vector: y,
        residual,
        iterations: alpha.len(),
        converged,
    }
}

/// The extreme eigenpair of the tridiagonal T(alpha, beta).
fn ritz(alpha: &[f64], beta: &[f64], largest: bool) -> (f64, Vec<f64>) {
    let k = alpha.len();
    let t = Mat::<f64>::from_fn(k, k, |i, j| {
        if i == j {
            alpha[i]
        } else if i == j + 1 {
            beta[j]
        } else if j == i + 1 {
            beta[i]
        } else {
            0.0
        }
    });
    let evd = t
        .self_adjoint_eigen(faer::Side::Lower)
        .expect("tridiagonal eigen-decomposition");
    let idx = if largest { k - 1 } else { 0 };
    let value = evd.S().column_vector()[idx];
    let s: Vec<f64> = (0..k).map(|i| evd.U()[(i, idx)]).collect();
    (value, s)
}
