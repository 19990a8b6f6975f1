//! The factorisation of the pinned rows' Gram matrix G = R Rᵀ (K × K, symmetric positive
//! semi-definite) for the compiled route: a blocked Cholesky factorisation that drops dependent
//! directions, and solves G w = b — in kept buffers.
//!
//! **Dropped directions.** A pivot below 1e-12 of G's largest diagonal (NaN included) marks a
//! pinned row that depends on the earlier ones: its constraint is implied by the others, its
//! multiplier is 0 (and its normal speed 0). With S the kept indices, the factor is the Cholesky factor
//! of G_SS; dropped columns are zero, and a dropped row is replaced by a unit row, so the stored
//! L' is L_SS ⊕ I (after a permutation) and stays invertible: solves need no special cases, and entries of dropped indices are zeroed around them. (faer's own
//! factorisations stop at, or regularise, a non-positive pivot instead of dropping it.)
//!
//! **Blocking.** Panels of [`PANEL`] columns are factorised column by column (contiguous axpys);
//! the trailing lower triangle is updated by dense faer products on column blocks (faer's
//! triangular product recurses to tiny blocks and was slower than the scalar code at K ≈ 100).
//! The pivots are the
//! scalar algorithm's (G_jj minus the squares of row j of L), summed in another order: the
//! same result up to rounding.

use faer::linalg::matmul::matmul;
use faer::linalg::triangular_solve::{
    solve_lower_triangular_in_place, solve_upper_triangular_in_place,
};
use faer::{Accum, MatMut, MatRef, Par};

/// Columns per panel of the blocked factorisation.
const PANEL: usize = 32;

/// Smallest K for which the products run on the pool: below it faer's parallel products cost
/// more than they save and allocate (the solve's steady state is allocation-free).
const PAR_MIN: usize = 384;

/// `par` for a K × K problem (see [`PAR_MIN`]).
pub(super) fn par_for(k: usize, par: Par) -> Par {
    if k >= PAR_MIN {
        par
    } else {
        Par::Seq
    }
}

/// Relative pivot below which a direction is dropped.
pub(super) const DROP: f64 = 1e-12;

/// The factor L' of a Gram matrix and its dropped directions.
#[derive(Default)]
pub(super) struct GramFactor {
    k: usize,
    /// On input to [`Self::factor`]: G's lower triangle, column-major; then L'.
    l: Vec<f64>,
    dropped: Vec<bool>,
}

impl GramFactor {
    /// A zeroed K × K column-major buffer to fill with G's lower triangle (entry (a, b), a ≥ b, at
    /// `b·K + a`) before [`Self::factor`].
    pub fn matrix_mut(&mut self, k: usize) -> &mut [f64] {
        self.k = k;
        self.l.clear();
        self.l.resize(k * k, 0.0);
        &mut self.l
    }

    /// The K × K buffer as it stands (G's lower triangle until [`Self::factor`]), not zeroed.
    pub fn matrix(&mut self) -> &mut [f64] {
        &mut self.l
    }

    /// Factorises the matrix left by [`Self::matrix_mut`] in place.
    #[cfg(test)]
    pub fn factor(&mut self, par: Par) {
        let k = self.k;
        let top = (0..k).map(|i| self.l[i * k + i]).fold(0.0f64, f64::max);
        self.factor_relative_to(top, par);
    }

    /// [`Self::factor`] with pivots dropped relative to `top` instead of this matrix's largest
    /// diagonal entry (for a Schur complement: the whole Gram matrix's).
    pub fn factor_relative_to(&mut self, top: f64, par: Par) {
        let k = self.k;
        let par = par_for(k, par);
        self.dropped.clear();
        self.dropped.resize(k, false);
        let a = &mut self.l;
        let mut jb = 0;
        while jb < k {
            let je = (jb + PANEL).min(k);
            factor_columns(a, k, jb, je, DROP * top, &mut self.dropped);
            if je < k {
                let m = k - je;
                let (left, right) = a.split_at_mut(je * k);
                let p = MatRef::from_column_major_slice_with_stride(
                    &left[jb * k + je..],
                    m,
                    je - jb,
                    k,
                );
                let mut dst =
                    MatMut::from_column_major_slice_with_stride_mut(&mut right[je..], m, m, k);
                // The trailing lower triangle by column blocks of dense products (faer's
                // triangular product is slower at these sizes).
                for c0 in (0..m).step_by(PANEL) {
                    let w = PANEL.min(m - c0);
                    matmul(
                        dst.as_mut().submatrix_mut(c0, c0, m - c0, w),
                        Accum::Add,
                        p.subrows(c0, m - c0),
                        p.subrows(c0, w).transpose(),
                        -1.0,
                        par,
                    );
                }
            }
            jb = je;
        }
    }

