//! The pinned rows on the compiled route: one multi-column reverse pass per sample, their Gram
//! matrix in the bordered shape of [`BorderedGram`] and its factorisation, R v and Rᵀ w (see
//! the parent module's docs, **Pinned rows, structured**).

use super::first_layer::{FirstLayer, Shape};
use super::part::{view, view_mut};
use super::{Compiled, FREE};
use crate::flow::gram_bordered::BorderedGram;
use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};

/// Columns per dense product when forming G's lower triangle.
const GRAM_BLOCK: usize = 32;

/// The lower triangle of Vᵀ V into `dst` by column blocks of dense products (faer's triangular
/// product is slower at these sizes); the diagonal blocks' upper parts are written but unread.
pub(super) fn lower_gram(v: MatRef<'_, f64>, mut dst: MatMut<'_, f64>) {
    let k = v.ncols();
    for c0 in (0..k).step_by(GRAM_BLOCK) {
        let w = GRAM_BLOCK.min(k - c0);
        matmul(
            dst.as_mut().submatrix_mut(c0, c0, k - c0, w),
            Accum::Replace,
            v.transpose().subrows(c0, k - c0),
            v.subcols(c0, w),
            1.0,
            Par::Seq,
        );
    }
}

impl Compiled {
    /// The rows ∇z_j of the pinned entries at the last gradient evaluation (one multi-column
    /// reverse pass per sample), stored per stage t as Z_t (out_t × K_t), S_t (in_t × K_t) and
    /// the PReLU slope parts a_t, the K_t entries of stage ≥ t first (internal order: stage
    /// descending). Returns the number of samples passed.
    pub fn rows(&mut self, theta: &[f64], pieces: &[u16], pinned: &[usize]) -> usize {
        assert!(
            !self.mixes_samples(),
            "compiled rows need a plan that does not mix samples"
        );
        let k = pinned.len();
        let ns = self.plan.stages.len();
        self.rows_for.clear();
        self.rows_for.extend_from_slice(pinned);
        let mut r = std::mem::take(&mut self.r);
        r.q_place.clear();
        r.q_place.extend(pinned.iter().map(|&e| self.locate(e)));
        // Internal order: stage descending, then sample.
        r.inv.clear();
        r.inv.extend(0..k);
        {
            let qp = &r.q_place;
            // The first stage's entries (last) by unit: the blocks of `BorderedGram`.
            r.inv.sort_unstable_by_key(|&j| {
                let (stage, sample, unit) = qp[j];
                let (major, minor) = if stage == 0 {
                    (unit, sample)
                } else {
                    (sample, unit)
                };
                (std::cmp::Reverse(stage), major, minor)
            });
        }
        r.pos.clear();
        r.pos.resize(k, 0);
        for (q, &j) in r.inv.iter().enumerate() {
            r.pos[j] = q;
        }
        r.kt.clear();
        for t in 0..ns {
            r.kt.push(r.inv.iter().filter(|&&j| r.q_place[j].0 >= t).count());
        }
        for (t, st) in self.plan.stages.iter().enumerate() {
            let kk = r.kt[t];
            r.zt[t].clear();
            r.zt[t].resize(st.out * kk, 0.0);
            r.st[t].clear();
            r.st[t].resize(st.inp * kk, 0.0);
            r.at[t].clear();
            r.at[t].resize(kk, 0.0);
        }
        // Groups of one sample, stage descending inside.
        r.gorder.clear();
        r.gorder.extend(0..k);
        {
            let (qp, inv) = (&r.q_place, &r.inv);
            r.gorder.sort_unstable_by_key(|&q| {
                let pl = qp[inv[q]];
                (pl.1, std::cmp::Reverse(pl.0))
            });
        }
        let wmax = self.plan.max_width();
        let mut samples = 0;
        let mut g0 = 0;
        while g0 < k {
            let i = r.q_place[r.inv[r.gorder[g0]]].1;
            let mut g1 = g0 + 1;
            while g1 < k && r.q_place[r.inv[r.gorder[g1]]].1 == i {
                g1 += 1;
            }
            samples += 1;
            let kg = g1 - g0;
            r.hb.clear();
            r.hb.resize(kg * wmax, 0.0);
            r.hb_next.clear();
            r.hb_next.resize(kg * wmax, 0.0);
            let smax = r.q_place[r.inv[r.gorder[g0]]].0;
            let (part, col) = self.place(i);
            for t in (0..=smax).rev() {
                let st = &self.plan.stages[t];
                let (w, _, a) = st.params(theta);
                let a = a.unwrap_or(0.0);
                let active = r.gorder[g0..g1]
                    .iter()
                    .take_while(|&&q| r.q_place[r.inv[q]].0 >= t)
                    .count();
                let src = self.src_of(t, i);
                for c in 0..active {
                    let q = r.gorder[g0 + c];
                    let (stage, _, unit) = r.q_place[r.inv[q]];
                    let zb = &mut r.zt[t][q * st.out..(q + 1) * st.out];
                    if stage == t {
                        zb.iter_mut().for_each(|v| *v = 0.0);
                        zb[unit] = 1.0;
                        r.at[t][q] = 0.0;
                    } else {
                        let z = &self.parts[part].z[t][col * st.out..(col + 1) * st.out];
                        let e0 = self.offsets[t] + i * st.out;
                        let mut ga = 0.0;
                        for u in 0..st.out {
                            let hv = r.hb[c * wmax + u];
                            let (dv, da) = self.sigma_prime(pieces, e0 + u, z[u], a);
                            zb[u] = hv * dv;
                            ga += hv * da;
                        }
                        r.at[t][q] = ga;
                    }
                    r.st[t][q * st.inp..(q + 1) * st.inp].copy_from_slice(src);
                }
                if t == 0 {
                    break;
                }
                // h̄_{t−1} = W_tᵀ z̄_t (+ h̄_t through a residual skip), all columns at once.
                for c in 0..active {
                    let q = r.gorder[g0 + c];
                    let carry = st.residual && r.q_place[r.inv[q]].0 > t;
                    let (hb, hn) = (&r.hb, &mut r.hb_next);
                    let dst = &mut hn[c * wmax..c * wmax + st.inp];
                    if carry {
                        dst.copy_from_slice(&hb[c * wmax..c * wmax + st.inp]);
                    } else {
                        dst.iter_mut().for_each(|v| *v = 0.0);
                    }
                }
                for row in 0..st.out {
                    let wrow = &w[row * st.inp..(row + 1) * st.inp];
                    for c in 0..active {
                        let q = r.gorder[g0 + c];
                        let coef = r.zt[t][q * st.out + row];
                        if coef != 0.0 {
                            let dst = &mut r.hb_next[c * wmax..c * wmax + st.inp];
                            for (dv, wv) in dst.iter_mut().zip(wrow) {
                                *dv += coef * wv;
                            }
                        }
                    }
                }
                std::mem::swap(&mut r.hb, &mut r.hb_next);
            }
            g0 = g1;
        }
        self.r = r;
        samples
    }

