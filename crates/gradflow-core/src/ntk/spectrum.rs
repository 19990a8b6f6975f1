//! Eigenvalues of the NTK: λ_min, λ_max, the condition number, the full spectrum on request.
//!
//! Dense H (fits the memory budget):
//! - extremes: block Krylov on H finds λ_max; a Cholesky factorisation H = LLᵀ (n³/3 flops, in
//!   place: no copy of H) proves H positive definite, then block Krylov on H⁻¹ (triangular solves
//!   with 8 right-hand sides per pass, Ritz vectors polished by one more H⁻¹) finds λ_min, and a
//!   product by H (kept in the upper triangle) measures its residual. If Cholesky fails, H is
//!   singular to working precision and the full symmetric eigen-decomposition gives λ_min (≈ 0,
//!   possibly slightly negative from rounding).
//! - full: faer's symmetric eigensolver.
//!
//! Matrix-free (past the budget): Lanczos on v ↦ J(Jᵀv) ([`matrix_free_extremes`], see
//! [`super::gram::NtkOperator`]) for networks that mix samples; preconditioned Davidson for the
//! others, see [`super::matrix_free`].
//! Every route reports a residual-based accuracy for λ_min.

use super::block_krylov::{block_krylov_bottom_via_inverse, block_krylov_top};
use super::lanczos::lanczos;
use faer::{Accum, Mat, MatMut, MatRef};
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

/// Residual ‖H y − ρ y‖ and Rayleigh quotient ρ = yᵀHy of a unit vector y, given H y.
fn rayleigh(hy: &[f64], y: &[f64]) -> (f64, f64) {
    let rq: f64 = hy.iter().zip(y).map(|(a, b)| a * b).sum();
    let res = hy
        .iter()
        .zip(y)
        .map(|(a, b)| (a - rq * b).powi(2))
        .sum::<f64>()
        .sqrt();
    (rq, res)
}

/// Vectors per block when looking for λ_max: an NTK's top is a cluster of about m eigenvalues
/// (one per output) far above the rest, and a block at least that wide takes it in a few passes.
const BLOCK_TOP: usize = 16;
/// Vectors per block for λ_min on H⁻¹ (one pass = two triangular solves reading the factor;
/// up to a few dozen right-hand sides a pass costs about as much as one).
const BLOCK_MIN: usize = 8;
/// Largest H for which a failed Cholesky falls back to the full dense eigensolver.
const DENSE_EIG_MAX: usize = 4000;
/// Column block of faer's right-looking Cholesky (its default is 128; wider blocks make the
/// trailing updates compute-bound at nm ≈ 10⁴).
const CHOLESKY_BLOCK: usize = 256;

/// out = H W, with H the full matrix `h` (`diag` None) or H held as the strict upper triangle of
/// `h` plus `diag` (as after [`cholesky_lower_in_place`]): two triangular products then.
pub fn product(
    h: MatRef<'_, f64>,
    diag: Option<&[f64]>,
    w: MatRef<'_, f64>,
    mut out: MatMut<'_, f64>,
) {
    use faer::linalg::matmul::triangular::{matmul as tri, BlockStructure as B};
    let Some(diag) = diag else {
        faer::linalg::matmul::matmul(out, Accum::Replace, h, w, 1.0, crate::batch::par());
        return;
    };
    let par = crate::batch::par();
    tri(
        out.as_mut(),
        B::Rectangular,
        Accum::Replace,
        h,
        B::StrictTriangularUpper,
        w,
        B::Rectangular,
        1.0,
        par,
    );
    tri(
        out.as_mut(),
        B::Rectangular,
        Accum::Add,
        h.transpose(),
        B::StrictTriangularLower,
        w,
        B::Rectangular,
        1.0,
        par,
    );
    for j in 0..w.ncols() {
        for (i, d) in diag.iter().enumerate() {
            out[(i, j)] += d * w[(i, j)];
        }
    }
}

/// H = LLᵀ in place on the lower triangle of `h`, leaving the strict upper triangle untouched
/// (faer's own in-place factorisation uses the upper triangle as scratch). Right-looking, by
/// column blocks: each diagonal block is factored by faer on a small copy, the panel below it by
/// a triangular solve, the trailing lower triangle updated by one product. False when a pivot is
/// not positive (H not positive definite to working precision); `h`'s lower triangle is then
/// partly overwritten.
pub fn cholesky_lower_in_place(h: MatMut<'_, f64>) -> bool {
    cholesky_lower_in_place_blocked(h, CHOLESKY_BLOCK)
}