    /// Which directions the last factorisation dropped.
    pub fn dropped(&self) -> &[bool] {
        &self.dropped
    }

    /// Solves G_SS w_S = b_S in place (b and w in the factor's order), w = 0 off S.
    pub fn solve_in_place(&self, bw: &mut [f64], par: Par) {
        let k = self.k;
        let par = par_for(k, par);
        for (v, &d) in bw.iter_mut().zip(&self.dropped) {
            if d {
                *v = 0.0;
            }
        }
        let l = MatRef::from_column_major_slice(&self.l, k, k);
        let mut x = MatMut::from_column_major_slice_mut(bw, k, 1);
        solve_lower_triangular_in_place(l, x.as_mut(), par);
        solve_upper_triangular_in_place(l.transpose(), x, par);
    }
}

/// Columns jb..je of the right-looking Cholesky factorisation of the K × K column-major lower
/// triangle `a` (stride K) in place, with the panel's own updates (rows below je get theirs
/// from the caller). A pivot ≤ `floor` (or NaN) drops its direction: the column is zeroed,
/// the row left of the diagonal too, and the diagonal set to 1 (see the module docs). Returns
/// the smallest kept and the largest dropped pivot (∞ and −∞ if none): another floor between
/// them gives the same factor.
pub(super) fn factor_columns(
    a: &mut [f64],
    k: usize,
    jb: usize,
    je: usize,
    floor: f64,
    dropped: &mut [bool],
) -> (f64, f64) {
    let (mut smallest_kept, mut largest_dropped) = (f64::INFINITY, f64::NEG_INFINITY);
    for j in jb..je {
        let d = a[j * k + j];
        if d.is_nan() || d <= floor {
            largest_dropped = largest_dropped.max(d);
            dropped[j] = true;
            a[j * k + j..(j + 1) * k].iter_mut().for_each(|v| *v = 0.0);
            for c in 0..j {
                a[c * k + j] = 0.0;
            }
            a[j * k + j] = 1.0;
            continue;
        }
        smallest_kept = smallest_kept.min(d);
        let ljj = d.sqrt();
        a[j * k + j] = ljj;
        let inv = 1.0 / ljj;
        a[j * k + j + 1..(j + 1) * k]
            .iter_mut()
            .for_each(|v| *v *= inv);
        // The rest of the panel: column c −= L_cj · column j (rows c..K).
        let (head, tail) = a.split_at_mut((j + 1) * k);
        let colj = &head[j * k..];
        for c in j + 1..je {
            let f = colj[c];
            if f != 0.0 {
                let dst = &mut tail[(c - j - 1) * k + c..(c - j) * k];
                for (dv, sv) in dst.iter_mut().zip(&colj[c..]) {
                    *dv -= f * sv;
                }
            }
        }
    }
    (smallest_kept, largest_dropped)
}

#[cfg(test)]
pub(super) mod tests_support {
    use rand::{RngExt, SeedableRng};

