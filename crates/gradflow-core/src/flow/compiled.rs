//! The kink-aware field on a compiled network (the engine's [`Plan`] of the dnn and resnet
//! presets), f64, allocation-free in the steady state: the fast route of [`super::system`].
//!
//! **Gradient.** The samples are cut into two parts with their own buffers; each part runs the
//! forward pass (one faer product per stage, then σ on the frozen piece of every entry, or the
//! pinned entry's chosen slope) and the reverse pass on its own thread, and the two gradient
//! contributions are summed in part order (so results do not depend on which threads ran them).
//! The reverse pass records the cotangent at σ(z_j) of every pinned entry j.
//!
//! **Pinned rows, structured.** The row ∇_θ z_j of an entry of sample i at stage s_j is, per
//! stage t ≤ s_j, an outer product z̄_t ⊗ src_t(i) in W_t, z̄_t in b_t and a scalar in PReLU's
//! slope. All entries of one sample go back together, one multi-column reverse pass per sample
//! (W_t is read once per sample and stage); a row is stored as its cotangents z̄_t plus a copy
//! of src_t(i), ≈ Σ_t (in_t + out_t) numbers instead of p, so the rows stay valid after later
//! forward passes (the drift projection uses them). Stacked per stage as Z_t and S_t, they give
//! by matrix products, without forming any p-vector: G = Σ_t (Z_tᵀ Z_t) ⊙ (S_tᵀ S_t + 1) + a_t a_tᵀ,
//! R g (through GW_t S_t) and Rᵀ w (GW_t += S_t (Z_t diag w)ᵀ).
//!
//! **Factorisation.** G(θ) changes with θ at every evaluation, so a factorisation kept across
//! evaluations and up/downdated on pin/release would solve with a stale Gram matrix; G is
//! formed (lower triangles only) and factorised afresh by a blocked Cholesky factorisation that
//! drops the directions of pinned rows depending on the others (their constraint is implied by
//! the others, their multiplier is 0), see `gram.rs`.

use super::gram_bordered::BorderedGram;
use crate::activation::Activation;
use crate::engine::{Plan, Prop};
use crate::loss::LossKind;
use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};

/// Columns per dense product when forming G's lower triangle.
const GRAM_BLOCK: usize = 32;

/// "Not pinned" in [`Compiled::pin_of`].
const FREE: u32 = u32::MAX;

/// One pinned entry as the compiled passes evaluate it: σ(z) = σ_k(b) + s·(z − b).
#[derive(Clone, Copy, Debug)]
pub(super) struct PinSlot {
    pub knot: f64,
    /// The piece left of the knot (σ(b) is its value there).
    pub left_piece: u16,
    pub slope: f64,
}

/// One part's buffers: samples i0..i1, every stage's z and h (features × samples).
#[derive(Default)]
struct Part {
    i0: usize,
    i1: usize,
    z: Vec<Vec<f64>>,
    h: Vec<Vec<f64>>,
    zbar: Vec<f64>,
    hbar: Vec<f64>,
    hbar_next: Vec<f64>,
    grad: Vec<f64>,
    sse: f64,
    /// Cotangent at σ(z_j) per pinned index j (NaN for samples of the other part).
    rec: Vec<f64>,
}

/// Read-only inputs of a pass.
struct Ctx<'a> {
    plan: &'a Plan,
    act: &'a Activation,
    x: &'a [f64],
    y: &'a [f64],
    c: f64,
    theta: &'a [f64],
    pieces: &'a [u16],
    pin_of: &'a [u32],
    pins: &'a [PinSlot],
    offsets: &'a [usize],
    pinned: &'a [usize],
    /// σ is linear on each piece with its kink at 0 (ReLU, leaky ReLU, PReLU).
    linear: bool,
}