    /// (σ', ∂σ/∂a) of entry e at z under the installed pattern.
    #[inline]
    fn sigma_prime(&self, pieces: &[u16], e: usize, z: f64, a: f64) -> (f64, f64) {
        match self.pin_of[e] {
            FREE => {
                let k = pieces[e] as usize;
                (
                    self.act.piece_derivative(k, z, a),
                    self.act.piece_slope_derivative(k, z),
                )
            }
            j => (self.pins[j as usize].slope, 0.0),
        }
    }

    /// ∂z_k/∂σ(z_e) for pinned k of a later stage than pinned e in the same sample (indices in
    /// `pinned` order), from k's stored row: its cotangent at e's stage and unit is that factor
    /// times σ'(z_e) = `slope_e`, the slope e was evaluated with. None where it does not apply
    /// (or the slope is 0).
    pub fn chain_factor(&self, k: usize, e: usize, slope_e: f64) -> Option<f64> {
        let r = &self.r;
        let ((te, ie, ue), (tk, ik, _)) = (*r.q_place.get(e)?, *r.q_place.get(k)?);
        if tk <= te || ik != ie || slope_e == 0.0 {
            return None;
        }
        let out = self.plan.stages[te].out;
        Some(r.zt[te][r.pos[k] * out + ue] / slope_e)
    }

    /// True when the stored rows belong to this pinned set.
    pub fn rows_match(&self, pinned: &[usize]) -> bool {
        self.rows_for == pinned
    }