/// [`cholesky_lower_in_place`] with column blocks of `block` (for tuning).
pub fn cholesky_lower_in_place_blocked(mut h: MatMut<'_, f64>, block: usize) -> bool {
    use faer::dyn_stack::{MemBuffer, MemStack};
    use faer::linalg::cholesky::llt::factor::{self, LltParams, LltRegularization};
    use faer::linalg::matmul::triangular::{matmul as tri, BlockStructure as B};
    let n = h.nrows();
    let par = crate::batch::par();
    let params: LltParams = faer::Auto::<f64>::auto();
    let nb0 = block.clamp(1, n.max(1));
    let mut mem = MemBuffer::new(factor::cholesky_in_place_scratch::<f64>(
        nb0,
        par,
        params.into(),
    ));
    let mut d = Mat::<f64>::zeros(nb0, nb0);
    let mut j = 0;
    while j < n {
        let nb = nb0.min(n - j);
        let mut dj = d.as_mut().submatrix_mut(0, 0, nb, nb);
        dj.copy_from(h.as_ref().submatrix(j, j, nb, nb));
        if factor::cholesky_in_place(
            dj.as_mut(),
            LltRegularization::default(),
            par,
            MemStack::new(&mut mem),
            params.into(),
        )
        .is_err()
        {
            return false;
        }
        for c in 0..nb {
            for r in c..nb {
                h[(j + r, j + c)] = dj[(r, c)];
            }
        }
        let rest = n - j - nb;
        if rest > 0 {
            let (_, _, mut below, mut trailing) = h
                .as_mut()
                .submatrix_mut(j, j, n - j, n - j)
                .split_at_mut(nb, nb);
            // Panel: A10 ← A10 L00⁻ᵀ, i.e. L00 A10ᵀ = A10ᵀ solved in place.
            faer::linalg::triangular_solve::solve_lower_triangular_in_place(
                dj.as_ref(),
                below.as_mut().transpose_mut(),
                par,
            );
            // Trailing update of the lower triangle: A11 ← A11 − A10 A10ᵀ.
            tri(
                trailing.as_mut(),
                B::TriangularLower,
                Accum::Add,
                below.as_ref(),
                B::Rectangular,
                below.as_ref().transpose(),
                B::Rectangular,
                -1.0,
                par,
            );
        }
        j += nb;
    }
    true
}

/// out = (LLᵀ)⁻¹ W with L the lower triangle of `l`.
pub fn cholesky_solve(l: MatRef<'_, f64>, w: MatRef<'_, f64>, mut out: MatMut<'_, f64>) {
    use faer::linalg::triangular_solve as ts;
    out.copy_from(w);
    ts::solve_lower_triangular_in_place(l, out.as_mut(), crate::batch::par());
    ts::solve_upper_triangular_in_place(l.transpose(), out, crate::batch::par());
}

/// λ_min and λ_max of a dense symmetric positive semi-definite matrix (a copy is taken; see
/// [`dense_extremes_owned`], which works in place).
pub fn dense_extremes(h: &Mat<f64>, tol: f64) -> Extremes {
    dense_extremes_owned(h.clone(), tol)
}