impl Ctx<'_> {
    /// For a [`Self::linear`] σ: the factor f with σ(z) = f·z = σ'(z)·z on entry e's piece (or
    /// its pinned slope; the kink is at 0, where σ vanishes).
    #[inline(always)]
    fn factor(&self, e: usize, slopes: &[f64; 2]) -> f64 {
        match self.pin_of[e] {
            FREE => slopes[(self.pieces[e] as usize).min(1)],
            j => self.pins[j as usize].slope,
        }
    }

    /// σ's slopes left and right of 0 for a [`Self::linear`] σ.
    fn slopes(&self, a: f64) -> [f64; 2] {
        [
            self.act.piece_derivative(0, -1.0, a),
            self.act.piece_derivative(1, 1.0, a),
        ]
    }

    /// (σ, σ', ∂σ/∂a) of entry e at z.
    #[inline]
    fn sigma(&self, e: usize, z: f64, a: f64) -> (f64, f64, f64) {
        match self.pin_of[e] {
            FREE => {
                let k = self.pieces[e] as usize;
                (
                    self.act.piece_value(k, z, a),
                    self.act.piece_derivative(k, z, a),
                    self.act.piece_slope_derivative(k, z),
                )
            }
            j => {
                let p = self.pins[j as usize];
                let v = self.act.piece_value(p.left_piece as usize, p.knot, a);
                (v + p.slope * (z - p.knot), p.slope, 0.0)
            }
        }
    }
}

fn view(s: &[f64], rows: usize, cols: usize) -> MatRef<'_, f64> {
    MatRef::from_column_major_slice(s, rows, cols)
}

fn view_mut(s: &mut [f64], rows: usize, cols: usize) -> MatMut<'_, f64> {
    MatMut::from_column_major_slice_mut(s, rows, cols)
}

impl Part {
    fn new(plan: &Plan, i0: usize, i1: usize, p: usize) -> Self {
        let cols = i1 - i0;
        let wmax = plan
            .stages
            .iter()
            .map(|s| s.inp.max(s.out))
            .max()
            .unwrap_or(0);
        Self {
            i0,
            i1,
            z: plan
                .stages
                .iter()
                .map(|s| vec![0.0; s.out * cols])
                .collect(),
            h: plan
                .stages
                .iter()
                .map(|s| vec![0.0; if s.act { s.out * cols } else { 0 }])
                .collect(),
            zbar: vec![0.0; wmax * cols],
            hbar: vec![0.0; wmax * cols],
            hbar_next: vec![0.0; wmax * cols],
            grad: vec![0.0; p],
            sse: 0.0,
            rec: Vec::new(),
        }
    }

    fn cols(&self) -> usize {
        self.i1 - self.i0
    }

    /// Forward pass on this part's samples (and the part's SSE).
    fn forward(&mut self, cx: &Ctx) {
        let cols = self.cols();
        if cols == 0 {
            self.sse = 0.0;
            return;
        }
        let d = cx.plan.in_dim();
        for (s, st) in cx.plan.stages.iter().enumerate() {
            let (w, b, a) = st.params(cx.theta);
            let a = a.unwrap_or(0.0);
            let (before, after) = self.h.split_at_mut(s);
            let src: &[f64] = if s == 0 {
                &cx.x[self.i0 * d..self.i1 * d]
            } else {
                &before[s - 1]
            };
            let z = &mut self.z[s];
            matmul(
                view_mut(z, st.out, cols),
                Accum::Replace,
                MatRef::from_row_major_slice(w, st.out, st.inp),
                view(src, st.inp, cols),
                1.0,
                Par::Seq,
            );
            for zc in z.chunks_exact_mut(st.out) {
                for (v, bv) in zc.iter_mut().zip(b) {
                    *v += bv;
                }
            }
            if st.act {
                let h = &mut after[0];
                let off = cx.offsets[s];
                let sl = cx.slopes(a);
                for col in 0..cols {
                    let e0 = off + (self.i0 + col) * st.out;
                    let r = col * st.out..(col + 1) * st.out;
                    let pairs = h[r.clone()].iter_mut().zip(&z[r.clone()]).enumerate();
                    if cx.linear {
                        for (u, (hv, &zv)) in pairs {
                            *hv = cx.factor(e0 + u, &sl) * zv;
                        }
                    } else {
                        for (u, (hv, &zv)) in pairs {
                            *hv = cx.sigma(e0 + u, zv, a).0;
                        }
                    }
                    if st.residual {
                        for (hv, sv) in h[r.clone()].iter_mut().zip(&src[r]) {
                            *hv += sv;
                        }
                    }
                }
            }
        }
        let u = self.z.last().expect("a plan has stages");
        let m = cx.plan.out_dim();
        let y = &cx.y[self.i0 * m..self.i1 * m];
        let mut sse = 0.0;
        for (zb, (uv, yv)) in self.zbar.iter_mut().zip(u.iter().zip(y)) {
            let e = uv - yv;
            sse += e * e;
            *zb = 2.0 * cx.c * e;
        }
        self.sse = sse;
    }