    /// G = R Rᵀ = Σ_t (Z_tᵀ Z_t) ⊙ (S_tᵀ S_t + 1) + a_t a_tᵀ of the stored rows, factorised in
    /// the bordered shape of [`BorderedGram`]. The dense part C is the entries of stages ≥ 1
    /// (the first k_C internal positions): two lower-triangle products per stage t ≥ 1 form
    /// their part of G_CC. The first stage's entries A have Z_0 = e_unit and no other stage:
    /// their blocks' factor L_A, L_CA and G_CC's first-stage part come from [`FirstLayer`]
    /// (kept per pinned set); then S = G_CC − L_CA L_CAᵀ and its factor.
    pub fn factor(&mut self, par: Par) {
        let k = self.rows_for.len();
        let r = &mut self.r;
        let kc = r.kt.get(1).copied().unwrap_or(0);
        r.block_sizes.clear();
        for q in kc..k {
            let unit = r.q_place[r.inv[q]].2;
            match r.block_sizes.last_mut() {
                Some(m) if q > kc && r.q_place[r.inv[q - 1]].2 == unit => *m += 1,
                _ => r.block_sizes.push(1),
            }
        }
        let (inp, out) = (self.plan.stages[0].inp, self.plan.stages[0].out);
        let (q_place, inv) = (&r.q_place, &r.inv);
        r.first.shape(
            &self.rows_for,
            &Shape {
                kc,
                k,
                inp,
                x: &self.x,
                block_sizes: &r.block_sizes,
            },
            |q| {
                let (_, sample, unit) = q_place[inv[q]];
                (sample, unit)
            },
        );
        let parts = r.fac.factored_parts_mut(kc, &r.block_sizes);
        let schur = parts.schur;
        for (t, st) in self.plan.stages.iter().enumerate().skip(1) {
            // Dense entries of stage ≥ t: the first kk; of them, those deeper than t come first
            // (Z_t dense), the rest sit at stage t itself (Z_t = e_unit, no slope part).
            let kk = r.kt[t].min(kc);
            let deep = r.kt.get(t + 1).copied().unwrap_or(0).min(kk);
            if kk == 0 {
                continue;
            }
            r.m1.clear();
            r.m1.resize(deep * deep, 0.0);
            r.m2.clear();
            r.m2.resize(deep * deep, 0.0);
            for (m, (src, rows)) in [
                (&mut r.m1, (&r.zt[t], st.out)),
                (&mut r.m2, (&r.st[t], st.inp)),
            ] {
                lower_gram(
                    view(&src[..rows * deep], rows, deep),
                    view_mut(m, deep, deep),
                );
            }
            let at = &r.at[t];
            for b in 0..deep {
                let (col, m1, m2) = (
                    &mut schur[b * kc + b..b * kc + deep],
                    &r.m1[b * deep + b..(b + 1) * deep],
                    &r.m2[b * deep + b..(b + 1) * deep],
                );
                let ab = at[b];
                for (((g, x1), x2), aa) in col.iter_mut().zip(m1).zip(m2).zip(&at[b..]) {
                    *g += x1 * (x2 + 1.0) + aa * ab;
                }
            }
            let own = kk - deep;
            if own == 0 {
                continue;
            }
            let src = &r.st[t];
            if deep > 0 {
                // (own a, deep b): Z_t[unit_a, b] (s_a·s_b + 1), the products S_ownᵀ S_deep.
                r.m2.clear();
                r.m2.resize(own * deep, 0.0);
                let v = view(&src[..st.inp * kk], st.inp, kk);
                matmul(
                    view_mut(&mut r.m2, own, deep),
                    Accum::Replace,
                    v.subcols(deep, own).transpose(),
                    v.subcols(0, deep),
                    1.0,
                    Par::Seq,
                );
                for b in 0..deep {
                    let zb = &r.zt[t][b * st.out..(b + 1) * st.out];
                    for a in deep..kk {
                        let unit = r.q_place[r.inv[a]].2;
                        schur[b * kc + a] += zb[unit] * (r.m2[b * own + a - deep] + 1.0);
                    }
                }
            }
            // (own a, own b): e_unitₐ·e_unit_b (s_a·s_b + 1), non-zero for the same unit only.
            for b in deep..kk {
                let (ub, sb) = (r.q_place[r.inv[b]].2, &src[b * st.inp..(b + 1) * st.inp]);
                for a in b..kk {
                    if r.q_place[r.inv[a]].2 == ub {
                        let sa = &src[a * st.inp..(a + 1) * st.inp];
                        let d: f64 = sa.iter().zip(sb).map(|(x, y)| x * y).sum();
                        schur[b * kc + a] += d + 1.0;
                    }
                }
            }
        }
        // The first stage: G's largest diagonal entry, then G_CC's first-stage part, L_A, L_CA.
        let (z0, a0) = (&r.zt[0], &r.at[0]);
        let first_top = r.first.first_stage_diagonal(kc, out, z0, a0);
        let top_dense = (0..kc).map(|c| schur[c * kc + c]).fold(first_top, f64::max);
        let top = r.first.prepare(top_dense);
        r.first.add_first_stage(schur, kc, a0);
        r.first
            .fill(parts.diagonal, parts.dropped, parts.border, kc, out, z0);
        r.fac.subtract_border_products();
        r.fac.factor_schur(top, par);
    }

