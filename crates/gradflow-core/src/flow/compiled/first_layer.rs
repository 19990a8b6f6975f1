//! The first layer's share of the pinned rows' Gram factorisation, kept per pinned set: the
//! rows of first-layer entries do not depend on θ.
//!
//! A pinned first-layer entry A of unit u and sample i has the row e_u ⊗ x̃_i (x̃ = [x; 1]), so
//! its diagonal block of G, G_u = [x̃_a·x̃_b], and the block's factor L_u (with its dropped
//! directions) stay fixed while the pinned set does. A dense (deeper) entry c of sample i_c has
//! the first-stage part z_c ⊗ x̃_{i_c}, z_c = Z_0[:, c]. With K̃ = [x̃_i·x̃_j] over the dense
//! entries' samples and V_u = L_u⁻¹ X̃_{A_u}ᵀ X̃_C (m_u × n_C, zero rows for dropped directions),
//! both fixed as well,
//!
//!   L_CA[c, a] = z_c[u_a] · V_u[a, i_c],   G_CC's first-stage part = (Z_0ᵀ Z_0) ⊙ K̃[i_C, i_C],
//!
//! so an evaluation gathers L_CA (instead of the product G_CA = (X̃_Cᵀ X̃_A) scaled, and the
//! blocks' triangular solves) and forms the first-stage part with one product Z_0ᵀ Z_0 (the
//! one with X̃_Cᵀ X̃_C is kept).
//!
//! The blocks' drop rule is relative to G's largest diagonal entry, which moves with θ: the
//! kept factor is used while no block pivot lies between the old and the new threshold (then
//! a fresh factorisation would give the same one, operation for operation), and rebuilt
//! otherwise.

use super::part::{view, view_mut};
use crate::flow::gram::DROP;
use crate::flow::gram_bordered::factor_block_pivots;
use faer::linalg::matmul::matmul;
use faer::{Accum, Par};

/// The θ-independent first-layer parts of the factorisation (see the module docs), for the
/// pinned set in `key`.
#[derive(Default)]
pub(super) struct FirstLayer {
    /// The pinned set the kept parts belong to, and whether they were built for it.
    key: Vec<usize>,
    built: bool,
    /// The blocks' factor is valid for thresholds in [dropped_max, kept_min).
    factored: bool,
    kept_min: f64,
    dropped_max: f64,
    /// The blocks' largest diagonal entry.
    top_blocks: f64,
    /// Per dense entry c: its sample's index among the dense entries' samples (n_C of them).
    sigma: Vec<usize>,
    nc: usize,
    /// Per sample: its index among the dense entries' samples (scratch, usize::MAX outside).
    slot: Vec<usize>,
    /// K̃ over the dense entries' samples, n_C × n_C.
    ktil: Vec<f64>,
    /// Per first-layer entry a: its unit; per block: its first entry and size.
    a_unit: Vec<usize>,
    blocks: Vec<(usize, usize)>,
    /// The blocks' lower triangles (G_u), and their factors L_u with dropped directions.
    gram: Vec<f64>,
    pub(super) factor: Vec<f64>,
    pub(super) dropped: Vec<bool>,
    /// X̃_Aᵀ X̃_C, then V: row a (n_C numbers) contiguous.
    kac: Vec<f64>,
    pub(super) v: Vec<f64>,
    /// Scratch: gathered inputs, Z_0ᵀZ_0.
    gather: Vec<f64>,
    gather_a: Vec<f64>,
    m1: Vec<f64>,
}

/// Where the entries sit (internal order: k_C dense entries, then the first layer's by unit).
pub(super) struct Shape<'a> {
    pub kc: usize,
    pub k: usize,
    /// The first stage's input width (x̃ has one more).
    pub inp: usize,
    /// Inputs, sample-major (sample i at i·inp).
    pub x: &'a [f64],
    pub block_sizes: &'a [usize],
}