    pub fn dot(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    /// The scalar route this module replaced (the reference): Cholesky of the row-major G with
    /// the same drop rule, L⁻¹ by columns, w = L⁻ᵀ L⁻¹ b, (G⁻¹)_jj = Σ_m (L⁻¹)_mj².
    pub fn scalar_route(g: &[f64], k: usize, b: &[f64]) -> (Vec<bool>, Vec<f64>, Vec<f64>) {
        let mut l = vec![0.0; k * k];
        let mut dropped = vec![false; k];
        let top = (0..k).map(|i| g[i * k + i]).fold(0.0f64, f64::max);
        for j in 0..k {
            let d = g[j * k + j] - dot(&l[j * k..j * k + j], &l[j * k..j * k + j]);
            if d.is_nan() || d <= 1e-12 * top {
                dropped[j] = true;
                continue;
            }
            let ljj = d.sqrt();
            l[j * k + j] = ljj;
            for i in j + 1..k {
                let s = g[i * k + j] - dot(&l[i * k..i * k + j], &l[j * k..j * k + j]);
                l[i * k + j] = s / ljj;
            }
        }
        let mut linvt = vec![0.0; k * k];
        for c in 0..k {
            if dropped[c] {
                continue;
            }
            linvt[c * k + c] = 1.0 / l[c * k + c];
            for i in c + 1..k {
                if !dropped[i] {
                    let s = dot(&l[i * k + c..i * k + i], &linvt[c * k + c..c * k + i]);
                    linvt[c * k + i] = -s / l[i * k + i];
                }
            }
        }
        let mut y = vec![0.0; k];
        for q in 0..k {
            if !dropped[q] {
                y[q] = (b[q] - dot(&l[q * k..q * k + q], &y[..q])) / l[q * k + q];
            }
        }
        let w = (0..k)
            .map(|q| dot(&linvt[q * k + q..(q + 1) * k], &y[q..]))
            .collect();
        let diag = (0..k)
            .map(|q| {
                if dropped[q] {
                    f64::INFINITY
                } else {
                    linvt[q * k + q..(q + 1) * k].iter().map(|v| v * v).sum()
                }
            })
            .collect();
        (dropped, w, diag)
    }

    /// K random rows in R^p; with `dependent`, every 7th row (from the 3rd on) is replaced by a
    /// combination of two earlier rows and every 11th by a zero row.
    pub fn rows(k: usize, p: usize, dependent: bool, seed: u64) -> Vec<Vec<f64>> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut rows: Vec<Vec<f64>> = (0..k)
            .map(|_| (0..p).map(|_| rng.random::<f64>() - 0.5).collect())
            .collect();
        if dependent {
            for j in 2..k {
                if j % 11 == 10 {
                    rows[j].iter_mut().for_each(|v| *v = 0.0);
                } else if j % 7 == 2 {
                    let (a, b) = (rng.random_range(0..j), rng.random_range(0..j));
                    let (ca, cb) = (rng.random::<f64>() + 0.5, rng.random::<f64>() - 2.0);
                    rows[j] = (0..p).map(|i| ca * rows[a][i] + cb * rows[b][i]).collect();
                }
            }
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::*;
    use super::*;

    /// Differential test against the scalar route on SPD and rank-deficient Gram matrices of
    /// sizes 1..300 (panel edges included): the same dropped directions, w and diag(G⁻¹) equal
    /// to rounding; independently of either route, w projects: R (g − Rᵀ w) = 0 for every row
    /// (dependent rows included), and G_SS w_S = b_S on the kept directions.
    #[test]
    fn blocked_factor_equals_scalar_route() {
        for &k in &[1usize, 2, 3, 5, 31, 32, 33, 64, 65, 97, 150, 211, 300] {
            for dependent in [false, true] {
                let p = k + 12;
                let r = rows(k, p, dependent, k as u64 * 2 + dependent as u64);
                let gvec: Vec<f64> = (0..p).map(|i| (i as f64 * 0.37).sin()).collect();
                let b: Vec<f64> = r.iter().map(|row| dot(row, &gvec)).collect();
                let g: Vec<f64> = (0..k * k).map(|ij| dot(&r[ij / k], &r[ij % k])).collect();
                let (want_dropped, want_w, _) = scalar_route(&g, k, &b);
                let mut f = GramFactor::default();
                let m = f.matrix_mut(k);
                for c in 0..k {
                    for a in c..k {
                        m[c * k + a] = g[a * k + c];
                    }
                }
                f.factor(Par::Seq);
                assert_eq!(f.dropped, want_dropped, "k = {k}");
                if dependent && k > 2 {
                    assert!(f.dropped.iter().any(|&d| d), "k = {k}: nothing dropped");
                }
                let mut w = b.clone();
                f.solve_in_place(&mut w, Par::Seq);
                let wn = want_w.iter().map(|v| v * v).sum::<f64>().sqrt();
                for (q, (a, e)) in w.iter().zip(&want_w).enumerate() {
                    assert!((a - e).abs() <= 1e-9 * wn, "k = {k}, w[{q}]: {a} vs {e}");
                }
                // The projection, independently: f = g − Rᵀ w is orthogonal to every row.
                let mut proj = gvec.clone();
                for (row, wj) in r.iter().zip(&w) {
                    for (pv, rv) in proj.iter_mut().zip(row) {
                        *pv -= wj * rv;
                    }
                }
                let scale = gvec.iter().map(|v| v * v).sum::<f64>().sqrt();
                for (j, row) in r.iter().enumerate() {
                    let rn = dot(row, row).sqrt();
                    assert!(
                        dot(row, &proj).abs() <= 1e-9 * rn * scale,
                        "k = {k}, row {j}"
                    );
                }
                for a in (0..k).filter(|&a| !f.dropped[a]) {
                    let gw: f64 = (0..k).map(|c| g[a * k + c] * w[c]).sum();
                    assert!((gw - b[a]).abs() <= 1e-9 * (1.0 + b[a].abs()) * k as f64);
                }
            }
        }
    }

    /// The parallel factorisation (faer's products on the pool) gives the same factor.
    #[test]
    fn parallel_factor_matches_sequential() {
        let k = PAR_MIN + 17;
        let r = rows(k, k + 5, true, 7);
        let mut out = Vec::new();
        for par in [Par::Seq, Par::rayon(2)] {
            let mut f = GramFactor::default();
            let m = f.matrix_mut(k);
            for c in 0..k {
                for a in c..k {
                    m[c * k + a] = dot(&r[a], &r[c]);
                }
            }
            f.factor(par);
            let mut w: Vec<f64> = (0..k).map(|i| (i as f64 * 0.7).cos()).collect();
            f.solve_in_place(&mut w, par);
            out.push((f.dropped.clone(), w));
        }
        assert_eq!(out[0].0, out[1].0);
        for (a, b) in out[0].1.iter().zip(&out[1].1) {
            assert!(a == b || (a - b).abs() <= 1e-10 * a.abs());
        }
    }
}

#[cfg(test)]
mod timing {
    use super::tests_support::*;
    use super::*;
    use std::time::Instant;

    /// Times the scalar route against the blocked one (not a test: `--ignored --nocapture`).
    #[test]
    #[ignore]
    fn time_factorisations() {
        for &k in &[50usize, 99, 150, 200, 300] {
            let r = rows(k, k + 12, false, 3);
            let g: Vec<f64> = (0..k * k).map(|ij| dot(&r[ij / k], &r[ij % k])).collect();
            let b: Vec<f64> = (0..k).map(|i| (i as f64).sin()).collect();
            // Minimum over repetitions (the machine is shared).
            let reps = 40;
            let mut scalar = f64::INFINITY;
            for _ in 0..reps {
                let t0 = Instant::now();
                std::hint::black_box(scalar_route(&g, k, &b));
                scalar = scalar.min(t0.elapsed().as_secs_f64());
            }
            let mut f = GramFactor::default();
            let (mut tf, mut ts) = (f64::INFINITY, f64::INFINITY);
            for _ in 0..reps {
                let m = f.matrix_mut(k);
                for c in 0..k {
                    for a in c..k {
                        m[c * k + a] = g[a * k + c];
                    }
                }
                let t0 = Instant::now();
                f.factor(Par::Seq);
                let t1 = Instant::now();
                let mut w = b.clone();
                f.solve_in_place(&mut w, Par::Seq);
                let t2 = Instant::now();
                tf = tf.min((t1 - t0).as_secs_f64());
                ts = ts.min((t2 - t1).as_secs_f64());
            }
            println!(
                "K = {k}: scalar route {:.1} µs; blocked factor {:.1} µs, solve {:.1} µs",
                1e6 * scalar,
                1e6 * tf,
                1e6 * ts
            );
        }
    }
}
