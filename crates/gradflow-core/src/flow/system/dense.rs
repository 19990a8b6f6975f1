//! Pinned rows held as dense p-vectors (the general layer path, and the gcn's compiled route)
//! and the field's projection onto their complement: the rows in one contiguous buffer kept
//! between evaluations, their Gram matrix G = R Rᵀ by one (lower-triangular) matrix product,
//! its pseudo-inverse by a symmetric eigendecomposition, R g and Rᵀ μ by matrix–vector
//! products, and the scales 1/‖∇z_j‖² from G's diagonal. Also the field's norm.

use faer::linalg::matmul::matmul;
use faer::linalg::matmul::triangular::{self, BlockStructure};
use faer::{Accum, MatMut, MatRef, Par};

/// K rows of length p, row j at j·p..(j+1)·p: the columns of a column-major p × K matrix
/// V = Rᵀ. Resetting keeps the buffer, so a route that refills it every evaluation does not
/// allocate once it has held its largest K.
#[derive(Debug, Default)]
pub struct Rows {
    data: Vec<f64>,
    k: usize,
    p: usize,
}

impl Clone for Rows {
    fn clone(&self) -> Self {
        Self {
            data: self.data.clone(),
            k: self.k,
            p: self.p,
        }
    }

    /// Reuses this buffer (a derived `clone_from` would allocate a new one).
    fn clone_from(&mut self, o: &Self) {
        self.data.clone_from(&o.data);
        (self.k, self.p) = (o.k, o.p);
    }
}

/// Rows of equal length, one vector each (a snapshot's).
impl FromIterator<Vec<f64>> for Rows {
    fn from_iter<I: IntoIterator<Item = Vec<f64>>>(iter: I) -> Self {
        let mut rows = Rows::default();
        for r in iter {
            if rows.k == 0 {
                rows.p = r.len();
            }
            assert_eq!(r.len(), rows.p, "rows of one length");
            rows.data.extend_from_slice(&r);
            rows.k += 1;
        }
        rows
    }
}

impl Rows {
    /// k zero rows of length p.
    pub fn reset(&mut self, k: usize, p: usize) {
        self.data.clear();
        self.data.resize(k * p, 0.0);
        (self.k, self.p) = (k, p);
    }

    /// No rows (the buffer is kept).
    pub fn clear(&mut self) {
        self.reset(0, self.p);
    }

    /// The number of rows K.
    pub fn len(&self) -> usize {
        self.k
    }

    pub fn is_empty(&self) -> bool {
        self.k == 0
    }

    /// The length p of a row.
    pub fn width(&self) -> usize {
        self.p
    }

    pub fn row(&self, j: usize) -> &[f64] {
        &self.data[j * self.p..(j + 1) * self.p]
    }

    pub fn row_mut(&mut self, j: usize) -> &mut [f64] {
        &mut self.data[j * self.p..(j + 1) * self.p]
    }

    pub fn iter(&self) -> impl Iterator<Item = &[f64]> + '_ {
        (0..self.k).map(|j| self.row(j))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut [f64]> + '_ {
        self.data.chunks_exact_mut(self.p.max(1)).take(self.k)
    }

    /// The rows as separate vectors (for comparisons).
    pub fn to_vecs(&self) -> Vec<Vec<f64>> {
        self.iter().map(<[f64]>::to_vec).collect()
    }

    /// V = Rᵀ, p × K.
    fn columns(&self) -> MatRef<'_, f64> {
        MatRef::from_column_major_slice(&self.data, self.p, self.k)
    }

    /// out += Rᵀ w (w of length K, out of length p).
    pub(super) fn add_transposed(&self, w: &[f64], out: &mut [f64]) {
        matmul(
            MatMut::from_column_major_slice_mut(out, self.p, 1),
            Accum::Add,
            self.columns(),
            MatRef::from_column_major_slice(w, self.k, 1),
            1.0,
            Par::Seq,
        );
    }

    /// b = R g (K products of length p).
    fn times(&self, g: &[f64], b: &mut Vec<f64>) {
        b.clear();
        b.resize(self.k, 0.0);
        matmul(
            MatMut::from_column_major_slice_mut(b, self.k, 1),
            Accum::Replace,
            self.columns().transpose(),
            MatRef::from_column_major_slice(g, self.p, 1),
            1.0,
            Par::Seq,
        );
    }
}