    /// Reverse pass from the output cotangent left in `zbar` by [`Self::forward`].
    fn backward(&mut self, cx: &Ctx) {
        self.grad.iter_mut().for_each(|g| *g = 0.0);
        self.rec.clear();
        self.rec.resize(cx.pinned.len(), f64::NAN);
        let cols = self.cols();
        if cols == 0 {
            return;
        }
        let d = cx.plan.in_dim();
        let ns = cx.plan.stages.len();
        for s in (0..ns).rev() {
            let st = &cx.plan.stages[s];
            let (w, _, a) = st.params(cx.theta);
            let a = a.unwrap_or(0.0);
            let len = st.out * cols;
            let mut ga = 0.0;
            if st.act {
                let off = cx.offsets[s];
                let z = &self.z[s];
                let sl = cx.slopes(a);
                let prelu = st.prelu;
                for col in 0..cols {
                    let e0 = off + (self.i0 + col) * st.out;
                    for u in 0..st.out {
                        let k = col * st.out + u;
                        if cx.linear {
                            let f = cx.factor(e0 + u, &sl);
                            self.zbar[k] = self.hbar[k] * f;
                            if prelu && cx.pin_of[e0 + u] == FREE && cx.pieces[e0 + u] == 0 {
                                ga += self.hbar[k] * z[k];
                            }
                        } else {
                            let (_, dv, da) = cx.sigma(e0 + u, z[k], a);
                            ga += self.hbar[k] * da;
                            self.zbar[k] = self.hbar[k] * dv;
                        }
                    }
                }
                // Cotangents at σ(z_j) of this part's pinned entries of stage s.
                for (j, &e) in cx.pinned.iter().enumerate() {
                    if e >= off && e < off + st.out * cx.x.len() / d {
                        let (i, u) = ((e - off) / st.out, (e - off) % st.out);
                        if (self.i0..self.i1).contains(&i) {
                            self.rec[j] = self.hbar[(i - self.i0) * st.out + u];
                        }
                    }
                }
            }
            let src: &[f64] = if s == 0 {
                &cx.x[self.i0 * d..self.i1 * d]
            } else {
                &self.h[s - 1]
            };
            let (gw, gb, gslope) = st.params_mut(&mut self.grad);
            matmul(
                MatMut::from_column_major_slice_mut(gw, st.inp, st.out),
                Accum::Replace,
                view(src, st.inp, cols),
                view(&self.zbar[..len], st.out, cols).transpose(),
                1.0,
                Par::Seq,
            );
            for zc in self.zbar[..len].chunks_exact(st.out) {
                for (g, v) in gb.iter_mut().zip(zc) {
                    *g += v;
                }
            }
            if let Some(g) = gslope {
                *g = ga;
            }
            if s > 0 {
                let prev = st.inp * cols;
                if st.residual {
                    self.hbar_next[..prev].copy_from_slice(&self.hbar[..prev]);
                }
                matmul(
                    view_mut(&mut self.hbar_next[..prev], st.inp, cols),
                    if st.residual {
                        Accum::Add
                    } else {
                        Accum::Replace
                    },
                    MatRef::from_row_major_slice(w, st.out, st.inp).transpose(),
                    view(&self.zbar[..len], st.out, cols),
                    1.0,
                    Par::Seq,
                );
                std::mem::swap(&mut self.hbar, &mut self.hbar_next);
            }
        }
    }
}