    /// w = G⁻¹ b (dropped directions get 0), b and w in `pinned` order.
    pub fn solve(&mut self, b: &[f64], w: &mut Vec<f64>, par: Par) {
        let k = b.len();
        let r = &mut self.r;
        r.y.clear();
        r.y.extend((0..k).map(|q| b[r.inv[q]]));
        r.fac.solve_in_place(&mut r.y, par);
        w.clear();
        w.resize(k, 0.0);
        for q in 0..k {
            w[r.inv[q]] = r.y[q];
        }
    }

    /// 1/‖∇z_j‖² = 1/G_jj for every pinned j, in `pinned` order (∞ for a direction the
    /// factorisation dropped: its constraint is implied by the others), from the stored rows:
    /// G_jj = Σ_t ‖z̄_t‖² (‖src_t‖² + 1) + a_t². The scale of the normal speeds (see
    /// `system/classify.rs`).
    pub fn inverse_row_norms(&mut self, out: &mut Vec<f64>) {
        let k = self.rows_for.len();
        let r = &mut self.r;
        r.fac.dropped_directions(&mut r.dropped);
        r.y.clear();
        r.y.resize(k, 0.0);
        for (t, st) in self.plan.stages.iter().enumerate() {
            for q in 0..r.kt[t] {
                let sq = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>();
                let z = sq(&r.zt[t][q * st.out..(q + 1) * st.out]);
                let s = sq(&r.st[t][q * st.inp..(q + 1) * st.inp]);
                let a = r.at[t][q];
                r.y[q] += z * (s + 1.0) + a * a;
            }
        }
        out.clear();
        out.extend(r.pos.iter().map(|&q| {
            if r.dropped.get(q).copied().unwrap_or(false) {
                f64::INFINITY
            } else {
                1.0 / r.y[q]
            }
        }));
    }

    /// (R v)_j for a parameter vector v, into `out` (`pinned` order). Per stage t, an entry at
    /// stage t itself has Z_t = e_unit: its part is one row of GW_t against src_t(i); the
    /// entries of deeper stages (the first k_{t+1}) go through the product GW_t · S_t.
    pub fn rows_dot(&mut self, v: &[f64], out: &mut Vec<f64>) {
        let k = self.rows_for.len();
        let r = &mut self.r;
        r.y.clear();
        r.y.resize(k, 0.0);
        for (t, st) in self.plan.stages.iter().enumerate() {
            let (kk, deep) = (r.kt[t], r.kt.get(t + 1).copied().unwrap_or(0));
            if kk == 0 {
                continue;
            }
            let (gw, gb, ga) = st.params(v);
            let ga = ga.unwrap_or(0.0);
            if deep > 0 {
                r.pt.clear();
                r.pt.resize(st.out * deep, 0.0);
                // P = GW · S_t (out × k_{t+1}).
                matmul(
                    view_mut(&mut r.pt, st.out, deep),
                    Accum::Replace,
                    MatRef::from_row_major_slice(gw, st.out, st.inp),
                    view(&r.st[t][..st.inp * deep], st.inp, deep),
                    1.0,
                    Par::Seq,
                );
            }
            for q in 0..deep {
                let (zc, pc) = (
                    &r.zt[t][q * st.out..(q + 1) * st.out],
                    &r.pt[q * st.out..(q + 1) * st.out],
                );
                let mut acc = r.at[t][q] * ga;
                for ((zv, pv), bv) in zc.iter().zip(pc).zip(gb) {
                    acc += zv * (pv + bv);
                }
                r.y[q] += acc;
            }
            for q in deep..kk {
                let unit = r.q_place[r.inv[q]].2;
                let src = &r.st[t][q * st.inp..(q + 1) * st.inp];
                let wrow = &gw[unit * st.inp..(unit + 1) * st.inp];
                let dot: f64 = wrow.iter().zip(src).map(|(a, b)| a * b).sum();
                r.y[q] += dot + gb[unit];
            }
        }
        out.clear();
        out.extend((0..k).map(|j| r.y[r.pos[j]]));
    }