/// The buffers of [`project`], kept between evaluations: G (column-major K × K, lower half
/// formed) and R g.
#[derive(Default)]
pub(super) struct Workspace {
    gram: Vec<f64>,
    rg: Vec<f64>,
}

/// What [`project`] leaves besides the projected field.
pub(super) struct Projected<'a> {
    /// (R Rᵀ)⁺, row-major K × K.
    pub(super) g_inv: &'a mut Vec<f64>,
    /// μ = G⁺ R g.
    pub(super) mu: &'a mut Vec<f64>,
    /// 1/‖∇z_j‖² = 1/G_jj.
    pub(super) scale: &'a mut Vec<f64>,
}

/// The projection of the field onto the complement of the rows: with `out` = −g on entry,
/// out ← −(g − Rᵀ μ), μ = G⁺ R g, G = R Rᵀ.
pub(super) fn project(
    rows: &Rows,
    grad: &[f64],
    out: &mut [f64],
    ws: &mut Workspace,
    par: Par,
    res: Projected,
) {
    let k = rows.len();
    gram_inverse(rows, &mut ws.gram, res.g_inv, par);
    res.scale.clear();
    res.scale.extend((0..k).map(|j| 1.0 / ws.gram[j * k + j]));
    rows.times(grad, &mut ws.rg);
    let (g_inv, b) = (&*res.g_inv, &ws.rg);
    res.mu.clear();
    res.mu
        .extend((0..k).map(|i| (0..k).map(|j| g_inv[i * k + j] * b[j]).sum::<f64>()));
    rows.add_transposed(res.mu, out);
}

/// (R Rᵀ)⁻¹ into `inv` (row-major K × K) by a symmetric eigen-decomposition, G's lower half
/// left in `gram` (column-major); directions with eigenvalues below 1e-12 of the largest are
/// dropped (pseudo-inverse), so dependent pins do not blow up.
pub(super) fn gram_inverse(rows: &Rows, gram: &mut Vec<f64>, inv: &mut Vec<f64>, par: Par) {
    let k = rows.len();
    gram.clear();
    gram.resize(k * k, 0.0);
    inv.clear();
    inv.resize(k * k, 0.0);
    // G = Vᵀ V, only its lower half (what the eigendecomposition reads): K(K+1)/2 dot
    // products of length p, the bulk of the solve at a few dozen pins.
    let v = rows.columns();
    triangular::matmul(
        MatMut::from_column_major_slice_mut(gram, k, k),
        BlockStructure::TriangularLower,
        Accum::Replace,
        v.transpose(),
        BlockStructure::Rectangular,
        v,
        BlockStructure::Rectangular,
        1.0,
        par,
    );
    let g = MatRef::from_column_major_slice(gram, k, k);
    let Ok(eig) = g.self_adjoint_eigen(faer::Side::Lower) else {
        return;
    };
    let (u, s) = (eig.U(), eig.S());
    let top = (0..k).map(|i| s[i]).fold(0.0f64, f64::max);
    for l in 0..k {
        let lam = s[l];
        if lam <= 1e-12 * top {
            continue;
        }
        for i in 0..k {
            for j in 0..k {
                inv[i * k + j] += u[(i, l)] * u[(j, l)] / lam;
            }
        }
    }
}

