//! Block Krylov (block Lanczos with full reorthogonalisation and Rayleigh–Ritz on the whole
//! basis) for the largest eigenpair of a symmetric operator applied to *blocks* of vectors.
//!
//! Dense NTKs of 10⁴ rows are memory-bound for one vector at a time: a product reads all of H
//! (or of its Cholesky factor) for 2 flops per entry. A block of b vectors reads it once for 2b
//! flops per entry, so the same pass does b times the work; and a block Krylov space converges in
//! fewer passes than a single-vector one. The result carries its own accuracy: the true residual
//! ‖A y − θ y‖ of the returned unit Ritz vector.
//!
//! Bookkeeping is incremental so that a pass costs little beyond the operator: the basis V and
//! A V live in preallocated column ranges (grown by doubling), the projected matrix T = Vᵀ A V
//! gains only its new block column per pass, and the next block is orthogonalised against V with
//! two matrix products (classical Gram–Schmidt twice).

use crate::batch::par;
use crate::rng::{stream, Stream};
use faer::linalg::matmul::matmul;
use faer::{Accum, Col, Mat, MatMut, MatRef};
use rand_distr::{Distribution, StandardNormal};

#[derive(Clone, Debug)]
pub struct TopEigenpair {
    pub value: f64,
    pub vector: Vec<f64>,
    /// ‖A y − θ y‖ for the unit Ritz vector y: an eigenvalue of A lies within it of θ.
    pub residual: f64,
    /// Operator applications (blocks).
    pub passes: usize,
    pub converged: bool,
}

/// Orthonormalises the columns of `w` against the orthonormal columns of `v` (twice), then among
/// themselves (thin QR). Returns None when the block has (numerically) nothing left.
fn orthonormalize(v: MatRef<'_, f64>, mut w: Mat<f64>) -> Option<Mat<f64>> {
    let before = w.norm_l2();
    if v.ncols() > 0 {
        for _ in 0..2 {
            let c = v.transpose() * &w;
            matmul(w.as_mut(), Accum::Add, v, c.as_ref(), -1.0, par());
        }
    }
    let after = w.norm_l2();
    if after.is_nan() || after <= 1e-10 * before.max(f64::MIN_POSITIVE) {
        return None;
    }
    Some(w.qr().compute_thin_Q())
}

/// A dim × cap matrix whose first `k` columns are in use, grown by doubling.
fn ensure_cols(m: &mut Mat<f64>, k: usize, need: usize, limit: usize) {
    if need <= m.ncols() {
        return;
    }
    let cap = need.max(2 * m.ncols()).min(limit.max(need));
    let mut grown = Mat::<f64>::zeros(m.nrows(), cap);
    grown
        .as_mut()
        .subcols_mut(0, k)
        .copy_from(m.as_ref().subcols(0, k));
    *m = grown;
}

/// The largest eigenpair of the symmetric operator `apply` (`apply(W, out)` sets out = A W for a
/// dim × b block), with blocks of `block` vectors, at most `max_passes` applications, stopping
/// when the residual is below `tol`·|θ| or when θ has stopped moving (|Δθ| ≤ 1e-14·|θ|; θ
/// converges quadratically faster than the vector, and the residual reported is then still the
/// rigorous one of the vector returned).
pub fn block_krylov_top(
    dim: usize,
    apply: &mut dyn FnMut(MatRef<'_, f64>, MatMut<'_, f64>),
    block: usize,
    max_passes: usize,
    tol: f64,
    seed: u64,
) -> TopEigenpair {
    block_krylov(dim, apply, block, max_passes, tol, seed, false)
}

/// The smallest eigenpair of a positive definite H given only `apply_inv` (out = H⁻¹ W): block
/// Krylov on H⁻¹, with every Ritz vector y *polished* by one more application that is already
/// at hand, z = H⁻¹y/‖H⁻¹y‖ (the column A V s of the basis products). The polish divides each
/// eigen-component of y by its eigenvalue of H, so the components in H's upper spectrum — which
/// dominate ‖Hy − ρy‖ although they barely move yᵀH⁻¹y — fall by up to λ_max/λ_min. And since
/// H z = y/‖H⁻¹y‖ exactly, z's Rayleigh quotient ρ = yᵀH⁻¹y/‖H⁻¹y‖² and H-residual
/// ‖y − ρ H⁻¹y‖/‖H⁻¹y‖ cost no product by H. Stops when that residual is below `tol`·ρ or when θ
/// (the Ritz value on H⁻¹) has stopped moving. Returns ρ, z and the residual *estimate* (exact up
/// to the solves' rounding; callers that state a bound re-measure it with a product by H).
pub fn block_krylov_bottom_via_inverse(
    dim: usize,
    apply_inv: &mut dyn FnMut(MatRef<'_, f64>, MatMut<'_, f64>),
    block: usize,
    max_passes: usize,
    tol: f64,
    seed: u64,
) -> TopEigenpair {
    block_krylov(dim, apply_inv, block, max_passes, tol, seed, true)
}