/// The compiled kink-aware evaluator (see the module docs).
pub(super) struct Compiled {
    plan: Plan,
    act: Activation,
    x: Vec<f64>,
    y: Vec<f64>,
    c: f64,
    /// Global entry offset of each stage's pre-activations (stages with σ).
    offsets: Vec<usize>,
    parts: [Part; 2],
    /// Pinned slot per global entry ([`FREE`] when not pinned), and the slots.
    pub pin_of: Vec<u32>,
    pub pins: Vec<PinSlot>,
    pinned_entries: Vec<usize>,
    /// PReLU's slope per stage at the last forward pass (0 for other activations).
    slope: Vec<f64>,
    /// Pinned entries the stored rows belong to, and the rows.
    rows_for: Vec<usize>,
    r: Rows,
}

/// The result of one compiled gradient evaluation.
pub(super) struct Evaluated {
    pub loss: f64,
}

impl Compiled {
    /// The compiled evaluator for a plan that never mixes samples (dnn, resnet); None otherwise.
    pub fn new(
        plan: Plan,
        act: Activation,
        x: &[f64],
        y: &[f64],
        n: usize,
        loss: LossKind,
    ) -> Option<Self> {
        if plan.stages.iter().any(|s| s.prop != Prop::None) || n == 0 {
            return None;
        }
        let p = plan.num_params();
        let mut offsets = Vec::with_capacity(plan.stages.len());
        let mut off = 0;
        for st in &plan.stages {
            offsets.push(off);
            if st.act {
                off += st.out * n;
            }
        }
        let ns = plan.stages.len();
        let mid = n.div_ceil(2);
        let parts = [Part::new(&plan, 0, mid, p), Part::new(&plan, mid, n, p)];
        let m = plan.out_dim();
        Some(Self {
            slope: vec![0.0; plan.stages.len()],
            c: loss.c(n, m),
            plan,
            act,
            x: x.to_vec(),
            y: y.to_vec(),
            offsets,
            parts,
            pin_of: vec![FREE; off],
            pins: Vec::new(),
            pinned_entries: Vec::new(),
            rows_for: Vec::new(),
            r: Rows {
                zt: vec![Vec::new(); ns],
                st: vec![Vec::new(); ns],
                at: vec![Vec::new(); ns],
                ..Default::default()
            },
        })
    }

    /// The controlled pre-activation entries (stages with σ, sample-major per stage).
    pub fn entries(&self) -> usize {
        self.pin_of.len()
    }

    /// Sets the pinned entries (sorted) and their slots.
    pub fn set_pins(&mut self, pinned: &[usize], slots: impl Iterator<Item = PinSlot>) {
        for &e in &self.pinned_entries {
            self.pin_of[e] = FREE;
        }
        self.pins.clear();
        self.pinned_entries.clear();
        self.pinned_entries.extend_from_slice(pinned);
        for (j, (&e, s)) in pinned.iter().zip(slots).enumerate() {
            self.pin_of[e] = j as u32;
            self.pins.push(s);
        }
    }

    /// PReLU's slope of the stage holding entry e, at the last forward pass.
    pub fn slope_of_entry(&self, e: usize) -> f64 {
        self.slope[self.stage_of(e)]
    }

    fn stage_of(&self, e: usize) -> usize {
        let mut s = 0;
        for (t, st) in self.plan.stages.iter().enumerate() {
            if st.act && self.offsets[t] <= e {
                s = t;
            }
        }
        s
    }

