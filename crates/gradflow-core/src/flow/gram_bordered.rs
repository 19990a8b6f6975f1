//! The pinned rows' Gram matrix on the compiled route, factorised along its structure: a
//! block-diagonal part bordered by a dense one.
//!
//! **The structure.** A pinned pre-activation of the first layer, z = W₁[u,:]·x_i + b₁[u], has
//! the row ∇z = e_u ⊗ [x_i; 1]: it lives in row u of (W₁, b₁) only. Rows of first-layer entries
//! of different units are orthogonal, so with those entries grouped by unit their block of G is
//! block-diagonal (one block per unit, [x_i·x_j + 1] over the unit's pinned samples); only the
//! rows of deeper entries couple to everything. Stored in the order (C, A), C the dense part
//! and A the blocks, and eliminated blocks first, the Cholesky factor keeps that shape:
//!
//! G_AA = L_A L_Aᵀ block by block,  L_CA = G_CA L_A⁻ᵀ,  S = G_CC − L_CA L_CAᵀ = L_S L_Sᵀ,
//!
//! at Σ_b m_b³/3 + k_C²·k_A + k_C³/3 flops instead of (k_C + k_A)³/3. This is the dense
//! factorisation of G in the order (A, C) with the same drop rule (a pivot below 1e-12 of G's
//! largest diagonal entry marks a dependent direction: multiplier 0; see `gram.rs`), only
//! skipping the zero blocks, so solves and dropped directions agree with it to rounding
//! (tested below).
//!
//! The compiled route forms L_A, L_CA and S itself (`compiled/first_layer.rs`: the first
//! layer's rows do not depend on θ) and hands them over through
//! [`BorderedGram::factored_parts_mut`]; [`BorderedGram::factor`], which forms them by
//! products from G's blocks, is the tests' reference.

use super::gram::{factor_columns, GramFactor, DROP};
use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};

/// Columns per block of the Schur-complement product (lower triangle by column blocks).
const COLUMN_BLOCK: usize = 32;

/// One diagonal block: its first A index, its size m and the offset of its m × m storage.
#[derive(Clone, Copy, Debug)]
struct Block {
    start: usize,
    size: usize,
    store: usize,
}

/// The factorisation of a bordered block-diagonal Gram matrix (see the module docs).
#[derive(Default)]
pub(super) struct BorderedGram {
    kc: usize,
    ka: usize,
    blocks: Vec<Block>,
    /// The blocks' lower triangles (column-major, block after block): G's, then L_A's.
    diagonal: Vec<f64>,
    /// Per A index: its direction was dropped.
    dropped: Vec<bool>,
    /// k_C × k_A, column-major: G_CA, then L_CA.
    border: Vec<f64>,
    /// G_CC, then S and its factor.
    corner: GramFactor,
}

/// The zeroed buffers of one Gram matrix to fill before [`BorderedGram::factor`].
#[cfg(test)]
pub(super) struct GramParts<'a> {
    /// G_CC's lower triangle, k_C × k_C column-major (entry (a, b), a ≥ b, at b·k_C + a).
    pub corner: &'a mut [f64],
    /// The diagonal blocks' lower triangles, column-major, one after another.
    pub diagonal: &'a mut [f64],
    /// G_CA, k_C × k_A column-major.
    pub border: &'a mut [f64],
}

/// The zeroed buffers of [`BorderedGram::factored_parts_mut`].
pub(super) struct FactoredParts<'a> {
    /// S's (or G_CC's) lower triangle, k_C × k_C column-major.
    pub schur: &'a mut [f64],
    /// L_A's blocks (lower triangles, column-major, one after another); a dropped direction
    /// has a unit row and column.
    pub diagonal: &'a mut [f64],
    /// L_CA, k_C × k_A column-major (zero columns for dropped directions).
    pub border: &'a mut [f64],
    /// Per A index: its direction was dropped.
    pub dropped: &'a mut [bool],
}