    /// out += Σ_j w_j ∇z_j (w in `pinned` order); per stage split as in [`Self::rows_dot`].
    pub fn add_rows_t(&mut self, w: &[f64], out: &mut [f64]) {
        let r = &mut self.r;
        for (t, st) in self.plan.stages.iter().enumerate() {
            let (kk, deep) = (r.kt[t], r.kt.get(t + 1).copied().unwrap_or(0));
            if kk == 0 {
                continue;
            }
            r.pt.clear();
            r.pt.extend_from_slice(&r.zt[t][..st.out * deep]);
            let mut slope = 0.0;
            for q in 0..deep {
                let wq = w[r.inv[q]];
                r.pt[q * st.out..(q + 1) * st.out]
                    .iter_mut()
                    .for_each(|v| *v *= wq);
                slope += wq * r.at[t][q];
            }
            let (gw, gb, ga) = st.params_mut(out);
            if deep > 0 {
                // GW (row-major out × in = column-major in × out) += S_t · (Z_t diag(w))ᵀ.
                matmul(
                    MatMut::from_column_major_slice_mut(gw, st.inp, st.out),
                    Accum::Add,
                    view(&r.st[t][..st.inp * deep], st.inp, deep),
                    view(&r.pt, st.out, deep).transpose(),
                    1.0,
                    Par::Seq,
                );
            }
            for pc in r.pt.chunks_exact(st.out) {
                for (g, v) in gb.iter_mut().zip(pc) {
                    *g += v;
                }
            }
            for q in deep..kk {
                let (unit, wq) = (r.q_place[r.inv[q]].2, w[r.inv[q]]);
                let src = &r.st[t][q * st.inp..(q + 1) * st.inp];
                for (g, x) in gw[unit * st.inp..(unit + 1) * st.inp].iter_mut().zip(src) {
                    *g += wq * x;
                }
                gb[unit] += wq;
            }
            if let Some(g) = ga {
                *g += slope;
            }
        }
    }
}

/// The structured rows of the last evaluation and the factorisation of their Gram matrix, in
/// the internal order q (see [`Compiled::rows`]); every buffer is kept between evaluations.
#[derive(Default)]
pub(super) struct Rows {
    /// (stage, sample, unit) per pinned index j.
    pub(super) q_place: Vec<(usize, usize, usize)>,
    /// j of internal position q, and q of j.
    pub(super) inv: Vec<usize>,
    pub(super) pos: Vec<usize>,
    /// Internal positions grouped by sample.
    pub(super) gorder: Vec<usize>,
    /// Per stage: entries of stage ≥ t, Z_t, S_t, a_t.
    pub(super) kt: Vec<usize>,
    pub(super) zt: Vec<Vec<f64>>,
    pub(super) st: Vec<Vec<f64>>,
    pub(super) at: Vec<Vec<f64>>,
    pub(super) hb: Vec<f64>,
    pub(super) hb_next: Vec<f64>,
    pub(super) m1: Vec<f64>,
    pub(super) m2: Vec<f64>,
    pub(super) pt: Vec<f64>,
    /// Sizes of the first stage's unit blocks (internal order), and the factorisation.
    pub(super) block_sizes: Vec<usize>,
    pub(super) fac: BorderedGram,
    /// Per internal position: its direction was dropped by the last factorisation.
    pub(super) dropped: Vec<bool>,
    /// The first layer's parts of the factorisation, kept per pinned set.
    pub(super) first: FirstLayer,
    pub(super) y: Vec<f64>,
}
