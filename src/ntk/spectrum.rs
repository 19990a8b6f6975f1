//! Eigenvalues of the NTK: λ_min, λ_max, the condition number, the full spectrum on request.
//!
//! Dense H (fits the memory budget):
//! - extremes: block Krylov on H finds λ_max; a Cholesky factorisation H = LLᵀ (n³/3 flops)
//!   proves H positive definite, then block Krylov on H⁻¹ (triangular solves with 8 right-hand
//!   sides per pass) finds 1/λ_min in a few passes. If Cholesky fails, H is singular to working precision and the full
//!   symmetric eigen-decomposition gives λ_min (≈ 0, possibly slightly negative from rounding).
//! - full: faer's symmetric eigensolver.
//!
//! Matrix-free (past the budget): Lanczos on v ↦ J(Jᵀv) ([`matrix_free_extremes`], see
//! [`super::gram::NtkOperator`]) for networks that mix samples; preconditioned Davidson for the
//! others, see [`super::matrix_free`].
//! Every route reports a residual-based accuracy for λ_min.

use super::block_krylov::block_krylov_top;
use super::lanczos::lanczos;
use faer::linalg::solvers::Solve;
use faer::Mat;
use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct Extremes {
    pub lambda_min: f64,
    pub lambda_max: f64,
    /// An eigenvalue of H lies within this of `lambda_min` (residual bound, or n·ε·λ_max for the
    /// dense eigensolver).
    pub lambda_min_accuracy: f64,
    pub lambda_max_accuracy: f64,
    /// How λ_min was found: "cholesky+block-krylov", "shifted-block-krylov", "dense-eig", "lanczos",
    /// "davidson+…" (the preconditioned matrix-free route).
    pub method: String,
    /// Lanczos steps or Davidson products taken (0 for the dense eigensolver).
    pub iterations: usize,
}

impl Extremes {
    pub fn condition(&self) -> f64 {
        if self.lambda_min > 0.0 {
            self.lambda_max / self.lambda_min
        } else {
            f64::INFINITY
        }
    }
}

/// All eigenvalues of the symmetric `h`, ascending.
pub fn full_spectrum(h: &Mat<f64>) -> Vec<f64> {
    h.self_adjoint_eigenvalues(faer::Side::Lower)
        .expect("symmetric eigenvalues")
}

fn matvec(h: &Mat<f64>, v: &[f64], out: &mut [f64]) {
    let n = h.nrows();
    let vm = faer::MatRef::from_column_major_slice(v, n, 1);
    let om = faer::MatMut::from_column_major_slice_mut(out, n, 1);
    faer::linalg::matmul::matmul(
        om,
        faer::Accum::Replace,
        h.as_ref(),
        vm,
        1.0,
        crate::batch::par(),
    );
}

/// Residual ‖H y − ρ y‖ and Rayleigh quotient ρ = yᵀHy of a unit vector y.
fn rayleigh(h: &Mat<f64>, y: &[f64]) -> (f64, f64) {
    let mut hy = vec![0.0; y.len()];
    matvec(h, y, &mut hy);
    let rq: f64 = hy.iter().zip(y).map(|(a, b)| a * b).sum();
    let res = hy
        .iter()
        .zip(y)
        .map(|(a, b)| (a - rq * b).powi(2))
        .sum::<f64>()
        .sqrt();
    (rq, res)
}

/// Vectors per block in the block Krylov solves (one pass over H serves this many).
const BLOCK: usize = 8;
/// Largest H for which a failed Cholesky falls back to the full dense eigensolver.
const DENSE_EIG_MAX: usize = 4000;

/// λ_min and λ_max of a dense symmetric positive semi-definite matrix.
///
/// λ_max by block Krylov on H; then a Cholesky factorisation H = LLᵀ: if it succeeds, block
/// Krylov on H⁻¹ (triangular solves with blocks of right-hand sides) gives 1/λ_min; if it fails, H
/// is singular to working precision and λ_min comes from the full eigensolver (n ≤ 4000) or from
/// block Krylov on σI − H. Every λ_min carries the residual of its Ritz vector, measured on H.
pub fn dense_extremes(h: &Mat<f64>, tol: f64) -> Extremes {
    let n = h.nrows();
    let mut apply_h = |v: &Mat<f64>| h * v;
    let top = block_krylov_top(n, &mut apply_h, BLOCK, 100, tol, 11);
    let lambda_max = top.value;
    if let Ok(llt) = h.llt(faer::Side::Lower) {
        let mut apply_inv = |v: &Mat<f64>| llt.solve(v);
        let r = block_krylov_top(n, &mut apply_inv, BLOCK, 100, tol, 12);
        if r.value > 0.0 {
            let (rq, res) = rayleigh(h, &r.vector);
            return Extremes {
                lambda_min: rq,
                lambda_max,
                lambda_min_accuracy: res,
                lambda_max_accuracy: top.residual,
                method: "cholesky+block-krylov".into(),
                iterations: r.passes + top.passes,
            };
        }
    }
    if n > DENSE_EIG_MAX {
        let sigma = lambda_max * (1.0 + 1e-3) + top.residual;
        let mut apply_shift = |v: &Mat<f64>| v * faer::Scale(sigma) - h * v;
        let r = block_krylov_top(n, &mut apply_shift, BLOCK, 200, tol, 13);
        let (rq, res) = rayleigh(h, &r.vector);
        return Extremes {
            lambda_min: rq,
            lambda_max,
            lambda_min_accuracy: res,
            lambda_max_accuracy: top.residual,
            method: "shifted-block-krylov".into(),
            iterations: r.passes + top.passes,
        };
    }
    let all = full_spectrum(h);
    let eps_bound = n as f64
        * f64::EPSILON
        * all
            .last()
            .copied()
            .unwrap_or(0.0)
            .abs()
            .max(lambda_max.abs());
    Extremes {
        lambda_min: all[0],
        lambda_max: *all.last().unwrap(),
        lambda_min_accuracy: eps_bound,
        lambda_max_accuracy: eps_bound,
        method: "dense-eig".into(),
        iterations: 0,
    }
}

/// λ_min and λ_max from products only (`op(v, out)`: out = H v), by Lanczos.
pub fn matrix_free_extremes(
    dim: usize,
    op: &mut dyn FnMut(&[f64], &mut [f64]),
    max_iter: usize,
    tol: f64,
) -> Extremes {
    let top = lanczos(dim, op, true, max_iter, tol, 11);
    let bottom = lanczos(dim, op, false, max_iter, tol, 12);
    Extremes {
        lambda_min: bottom.value,
        lambda_max: top.value,
        lambda_min_accuracy: bottom.residual,
        lambda_max_accuracy: top.residual,
        method: "lanczos".into(),
        iterations: top.iterations + bottom.iterations,
    }
}