impl BorderedGram {
    /// Sets the shape — k_C dense indices, then blocks of the given sizes — and returns the
    /// zeroed buffers to fill (the general route: the tests' reference).
    #[cfg(test)]
    pub fn parts_mut(&mut self, kc: usize, sizes: &[usize]) -> GramParts<'_> {
        self.set_shape(kc, sizes);
        GramParts {
            corner: self.corner.matrix(),
            diagonal: &mut self.diagonal,
            border: &mut self.border,
        }
    }

    /// Sets the shape and zeroes the buffers.
    fn set_shape(&mut self, kc: usize, sizes: &[usize]) {
        self.corner.matrix_mut(kc);
        self.kc = kc;
        self.blocks.clear();
        let (mut start, mut store) = (0, 0);
        for &size in sizes {
            self.blocks.push(Block { start, size, store });
            start += size;
            store += size * size;
        }
        self.ka = start;
        self.diagonal.clear();
        self.diagonal.resize(store, 0.0);
        self.border.clear();
        self.border.resize(kc * start, 0.0);
        self.dropped.clear();
        self.dropped.resize(start, false);
    }

    /// Factorises the matrix filled through [`Self::parts_mut`].
    #[cfg(test)]
    pub fn factor(&mut self, par: Par) {
        let (kc, ka) = (self.kc, self.ka);
        let corner = self.corner.matrix();
        let mut top = (0..kc).map(|i| corner[i * kc + i]).fold(0.0f64, f64::max);
        for b in &self.blocks {
            for j in 0..b.size {
                top = top.max(self.diagonal[b.store + j * b.size + j]);
            }
        }
        self.dropped.clear();
        self.dropped.resize(ka, false);
        for b in &self.blocks {
            let (m, l) = (
                b.size,
                &mut self.diagonal[b.store..b.store + b.size * b.size],
            );
            factor_block(l, m, top, &mut self.dropped[b.start..b.start + m]);
            // L_CA's columns of this block: X L_bᵀ = G_Cb, column by column.
            for j in 0..m {
                let a = b.start + j;
                let (left, rest) = self.border.split_at_mut(a * kc);
                let col = &mut rest[..kc];
                if self.dropped[a] {
                    col.iter_mut().for_each(|v| *v = 0.0);
                    continue;
                }
                for i in 0..j {
                    let f = l[i * m + j];
                    if f != 0.0 {
                        let src = &left[(b.start + i) * kc..(b.start + i + 1) * kc];
                        for (d, s) in col.iter_mut().zip(src) {
                            *d -= f * s;
                        }
                    }
                }
                let inv = 1.0 / l[j * m + j];
                col.iter_mut().for_each(|v| *v *= inv);
            }
        }
        self.subtract_border_products();
        self.factor_schur(top, par);
    }

    /// S = G_CC − L_CA L_CAᵀ in the corner (L_CA in place), lower triangle by column blocks
    /// of dense products.
    pub fn subtract_border_products(&mut self) {
        let (kc, ka) = (self.kc, self.ka);
        if kc > 0 && ka > 0 {
            let lca = MatRef::from_column_major_slice(&self.border, kc, ka);
            let mut s = MatMut::from_column_major_slice_mut(self.corner.matrix(), kc, kc);
            for c0 in (0..kc).step_by(COLUMN_BLOCK) {
                let w = COLUMN_BLOCK.min(kc - c0);
                matmul(
                    s.as_mut().submatrix_mut(c0, c0, kc - c0, w),
                    Accum::Add,
                    lca.subrows(c0, kc - c0),
                    lca.subrows(c0, w).transpose(),
                    -1.0,
                    Par::Seq,
                );
            }
        }
    }

    /// Sets the shape as [`Self::parts_mut`] does, for a caller that forms the factored blocks
    /// itself: returns the zeroed buffers to fill with L_A (and its dropped directions), L_CA
    /// and S = G_CC − L_CA L_CAᵀ (or G_CC, then [`Self::subtract_border_products`]); then
    /// [`Self::factor_schur`].
    pub fn factored_parts_mut(&mut self, kc: usize, sizes: &[usize]) -> FactoredParts<'_> {
        self.set_shape(kc, sizes);
        FactoredParts {
            schur: self.corner.matrix(),
            diagonal: &mut self.diagonal,
            border: &mut self.border,
            dropped: &mut self.dropped,
        }
    }

    /// Factorises S (in the corner, L_A and L_CA in place), pivots dropped relative to `top`
    /// (G's largest diagonal entry); a dropped dense direction's row of L_CA goes too (the dense
    /// factor's unit row).
    pub fn factor_schur(&mut self, top: f64, par: Par) {
        let (kc, ka) = (self.kc, self.ka);
        self.corner.factor_relative_to(top, par);
        for (c, &d) in self.corner.dropped().iter().enumerate() {
            if d {
                for a in 0..ka {
                    self.border[a * kc + c] = 0.0;
                }
            }
        }
    }

    /// Whether the last factorisation dropped each direction, in the order (C, A).
    pub fn dropped_directions(&self, out: &mut Vec<bool>) {
        out.clear();
        out.extend_from_slice(self.corner.dropped());
        out.extend_from_slice(&self.dropped);
    }

    /// Solves G w = b in place (b and w in the order (C, A)); dropped directions get w = 0.
    pub fn solve_in_place(&self, bw: &mut [f64], par: Par) {
        let kc = self.kc;
        let (bc, ba) = bw.split_at_mut(kc);
        for b in &self.blocks {
            let m = b.size;
            let (l, y) = (&self.diagonal[b.store..], &mut ba[b.start..b.start + m]);
            for j in 0..m {
                if self.dropped[b.start + j] {
                    y[j] = 0.0;
                    continue;
                }
                y[j] /= l[j * m + j];
                let v = y[j];
                for r in j + 1..m {
                    y[r] -= l[j * m + r] * v;
                }
            }
        }
        for (a, &y) in ba.iter().enumerate() {
            if y != 0.0 {
                for (d, l) in bc.iter_mut().zip(&self.border[a * kc..(a + 1) * kc]) {
                    *d -= y * l;
                }
            }
        }
        self.corner.solve_in_place(bc, par);
        for (a, y) in ba.iter_mut().enumerate() {
            let col = &self.border[a * kc..(a + 1) * kc];
            *y -= col.iter().zip(bc.iter()).map(|(l, x)| l * x).sum::<f64>();
        }
        for b in &self.blocks {
            let m = b.size;
            let (l, x) = (&self.diagonal[b.store..], &mut ba[b.start..b.start + m]);
            for j in (0..m).rev() {
                if self.dropped[b.start + j] {
                    x[j] = 0.0;
                    continue;
                }
                let s: f64 = (j + 1..m).map(|r| l[j * m + r] * x[r]).sum();
                x[j] = (x[j] - s) / l[j * m + j];
            }
        }
    }
}