    fn run(&mut self, theta: &[f64], pieces: &[u16], pinned: &[usize], grad: bool) {
        for (s, st) in self.plan.stages.iter().enumerate() {
            self.slope[s] = st.params(theta).2.unwrap_or(0.0);
        }
        let cx = Ctx {
            plan: &self.plan,
            act: &self.act,
            x: &self.x,
            y: &self.y,
            c: self.c,
            theta,
            pieces,
            pin_of: &self.pin_of,
            pins: &self.pins,
            offsets: &self.offsets,
            pinned,
            linear: matches!(
                self.act,
                Activation::Relu | Activation::LeakyRelu { .. } | Activation::Prelu { .. }
            ),
        };
        let work = |part: &mut Part| {
            part.forward(&cx);
            if grad {
                part.backward(&cx);
            }
        };
        let [p0, p1] = &mut self.parts;
        if matches!(crate::batch::par(), Par::Seq) {
            work(p0);
            work(p1);
        } else {
            rayon::join(|| work(p0), || work(p1));
        }
    }

    /// Copies every pre-activation of the last forward pass into `z` (global entry order).
    fn gather_z(&self, z: &mut [f64]) {
        for (s, st) in self.plan.stages.iter().enumerate() {
            if !st.act {
                continue;
            }
            for part in &self.parts {
                let (a, b) = (
                    self.offsets[s] + part.i0 * st.out,
                    self.offsets[s] + part.i1 * st.out,
                );
                z[a..b].copy_from_slice(&part.z[s]);
            }
        }
    }

    fn loss(&self) -> f64 {
        self.c * (self.parts[0].sse + self.parts[1].sse)
    }

    /// A forward pass: L(θ), and every pre-activation into `z` when given.
    pub fn forward(&mut self, theta: &[f64], pieces: &[u16], z: Option<&mut [f64]>) -> f64 {
        self.run(theta, pieces, &[], false);
        if let Some(z) = z {
            self.gather_z(z);
        }
        self.loss()
    }

    /// L(θ), ∇L(θ) into `grad`, every pre-activation into `z`, and the cotangents at σ(z_j) of
    /// the pinned entries into `cot` (in `pinned` order).
    pub fn gradient(
        &mut self,
        theta: &[f64],
        pieces: &[u16],
        pinned: &[usize],
        grad: &mut [f64],
        z: &mut [f64],
        cot: &mut Vec<f64>,
    ) -> Evaluated {
        self.run(theta, pieces, pinned, true);
        self.gather_z(z);
        let [p0, p1] = &self.parts;
        for (g, (a, b)) in grad.iter_mut().zip(p0.grad.iter().zip(&p1.grad)) {
            *g = a + b;
        }
        cot.clear();
        for (a, b) in p0.rec.iter().zip(&p1.rec) {
            cot.push(if a.is_nan() { *b } else { *a });
        }
        Evaluated { loss: self.loss() }
    }

    /// (part, column) of sample i.
    fn place(&self, i: usize) -> (usize, usize) {
        if i < self.parts[0].i1 {
            (0, i)
        } else {
            (1, i - self.parts[1].i0)
        }
    }

    fn src_of(&self, t: usize, i: usize) -> &[f64] {
        let st = &self.plan.stages[t];
        if t == 0 {
            &self.x[i * st.inp..(i + 1) * st.inp]
        } else {
            let (p, c) = self.place(i);
            &self.parts[p].h[t - 1][c * st.inp..(c + 1) * st.inp]
        }
    }

    /// (stage, sample, unit) of entry e.
    fn locate(&self, e: usize) -> (usize, usize, usize) {
        let s = self.stage_of(e);
        let out = self.plan.stages[s].out;
        let local = e - self.offsets[s];
        (s, local / out, local % out)
    }