impl FirstLayer {
    /// Makes the kept parts those of `key` (the pinned set) with the entries placed by
    /// `place(q) = (sample, unit)` (internal order).
    pub fn shape(&mut self, key: &[usize], sh: &Shape, place: impl Fn(usize) -> (usize, usize)) {
        if self.built && self.key == key {
            return;
        }
        self.key.clear();
        self.key.extend_from_slice(key);
        self.built = true;
        self.factored = false;
        let (kc, ka, inp) = (sh.kc, sh.k - sh.kc, sh.inp);
        let n = sh.x.len() / inp.max(1);
        // The dense entries' samples.
        self.slot.clear();
        self.slot.resize(n, usize::MAX);
        self.sigma.clear();
        self.gather.clear();
        let mut nc = 0;
        for c in 0..kc {
            let i = place(c).0;
            if self.slot[i] == usize::MAX {
                self.slot[i] = nc;
                nc += 1;
                self.gather.extend_from_slice(&sh.x[i * inp..(i + 1) * inp]);
            }
            self.sigma.push(self.slot[i]);
        }
        self.nc = nc;
        self.ktil.clear();
        self.ktil.resize(nc * nc, 0.0);
        let xc = view(&self.gather, inp, nc);
        matmul(
            view_mut(&mut self.ktil, nc, nc),
            Accum::Replace,
            xc.transpose(),
            xc,
            1.0,
            Par::Seq,
        );
        self.ktil.iter_mut().for_each(|v| *v += 1.0);
        // The first layer's entries and blocks.
        self.a_unit.clear();
        self.gather_a.clear();
        for a in 0..ka {
            let (i, u) = place(kc + a);
            self.a_unit.push(u);
            self.gather_a
                .extend_from_slice(&sh.x[i * inp..(i + 1) * inp]);
        }
        self.blocks.clear();
        self.gram.clear();
        self.top_blocks = 0.0;
        let mut start = 0;
        for &m in sh.block_sizes {
            self.blocks.push((start, m));
            let store = self.gram.len();
            self.gram.resize(store + m * m, 0.0);
            for c in 0..m {
                let xc = &self.gather_a[(start + c) * inp..(start + c + 1) * inp];
                for a in c..m {
                    let xa = &self.gather_a[(start + a) * inp..(start + a + 1) * inp];
                    let d: f64 = xa.iter().zip(xc).map(|(p, q)| p * q).sum();
                    self.gram[store + c * m + a] = d + 1.0;
                }
                self.top_blocks = self.top_blocks.max(self.gram[store + c * m + c]);
            }
            start += m;
        }
        self.kac.clear();
        self.kac.resize(nc * ka, 0.0);
        if nc > 0 && ka > 0 {
            matmul(
                view_mut(&mut self.kac, nc, ka),
                Accum::Replace,
                xc.transpose(),
                view(&self.gather_a, inp, ka),
                1.0,
                Par::Seq,
            );
            self.kac.iter_mut().for_each(|v| *v += 1.0);
        }
    }

    /// Drops the kept parts (the next [`Self::shape`] rebuilds them).
    #[cfg(test)]
    pub fn forget(&mut self) {
        self.built = false;
    }