/// Cholesky factorisation of one m × m block in place (lower, column-major) with the drop rule
/// relative to `top`; a dropped direction becomes a unit row and column.
#[cfg(test)]
fn factor_block(l: &mut [f64], m: usize, top: f64, dropped: &mut [bool]) {
    factor_columns(l, m, 0, m, DROP * top, dropped);
}

/// [`factor_block`] for a caller keeping the factor: returns the smallest kept and the largest
/// dropped pivot (∞ and −∞ if none).
pub(super) fn factor_block_pivots(
    l: &mut [f64],
    m: usize,
    top: f64,
    dropped: &mut [bool],
) -> (f64, f64) {
    factor_columns(l, m, 0, m, DROP * top, dropped)
}

#[cfg(test)]
mod tests {
    use super::super::gram::tests_support::dot;
    use super::*;
    use rand::{RngExt, SeedableRng};

    /// Rows of the bordered shape: block u's rows live on coordinates [u·d, (u+1)·d), the dense
    /// rows everywhere. With `dependent`, some blocks repeat a row (a sample pinned twice in
    /// effect), one dense row combines a block row and a dense row, one is zero.
    fn rows(
        sizes: &[usize],
        kc: usize,
        dependent: bool,
        seed: u64,
    ) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let d = 6;
        let p = sizes.len() * d + 9;
        let mut a_rows = Vec::new();
        for (u, &m) in sizes.iter().enumerate() {
            for j in 0..m {
                let mut r = vec![0.0; p];
                if dependent && j == 1 && u % 3 == 0 {
                    r.clone_from(a_rows.last().expect("row 0 of the block"));
                } else {
                    for v in &mut r[u * d..(u + 1) * d] {
                        *v = rng.random::<f64>() - 0.5;
                    }
                }
                a_rows.push(r);
            }
        }
        let mut c_rows: Vec<Vec<f64>> = (0..kc)
            .map(|_| (0..p).map(|_| rng.random::<f64>() - 0.5).collect())
            .collect();
        if dependent && kc >= 3 && !a_rows.is_empty() {
            let a = a_rows[a_rows.len() / 2].clone();
            c_rows[2] = (0..p).map(|i| 0.7 * a[i] - 1.3 * c_rows[0][i]).collect();
            c_rows[kc - 1].iter_mut().for_each(|v| *v = 0.0);
        }
        (a_rows, c_rows)
    }

    /// Differential test against the dense factorisation of G in the order (A, C): the same
    /// dropped directions, w and diag(G⁻¹) equal to rounding; independently, w projects
    /// (R (g − Rᵀ w) = 0 for every row).
    #[test]
    fn bordered_factor_equals_dense_factor() {
        let layouts: [(&[usize], usize); 7] = [
            (&[1, 3, 2, 5, 1, 4, 2, 2, 7, 1], 0),
            (&[], 37),
            (&[2, 1, 3], 1),
            (&[1, 3, 2, 5, 1, 4, 2, 2, 7, 1], 7),
            (&[4; 25], 40),
            (&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], 70),
            (&[3; 40], 33),
        ];
        for (case, &(sizes, kc)) in layouts.iter().enumerate() {
            for dependent in [false, true] {
                let (a_rows, c_rows) =
                    rows(sizes, kc, dependent, case as u64 * 2 + dependent as u64);
                let ka = a_rows.len();
                let k = ka + kc;
                let p = a_rows.first().or(c_rows.first()).map_or(0, |r| r.len());
                let gvec: Vec<f64> = (0..p).map(|i| (i as f64 * 0.37).sin()).collect();
                // Dense route, order (A, C).
                let ordered: Vec<&Vec<f64>> = a_rows.iter().chain(&c_rows).collect();
                let mut dense = GramFactor::default();
                let m = dense.matrix_mut(k);
                for c in 0..k {
                    for a in c..k {
                        m[c * k + a] = dot(ordered[a], ordered[c]);
                    }
                }
                dense.factor(Par::Seq);
                let mut w_dense: Vec<f64> = ordered.iter().map(|r| dot(r, &gvec)).collect();
                dense.solve_in_place(&mut w_dense, Par::Seq);
                // Bordered route, stored (C, A).
                let mut f = BorderedGram::default();
                let parts = f.parts_mut(kc, sizes);
                for c in 0..kc {
                    for a in c..kc {
                        parts.corner[c * kc + a] = dot(&c_rows[a], &c_rows[c]);
                    }
                }
                let (mut start, mut store) = (0, 0);
                for &sz in sizes {
                    for c in 0..sz {
                        for a in c..sz {
                            parts.diagonal[store + c * sz + a] =
                                dot(&a_rows[start + a], &a_rows[start + c]);
                        }
                    }
                    start += sz;
                    store += sz * sz;
                }
                for (a, row) in a_rows.iter().enumerate() {
                    for (c, crow) in c_rows.iter().enumerate() {
                        parts.border[a * kc + c] = dot(crow, row);
                    }
                }
                f.factor(Par::Seq);
                let stored: Vec<&Vec<f64>> = c_rows.iter().chain(&a_rows).collect();
                let mut w: Vec<f64> = stored.iter().map(|r| dot(r, &gvec)).collect();
                f.solve_in_place(&mut w, Par::Seq);
                // Dense index of stored index q.
                let dense_of = |q: usize| if q < kc { ka + q } else { q - kc };
                let dropped: Vec<bool> = f
                    .corner
                    .dropped()
                    .iter()
                    .chain(&f.dropped)
                    .copied()
                    .collect();
                let want: Vec<bool> = (0..k).map(|q| dense.dropped()[dense_of(q)]).collect();
                assert_eq!(dropped, want, "case {case}, dependent {dependent}");
                if dependent && kc >= 3 && ka > 0 {
                    assert!(
                        dropped.iter().filter(|&&d| d).count() >= 2,
                        "case {case}: too few dropped"
                    );
                }
                let wn = w_dense
                    .iter()
                    .map(|v| v * v)
                    .sum::<f64>()
                    .sqrt()
                    .max(1e-300);
                for q in 0..k {
                    let (a, e) = (w[q], w_dense[dense_of(q)]);
                    assert!((a - e).abs() <= 1e-9 * wn, "case {case}: w[{q}] {a} vs {e}");
                }
                let mut proj = gvec.clone();
                for (row, wj) in stored.iter().zip(&w) {
                    for (pv, rv) in proj.iter_mut().zip(row.iter()) {
                        *pv -= wj * rv;
                    }
                }
                let scale = dot(&gvec, &gvec).sqrt();
                for (j, row) in stored.iter().enumerate() {
                    let rn = dot(row, row).sqrt();
                    assert!(
                        dot(row, &proj).abs() <= 1e-9 * rn * scale,
                        "case {case}: row {j}"
                    );
                }
            }
        }
    }
}