/// The Ritz pair for θ (the last eigenvector s of T): plain, (θ, V s, ‖AVs − θVs‖); polished
/// (`inverse`), (ρ, AVs/‖AVs‖, ‖Vs − ρAVs‖/‖AVs‖) as in [`block_krylov_bottom_via_inverse`].
fn ritz_pair(
    t: &Mat<f64>,
    v: MatRef<'_, f64>,
    av: MatRef<'_, f64>,
    theta: f64,
    inverse: bool,
) -> (f64, Col<f64>, f64) {
    let k = t.nrows();
    let evd = t
        .self_adjoint_eigen(faer::Side::Lower)
        .expect("Rayleigh–Ritz eigenproblem");
    let s = evd.U().col(k - 1).to_owned();
    let y = v.subcols(0, k) * &s;
    let ay = av.subcols(0, k) * &s;
    if !inverse {
        let residual = (&ay - &y * faer::Scale(theta)).norm_l2();
        return (theta, y, residual);
    }
    let nz = ay.norm_l2();
    let rho = (y.transpose() * &ay) / (nz * nz);
    let residual = (&y - &ay * faer::Scale(rho)).norm_l2() / nz;
    (rho, ay * faer::Scale(1.0 / nz), residual)
}

fn block_krylov(
    dim: usize,
    apply: &mut dyn FnMut(MatRef<'_, f64>, MatMut<'_, f64>),
    block: usize,
    max_passes: usize,
    tol: f64,
    seed: u64,
    inverse: bool,
) -> TopEigenpair {
    let b = block.clamp(1, dim);
    let limit = dim.min(b * max_passes.max(1));
    let mut rng = stream(seed, Stream::Init);
    let start = Mat::<f64>::from_fn(dim, b, |_, _| StandardNormal.sample(&mut rng));
    let first = orthonormalize(Mat::<f64>::zeros(dim, 0).as_ref(), start)
        .expect("a random block has full rank");
    let initial = (4 * b).min(limit).max(b);
    let mut v = Mat::<f64>::zeros(dim, initial);
    let mut av = Mat::<f64>::zeros(dim, initial);
    let mut t = Mat::<f64>::zeros(0, 0);
    let mut k = 0;
    let mut w = first;
    let mut passes = 0;
    let mut previous = f64::NAN;
    loop {
        // Apply A to the new block, append it, extend T by its block column.
        let nb = w.ncols();
        ensure_cols(&mut v, k, k + nb, limit);
        ensure_cols(&mut av, k, k + nb, limit);
        v.as_mut().subcols_mut(k, nb).copy_from(&w);
        apply(w.as_ref(), av.as_mut().subcols_mut(k, nb));
        passes += 1;
        let kn = k + nb;
        let col = v.as_ref().subcols(0, kn).transpose() * av.as_ref().subcols(k, nb);
        let mut tn = Mat::<f64>::zeros(kn, kn);
        tn.as_mut().submatrix_mut(0, 0, k, k).copy_from(t.as_ref());
        for j in 0..nb {
            for i in 0..kn {
                let s = if i >= k {
                    0.5 * (col[(i, j)] + col[(k + j, i - k)])
                } else {
                    col[(i, j)]
                };
                tn[(i, k + j)] = s;
                tn[(k + j, i)] = s;
            }
        }
        t = tn;
        k = kn;

        // Rayleigh–Ritz on the whole basis: the eigenvalues every pass, the Ritz vector and its
        // residual only once θ has nearly settled (the residual cannot be small before) or at
        // the end.
        let theta = *t
            .self_adjoint_eigenvalues(faer::Side::Lower)
            .expect("Rayleigh–Ritz eigenvalues")
            .last()
            .unwrap();
        let change = (theta - previous).abs();
        previous = theta;
        let stalled = change <= 1e-14 * theta.abs();
        let last_pass = passes >= max_passes || k >= dim;
        let mut done = stalled;
        let mut ritz = None;
        if change <= 1e-6 * theta.abs() || last_pass {
            let pair = ritz_pair(&t, v.as_ref(), av.as_ref(), theta, inverse);
            done |= pair.2 <= tol * pair.0.abs().max(f64::MIN_POSITIVE);
            ritz = Some(pair);
        }
        // The next block: A times the last one, orthogonalised (narrower when the space is
        // nearly exhausted).
        let width = nb.min(dim - k);
        let next = if done || last_pass || width == 0 {
            None
        } else {
            let last = av.as_ref().subcols(k - nb, width).to_owned();
            orthonormalize(v.as_ref().subcols(0, k), last)
        };
        match next {
            Some(nw) => w = nw,
            None => {
                let (value, y, residual) =
                    ritz.unwrap_or_else(|| ritz_pair(&t, v.as_ref(), av.as_ref(), theta, inverse));
                return TopEigenpair {
                    value,
                    vector: (0..dim).map(|i| y[i]).collect(),
                    residual,
                    passes,
                    converged: done,
                };
            }
        }
    }
}