    /// The rows ∇z_j of the pinned entries at the last gradient evaluation (one multi-column
    /// reverse pass per sample), stored per stage t as Z_t (out_t × K_t), S_t (in_t × K_t) and
    /// the PReLU slope parts a_t, the K_t entries of stage ≥ t first (internal order: stage
    /// descending). Returns the number of samples passed.
    pub fn rows(&mut self, theta: &[f64], pieces: &[u16], pinned: &[usize]) -> usize {
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
        let wmax = self
            .plan
            .stages
            .iter()
            .map(|s| s.inp.max(s.out))
            .max()
            .unwrap_or(0);
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

    /// True when the stored rows belong to this pinned set.
    pub fn rows_match(&self, pinned: &[usize]) -> bool {
        self.rows_for == pinned
    }

    /// G = R Rᵀ = Σ_t (Z_tᵀ Z_t) ⊙ (S_tᵀ S_t + 1) + a_t a_tᵀ of the stored rows, formed in the
    /// bordered shape of [`BorderedGram`] and factorised. The dense part C is the entries of
    /// stages ≥ 1 (the first k_C internal positions): two lower-triangle products per stage. The
    /// first stage's entries A have Z_0 = e_unit and no other stage, so their blocks are
    /// [x_i·x_j + 1] within a unit, and G_CA = Z_0[unit_a, c] (x_c·x_a + 1).
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
        let parts = r.fac.parts_mut(kc, &r.block_sizes);
        for (t, st) in self.plan.stages.iter().enumerate() {
            let kk = r.kt[t].min(kc);
            if kk == 0 {
                continue;
            }
            r.m1.clear();
            r.m1.resize(kk * kk, 0.0);
            r.m2.clear();
            r.m2.resize(kk * kk, 0.0);
            for (m, (src, rows)) in [
                (&mut r.m1, (&r.zt[t], st.out)),
                (&mut r.m2, (&r.st[t], st.inp)),
            ] {
                let v = view(&src[..rows * kk], rows, kk);
                // The lower triangle by column blocks of dense products (faer's triangular
                // product is slower at these sizes); the diagonal blocks' upper parts are unread.
                let mut dst = view_mut(m, kk, kk);
                for c0 in (0..kk).step_by(GRAM_BLOCK) {
                    let w = GRAM_BLOCK.min(kk - c0);
                    matmul(
                        dst.as_mut().submatrix_mut(c0, c0, kk - c0, w),
                        Accum::Replace,
                        v.transpose().subrows(c0, kk - c0),
                        v.subcols(c0, w),
                        1.0,
                        Par::Seq,
                    );
                }
            }
            let at = &r.at[t];
            // The stage's dense entries are the first kk of the internal order.
            for b in 0..kk {
                let (col, m1, m2) = (
                    &mut parts.corner[b * kc + b..b * kc + kk],
                    &r.m1[b * kk + b..(b + 1) * kk],
                    &r.m2[b * kk + b..(b + 1) * kk],
                );
                let ab = at[b];
                for (((g, x1), x2), aa) in col.iter_mut().zip(m1).zip(m2).zip(&at[b..]) {
                    *g += x1 * (x2 + 1.0) + aa * ab;
                }
            }
        }
        let ka = k - kc;
        if ka > 0 {
            let (inp, out) = (self.plan.stages[0].inp, self.plan.stages[0].out);
            let s0 = &r.st[0];
            let mut store = 0;
            let mut a0 = kc;
            for &m in &r.block_sizes {
                for c in 0..m {
                    let sc = &s0[(a0 + c) * inp..(a0 + c + 1) * inp];
                    for a in c..m {
                        let sa = &s0[(a0 + a) * inp..(a0 + a + 1) * inp];
                        let d: f64 = sa.iter().zip(sc).map(|(x, y)| x * y).sum();
                        parts.diagonal[store + c * m + a] = d + 1.0;
                    }
                }
                store += m * m;
                a0 += m;
            }
            if kc > 0 {
                // x_c · x_a for every (c, a): S_0[:, C]ᵀ S_0[:, A].
                let v = view(&s0[..inp * k], inp, k);
                let mut dst = MatMut::from_column_major_slice_mut(parts.border, kc, ka);
                matmul(
                    dst.as_mut(),
                    Accum::Replace,
                    v.subcols(0, kc).transpose(),
                    v.subcols(kc, ka),
                    1.0,
                    Par::Seq,
                );
                let z0 = &r.zt[0];
                for a in 0..ka {
                    let unit = r.q_place[r.inv[kc + a]].2;
                    for (c, g) in parts.border[a * kc..(a + 1) * kc].iter_mut().enumerate() {
                        *g = z0[c * out + unit] * (*g + 1.0);
                    }
                }
            }
        }
        r.fac.factor(par);
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

    /// (G⁻¹)_jj for every pinned j, in `pinned` order (∞ for a dropped direction: its
    /// constraint is implied by the others).
    pub fn inverse_diagonal(&mut self, par: Par, out: &mut Vec<f64>) {
        let r = &mut self.r;
        r.fac.inverse_diagonal(par, &mut r.y);
        out.clear();
        out.extend(r.pos.iter().map(|&q| r.y[q]));
    }

    /// (R v)_j for a parameter vector v, into `out` (`pinned` order).
    pub fn rows_dot(&mut self, v: &[f64], out: &mut Vec<f64>) {
        let k = self.rows_for.len();
        let r = &mut self.r;
        r.y.clear();
        r.y.resize(k, 0.0);
        for (t, st) in self.plan.stages.iter().enumerate() {
            let kk = r.kt[t];
            if kk == 0 {
                continue;
            }
            let (gw, gb, ga) = st.params(v);
            r.pt.clear();
            r.pt.resize(st.out * kk, 0.0);
            // P = GW · S_t (out × K_t).
            matmul(
                view_mut(&mut r.pt, st.out, kk),
                Accum::Replace,
                MatRef::from_row_major_slice(gw, st.out, st.inp),
                view(&r.st[t], st.inp, kk),
                1.0,
                Par::Seq,
            );
            let ga = ga.unwrap_or(0.0);
            for q in 0..kk {
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
        }
        out.clear();
        out.extend((0..k).map(|j| r.y[r.pos[j]]));
    }

    /// out += Σ_j w_j ∇z_j (w in `pinned` order).
    pub fn add_rows_t(&mut self, w: &[f64], out: &mut [f64]) {
        let r = &mut self.r;
        for (t, st) in self.plan.stages.iter().enumerate() {
            let kk = r.kt[t];
            if kk == 0 {
                continue;
            }
            r.pt.clear();
            r.pt.extend_from_slice(&r.zt[t]);
            let mut slope = 0.0;
            for q in 0..kk {
                let wq = w[r.inv[q]];
                r.pt[q * st.out..(q + 1) * st.out]
                    .iter_mut()
                    .for_each(|v| *v *= wq);
                slope += wq * r.at[t][q];
            }
            let (gw, gb, ga) = st.params_mut(out);
            // GW (row-major out × in = column-major in × out) += S_t · (Z_t diag(w))ᵀ.
            matmul(
                MatMut::from_column_major_slice_mut(gw, st.inp, st.out),
                Accum::Add,
                view(&r.st[t], st.inp, kk),
                view(&r.pt, st.out, kk).transpose(),
                1.0,
                Par::Seq,
            );
            for pc in r.pt.chunks_exact(st.out) {
                for (g, v) in gb.iter_mut().zip(pc) {
                    *g += v;
                }
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
struct Rows {
    /// (stage, sample, unit) per pinned index j.
    q_place: Vec<(usize, usize, usize)>,
    /// j of internal position q, and q of j.
    inv: Vec<usize>,
    pos: Vec<usize>,
    /// Internal positions grouped by sample.
    gorder: Vec<usize>,
    /// Per stage: entries of stage ≥ t, Z_t, S_t, a_t.
    kt: Vec<usize>,
    zt: Vec<Vec<f64>>,
    st: Vec<Vec<f64>>,
    at: Vec<Vec<f64>>,
    hb: Vec<f64>,
    hb_next: Vec<f64>,
    m1: Vec<f64>,
    m2: Vec<f64>,
    pt: Vec<f64>,
    /// Sizes of the first stage's unit blocks (internal order), and the factorisation.
    block_sizes: Vec<usize>,
    fac: BorderedGram,
    y: Vec<f64>,
}