    /// G's largest diagonal entry given the dense part's `top_dense`; makes the blocks' factor
    /// and V those of the drop threshold it sets.
    pub fn prepare(&mut self, top_dense: f64) -> f64 {
        let top = top_dense.max(self.top_blocks);
        let floor = DROP * top;
        // NaN pivots are dropped at any threshold (f64::max skips them in `dropped_max`).
        if self.factored && self.dropped_max <= floor && floor < self.kept_min {
            return top;
        }
        self.factored = true;
        let nc = self.nc;
        self.factor.clone_from(&self.gram);
        self.dropped.clear();
        self.dropped.resize(self.a_unit.len(), false);
        self.v.clone_from(&self.kac);
        self.kept_min = f64::INFINITY;
        self.dropped_max = f64::NEG_INFINITY;
        let mut store = 0;
        for &(start, m) in &self.blocks {
            let l = &mut self.factor[store..store + m * m];
            let dropped = &mut self.dropped[start..start + m];
            let (kept, dr) = factor_block_pivots(l, m, top, dropped);
            self.kept_min = self.kept_min.min(kept);
            self.dropped_max = self.dropped_max.max(dr);
            // V_u = L_u⁻¹ X̃_{A_u}ᵀ X̃_C, row by row (rows of dropped directions zero).
            for j in 0..m {
                let a = start + j;
                let (head, rest) = self.v.split_at_mut(a * nc);
                let row = &mut rest[..nc];
                if dropped[j] {
                    row.iter_mut().for_each(|v| *v = 0.0);
                    continue;
                }
                for i in 0..j {
                    let f = l[i * m + j];
                    if f != 0.0 {
                        let src = &head[(start + i) * nc..(start + i + 1) * nc];
                        for (d, s) in row.iter_mut().zip(src) {
                            *d -= f * s;
                        }
                    }
                }
                let inv = 1.0 / l[j * m + j];
                row.iter_mut().for_each(|v| *v *= inv);
            }
            store += m * m;
        }
        top
    }

    /// The diagonal of the dense entries' first-stage Gram part, (z_c·z_c) K̃[i_c, i_c] +
    /// a_c², from Z_0 (out × k_C and more, column-major) and the first
    /// stage's slope parts a_0; computes Z_0ᵀ Z_0 for [`Self::add_first_stage`]. Returns the
    /// largest of them.
    pub fn first_stage_diagonal(&mut self, kc: usize, out: usize, z0: &[f64], a0: &[f64]) -> f64 {
        self.m1.clear();
        self.m1.resize(kc * kc, 0.0);
        super::rows::lower_gram(
            view(&z0[..out * kc], out, kc),
            view_mut(&mut self.m1, kc, kc),
        );
        let nc = self.nc;
        (0..kc)
            .map(|c| {
                let s = self.sigma[c];
                self.m1[c * kc + c] * self.ktil[s * nc + s] + a0[c] * a0[c]
            })
            .fold(0.0f64, f64::max)
    }

    /// G_CC += (Z_0ᵀ Z_0) ⊙ K̃ + a_0 a_0ᵀ on the lower triangle of the k_C × k_C column-major
    /// `corner` (after [`Self::first_stage_diagonal`]).
    pub fn add_first_stage(&self, corner: &mut [f64], kc: usize, a0: &[f64]) {
        let nc = self.nc;
        for b in 0..kc {
            let (sb, ab) = (self.sigma[b], a0[b]);
            let col = &mut corner[b * kc..(b + 1) * kc];
            for (a, g) in col.iter_mut().enumerate().skip(b) {
                let k = self.ktil[sb * nc + self.sigma[a]];
                *g += self.m1[b * kc + a] * k + a0[a] * ab;
            }
        }
    }

    /// L_A (with its dropped directions) and L_CA[c, a] = z_c[u_a] V[a, i_c] into the buffers
    /// of [`crate::flow::gram_bordered::BorderedGram::factored_parts_mut`].
    pub fn fill(
        &self,
        diagonal: &mut [f64],
        dropped: &mut [bool],
        border: &mut [f64],
        kc: usize,
        out: usize,
        z0: &[f64],
    ) {
        diagonal.copy_from_slice(&self.factor);
        dropped.copy_from_slice(&self.dropped);
        let nc = self.nc;
        for (a, (col, &u)) in border
            .chunks_exact_mut(kc.max(1))
            .zip(&self.a_unit)
            .enumerate()
        {
            let va = &self.v[a * nc..(a + 1) * nc];
            for (c, g) in col.iter_mut().enumerate().take(kc) {
                *g = z0[c * out + u] * va[self.sigma[c]];
            }
        }
    }
}
