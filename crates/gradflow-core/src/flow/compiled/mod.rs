//! The kink-aware field on a compiled network (the engine's [`Plan`] of the dnn and resnet
//! presets), f64, allocation-free in the steady state: the fast route of [`super::system`].
//!
//! **Gradient.** The samples are cut into two parts with their own buffers; each part runs the
//! forward pass (one faer product per stage, then σ on the frozen piece of every entry, or the
//! pinned entry's chosen slope) and the reverse pass on its own thread, and the two gradient
//! contributions are summed in part order (so results do not depend on which threads ran them).
//! The reverse pass records the cotangent at σ(z_j) of every pinned entry j. A plan that
//! propagates over the graph (gcn: Â before or after a stage's W, Âᵀ in the reverse pass) mixes
//! samples, so its passes run as one part holding every sample, on the calling thread (the
//! second part is empty); ÂX is formed once.
//!
//! The structured rows below assume a plan that does not mix samples. For the gcn, whose rows
//! have stage blocks summed over the nodes a cotangent reaches, `graph_rows.rs` gives them as
//! dense p-vectors by reverse passes restricted to those nodes, on the buffers of the last
//! gradient evaluation; the system solves with them as on the layer path.
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
//! formed (lower triangles only) and factorised afresh by a Cholesky factorisation that drops
//! the directions of pinned rows depending on the others (their constraint is implied by the
//! others, their multiplier is 0). First-layer pins have rows orthogonal across units, so G is
//! block-diagonal there and bordered by the deeper pins' rows: `gram_bordered.rs` eliminates
//! the blocks first and factorises only the dense Schur complement (`gram.rs`). Those rows do
//! not depend on θ: their blocks' factor and the θ-independent factor of L_CA are kept per
//! pinned set (`first_layer.rs`), so an evaluation gathers L_CA instead of forming G_CA and
//! solving with the blocks.
//!
//! Files: `part.rs` (a part's passes), `rows.rs` (rows, G, solves), `first_layer.rs` (the
//! first layer's kept parts), `graph_rows.rs` (dense rows of plans that mix samples),
//! `tests.rs` (against the general factorisation).

mod first_layer;
mod graph_rows;
mod part;
mod rows;
#[cfg(test)]
mod tests;

use crate::activation::Activation;
use crate::engine::{Csr, Plan, Prop};
use crate::graph::SparseMatrix;
use crate::loss::LossKind;
use faer::Par;
use part::{Ctx, Part};
use rows::Rows;

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

/// The compiled kink-aware evaluator (see the module docs).
pub(super) struct Compiled {
    plan: Plan,
    act: Activation,
    /// The inputs (d × n); ÂX when the first stage propagates before W.
    x: Vec<f64>,
    /// Â and Âᵀ when the plan propagates (the samples are then one part).
    a: Option<Csr<f64>>,
    a_t: Option<Csr<f64>>,
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
    /// Buffers of the rows of plans that mix samples (`graph_rows.rs`).
    g: graph_rows::Buffers,
}

/// The result of one compiled gradient evaluation.
pub(super) struct Evaluated {
    pub loss: f64,
}

impl Compiled {
    /// The compiled evaluator for `plan` on inputs x (d × n) and targets y (m × n); `a_hat` is
    /// the graph's Â for a plan that propagates (gcn). None when n = 0, or the plan propagates
    /// without an Â of n nodes, or a propagating stage has a residual skip.
    pub fn new(
        plan: Plan,
        act: Activation,
        x: &[f64],
        y: &[f64],
        n: usize,
        loss: LossKind,
        a_hat: Option<&SparseMatrix>,
    ) -> Option<Self> {
        let mixes = plan.stages.iter().any(|s| s.prop != Prop::None);
        if n == 0
            || plan
                .stages
                .iter()
                .any(|s| s.prop != Prop::None && s.residual)
        {
            return None;
        }
        let (a, a_t) = match (mixes, a_hat) {
            (false, _) => (None, None),
            (true, Some(m)) if m.n() == n => (
                Some(Csr::from_sparse(m, false)),
                Some(Csr::from_sparse(m, true)),
            ),
            (true, _) => return None,
        };
        let mut x = x.to_vec();
        if let (Some(a), Prop::Before) = (a.as_ref(), plan.stages[0].prop) {
            // ÂX is fixed for the whole solve.
            let mut ax = vec![0.0; x.len()];
            a.propagate(std::slice::from_ref(&x), n, &mut ax, plan.in_dim(), 0);
            x = ax;
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
        // Propagating plans: every sample in the first part, the second empty.
        let mid = if mixes { n } else { n.div_ceil(2) };
        let parts = [Part::new(&plan, 0, mid, p), Part::new(&plan, mid, n, p)];
        let m = plan.out_dim();
        Some(Self {
            slope: vec![0.0; plan.stages.len()],
            c: loss.c(n, m),
            plan,
            act,
            x,
            a,
            a_t,
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
            g: Default::default(),
        })
    }

    /// True when the plan propagates over the graph (gcn): the samples are one part, and the
    /// structured rows ([`Self::rows`]) do not apply.
    pub fn mixes_samples(&self) -> bool {
        self.a.is_some()
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

    /// PReLU's slope at the last forward pass of every stage with σ, in entry order (0 for
    /// other activations): what [`Self::slope_of_entry`] reads until the next forward pass.
    pub fn remembered_slopes(&self) -> impl Iterator<Item = f64> + '_ {
        let stages = self.plan.stages.iter().zip(&self.slope);
        stages.filter(|(st, _)| st.act).map(|(_, &a)| a)
    }

    /// Sets the slopes [`Self::remembered_slopes`] returns (one per stage with σ, in entry
    /// order), as if the last forward pass had seen them (a resumed solve).
    pub fn set_remembered_slopes(&mut self, slopes: &[f64]) {
        let stages = self.plan.stages.iter().zip(self.slope.iter_mut());
        for ((_, a), &s) in stages.filter(|(st, _)| st.act).zip(slopes) {
            *a = s;
        }
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
        // The parts are taken out while the context borrows the rest.
        let mut parts = std::mem::take(&mut self.parts);
        let cx = self.ctx(theta, pieces, pinned);
        let work = |part: &mut Part| {
            part.forward(&cx);
            if grad {
                part.backward(&cx);
            }
        };
        let [p0, p1] = &mut parts;
        if p1.cols() == 0 || matches!(crate::batch::par(), Par::Seq) {
            work(p0);
            work(p1);
        } else {
            rayon::join(|| work(p0), || work(p1));
        }
        self.parts = parts;
    }

    /// What a pass reads (every field but the parts and the row buffers).
    fn ctx<'a>(&'a self, theta: &'a [f64], pieces: &'a [u16], pinned: &'a [usize]) -> Ctx<'a> {
        Ctx {
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
            a: self.a.as_ref(),
            a_t: self.a_t.as_ref(),
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
}