/// λ_min and λ_max of a dense symmetric positive semi-definite matrix, consuming it (no copy of
/// the matrix is made: at nm = 10⁴ it is 800 MB).
///
/// λ_max by block Krylov on H (residual below `tol`·λ_max); then a Cholesky factorisation
/// H = LLᵀ in place on the lower triangle, the diagonal saved, the strict upper triangle still
/// holding H. If it succeeds, block Krylov on H⁻¹ (triangular solves with blocks of right-hand
/// sides) with polished Ritz vectors (see [`block_krylov_bottom_via_inverse`]) gives λ_min, run
/// until the residual is below √`tol`·λ_min (the eigenvalue error is then of order
/// residual²/gap, far below the residual; the matrix-free route uses the same rule); if it fails, H
/// is singular to working precision, the lower triangle is restored and λ_min comes from the full
/// eigensolver (n ≤ 4000) or from block Krylov on σI − H. Every λ_min carries the residual of its
/// Ritz vector, measured with a product by H (from the upper triangle and the saved diagonal).
pub fn dense_extremes_owned(mut h: Mat<f64>, tol: f64) -> Extremes {
    let n = h.nrows();
    let mut apply_h = |v: MatRef<'_, f64>, out: MatMut<'_, f64>| product(h.as_ref(), None, v, out);
    let top = block_krylov_top(n, &mut apply_h, BLOCK_TOP, 100, tol, 11);
    let lambda_max = top.value;
    let diag: Vec<f64> = (0..n).map(|i| h[(i, i)]).collect();
    if cholesky_lower_in_place(h.as_mut()) {
        let mut apply_inv =
            |v: MatRef<'_, f64>, out: MatMut<'_, f64>| cholesky_solve(h.as_ref(), v, out);
        let r = block_krylov_bottom_via_inverse(n, &mut apply_inv, BLOCK_MIN, 100, tol.sqrt(), 12);
        if r.value > 0.0 {
            let y = MatRef::from_column_major_slice(&r.vector, n, 1);
            let mut hy = Mat::<f64>::zeros(n, 1);
            product(h.as_ref(), Some(&diag), y, hy.as_mut());
            let (rq, res) = rayleigh(hy.col(0).try_as_col_major().unwrap().as_slice(), &r.vector);
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
    // Not positive definite to working precision: restore H from its upper triangle.
    for j in 0..n {
        h[(j, j)] = diag[j];
        for i in j + 1..n {
            h[(i, j)] = h[(j, i)];
        }
    }
    if n > DENSE_EIG_MAX {
        let sigma = lambda_max * (1.0 + 1e-3) + top.residual;
        let mut apply_shift = |v: MatRef<'_, f64>, mut out: MatMut<'_, f64>| {
            product(h.as_ref(), None, v, out.as_mut());
            for j in 0..v.ncols() {
                for i in 0..n {
                    out[(i, j)] = sigma * v[(i, j)] - out[(i, j)];
                }
            }
        };
        let r = block_krylov_top(n, &mut apply_shift, BLOCK_MIN, 200, tol, 13);
        let y = MatRef::from_column_major_slice(&r.vector, n, 1);
        let hy = &h * y;
        let (rq, res) = rayleigh(hy.col(0).try_as_col_major().unwrap().as_slice(), &r.vector);
        return Extremes {
            lambda_min: rq,
            lambda_max,
            lambda_min_accuracy: res,
            lambda_max_accuracy: top.residual,
            method: "shifted-block-krylov".into(),
            iterations: r.passes + top.passes,
        };
    }
    let all = full_spectrum(&h);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn spd(n: usize) -> Mat<f64> {
        use rand_distr::{Distribution, StandardNormal};
        let mut rng = crate::rng::stream(n as u64, crate::rng::Stream::Init);
        let a = Mat::<f64>::from_fn(n, n + 3, |_, _| StandardNormal.sample(&mut rng));
        &a * a.transpose()
    }

    /// The in-place factorisation leaves the strict upper triangle (H's copy) untouched, solves
    /// with the factor invert H, and the product from the upper triangle plus diagonal is H.
    #[test]
    fn in_place_cholesky_keeps_the_upper_copy() {
        for n in [5usize, 70, 300, 700] {
            let h = spd(n);
            let mut f = h.clone();
            let diag: Vec<f64> = (0..n).map(|i| h[(i, i)]).collect();
            assert!(cholesky_lower_in_place(f.as_mut()));
            for j in 0..n {
                for i in 0..j {
                    assert_eq!(f[(i, j)], h[(i, j)], "n={n}: upper ({i}, {j}) changed");
                }
            }
            let w = Mat::<f64>::from_fn(n, 3, |i, j| ((i + 2 * j) % 5) as f64 - 2.0);
            let mut x = Mat::<f64>::zeros(n, 3);
            cholesky_solve(f.as_ref(), w.as_ref(), x.as_mut());
            let back = &h * &x;
            assert!((&back - &w).norm_l2() <= 1e-8 * w.norm_l2(), "n={n}: solve");
            let mut hw = Mat::<f64>::zeros(n, 3);
            product(f.as_ref(), Some(&diag), w.as_ref(), hw.as_mut());
            assert!(
                (&hw - &h * &w).norm_l2() <= 1e-12 * (&h * &w).norm_l2(),
                "n={n}: product"
            );
        }
    }
}