/// Σ a_i b_i with eight independent partial sums (the compiler vectorises them; one running
/// sum is a chain of dependent additions).
fn dot(a: &[f64], b: &[f64]) -> f64 {
    debug_assert_eq!(a.len(), b.len());
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    let mut acc = [0.0; 8];
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// The Euclidean norm.
pub(super) fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random values in [−1, 1).
    fn values(n: usize, seed: u64) -> Vec<f64> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (s >> 11) as f64 / (1u64 << 52) as f64 - 1.0
            })
            .collect()
    }

    fn scalar_dot(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    /// Against the definition, by scalar loops: the projected field is orthogonal to every row,
    /// differs from −g by Rᵀ μ with G μ = R g (the normal equations, G by K² scalar dot
    /// products), and the scales are 1/‖∇z_j‖²; with a dependent row (a copy of a combination
    /// of two others) the pseudo-inverse drops a direction and all of this still holds.
    #[test]
    fn projection_matches_the_normal_equations() {
        let (k, p) = (7, 53);
        for dependent in [false, true] {
            let mut rows = Rows::default();
            rows.reset(k, p);
            for (j, r) in rows.iter_mut().enumerate() {
                r.copy_from_slice(&values(p, j as u64 + 1));
                // Trailing zeros, as a row of an early layer has on later layers' parameters.
                if j % 3 == 0 {
                    r[p / 2..].iter_mut().for_each(|v| *v = 0.0);
                }
            }
            if dependent {
                let (a, b) = (rows.row(1).to_vec(), rows.row(2).to_vec());
                for (v, (x, y)) in rows.row_mut(4).iter_mut().zip(a.iter().zip(&b)) {
                    *v = 2.0 * x - 0.5 * y;
                }
            }
            let g = values(p, 99);
            let mut out: Vec<f64> = g.iter().map(|v| -v).collect();
            let (mut g_inv, mut mu, mut scale) = (Vec::new(), Vec::new(), Vec::new());
            let mut ws = Workspace::default();
            // Twice through the same buffers: the second call must not see the first's values.
            for _ in 0..2 {
                out = g.iter().map(|v| -v).collect();
                let res = Projected {
                    g_inv: &mut g_inv,
                    mu: &mut mu,
                    scale: &mut scale,
                };
                project(&rows, &g, &mut out, &mut ws, Par::Seq, res);
            }
            let gnorm = scalar_dot(&g, &g).sqrt();
            for (j, r) in rows.iter().enumerate() {
                let rn = scalar_dot(r, r);
                let along = scalar_dot(r, &out) / (rn.sqrt() * gnorm);
                assert!(along.abs() < 1e-12, "row {j}: field along it {along:e}");
                let s = 1.0 / rn;
                assert!((scale[j] - s).abs() < 1e-13 * s, "scale {j}");
                // (G μ)_j = (R g)_j.
                let gmu: f64 = (0..k).map(|i| scalar_dot(r, rows.row(i)) * mu[i]).sum();
                let rg = scalar_dot(r, &g);
                assert!(
                    (gmu - rg).abs() < 1e-11 * rn.sqrt() * gnorm,
                    "normal eq. {j}"
                );
            }
            for (i, ((o, gv), _)) in out.iter().zip(&g).zip(0..p).enumerate() {
                let back: f64 = (0..k).map(|j| rows.row(j)[i] * mu[j]).sum();
                assert!(
                    (o + gv - back).abs() < 1e-13 * gnorm,
                    "out − (−g) = Rᵀμ at {i}"
                );
            }
            // G⁺ G G⁺ = G⁺ (a pseudo-inverse), G⁺ symmetric.
            let gram = |i: usize, j: usize| scalar_dot(rows.row(i), rows.row(j));
            let top = (0..k).map(|i| gram(i, i)).fold(0.0, f64::max);
            let inv_scale = g_inv.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            for i in 0..k {
                for j in 0..k {
                    let mut v = 0.0;
                    for a in 0..k {
                        for b in 0..k {
                            v += g_inv[i * k + a] * gram(a, b) * g_inv[b * k + j];
                        }
                    }
                    let tol = 1e-9 * inv_scale * inv_scale * top;
                    assert!((v - g_inv[i * k + j]).abs() < tol, "G⁺GG⁺ ({i},{j})");
                    assert!((g_inv[i * k + j] - g_inv[j * k + i]).abs() < 1e-12 * inv_scale);
                }
            }
            if dependent {
                // The dropped direction: G⁺ has rank K − 1, so G G⁺ is not the identity.
                let trace: f64 = (0..k)
                    .map(|i| (0..k).map(|a| gram(i, a) * g_inv[a * k + i]).sum::<f64>())
                    .sum();
                assert!((trace - (k - 1) as f64).abs() < 1e-8, "rank {trace}");
            }
        }
    }
}
