//! The training engine: a compiled, allocation-free loss-gradient evaluator for the paper's
//! presets (`dnn`, `resnet`, `gcn`), generic over the float type (f32 or f64). The GD loop
//! ([`crate::train`]) drives it as a [`crate::oracle::GradientOracle`] ([`EngineOracle`]); the
//! engine knows nothing of the loop.
//!
//! The general path ([`crate::model::Model::loss_and_grad`]) walks boxed layers, allocates every
//! batch and tape on every call and computes cotangents nobody reads (the input's). The engine
//! compiles the same network into a flat list of affine [`Stage`]s — `z = W·src + b` followed by
//! σ, optionally with a residual skip or Kipf & Welling's propagation Â — and keeps every buffer
//! for the whole run, so a steady-state epoch allocates nothing of its own. Per epoch it does:
//!
//! - forward: one matrix product per stage, then one fused pass `z += b; h = σ(z) (+ skip)`;
//! - loss: one pass giving L and the output cotangent 2c·e;
//! - backward: per stage the weight cotangent Z̄·srcᵀ and, except for the first stage, the input
//!   cotangent Wᵀ·Z̄ (added in place for residual skips); one fused pass `Z̄ = H̄ ⊙ σ'(z)` that also
//!   sums the bias (and PReLU slope) cotangents.
//!
//! The n columns (samples) are split into parts (`Part`), each owning all of its buffers and its
//! own gradient contribution; rayon balances the parts over its threads (`mixing.rs`). How many
//! parts is a value fixed when the engine is built ([`Parts`]): by default two per thread of
//! the rayon pool ([`Parts::for_pool`], 4 on 2 threads), so that a thread descheduled on a
//! shared machine stalls at most a part, not its share of the epoch. DNN and ResNet never mix
//! samples, so an epoch is a single fork-join: every part runs the whole forward and backward
//! on its samples with single-threaded faer products and fused element-wise passes
//! (`passes.rs`), the weight cotangents written straight into θ's layout; then the parts'
//! contributions are summed in part order. The GCN joins at each propagation by Â, which reads
//! every part. When the global faer parallelism ([`crate::batch::par`]) is `Seq` — `reproduce`
//! packing small runs one per thread — the parts run one after another. The parts and the
//! chunks of partial sums depend on the number of parts only, never on which threads run them,
//! so for a given number of parts (hence a given pool size) results are bitwise the same
//! (tested).
//!
//! Buffers are features × samples in one of two [`Layout`]s: DNN and ResNet store them
//! sample-major (faer then tiles the samples of a part, 250 at n = 1000 on 2 threads, not a
//! 100-wide layer's features), the GCN feature-major (its propagation gathers whole samples).
//! The kink tracker sees the pieces in the general path's order either way. Sample-major with ReLU or leaky ReLU, σ'(z)
//! depends on the piece bit z > 0 alone: hidden stages then keep only their bits (packed by the
//! forward pass, 1/32 of z in f32), not z, and the backward pass reads those — the same
//! products, so the same gradient bit for bit (tested against an engine made to keep z).
//!
//! GCN: Â is symmetric-normalised and fixed, and the inputs X are fixed, so ÂX is computed once.
//! Later stages propagate whichever side of the dense layer is narrower: W(ÂH) when in ≤ out,
//! Â(WH) otherwise — the same function, different rounding.
//!
//! The engine computes exactly the gradient of the general path (tests: ~1e-12 relative in f64,
//! ~1e-4 in f32). NTK spectra always use the general path in f64.

mod csr;
mod kernels;
mod layout;
mod mixing;
mod oracle;
mod part;
mod parts;
mod passes;
mod plan;
mod profile;
mod real;
mod rows;
#[cfg(test)]
mod tests;

pub use layout::Layout;
pub(crate) use layout::{view, view_mut};
pub use oracle::{engine_for, engine_in_parts, step, EngineOracle};
pub(crate) use part::{Part, StageBits};
pub use parts::Parts;
pub use plan::{Plan, Prop, Stage};
pub(crate) use profile::Clock;
pub use profile::PHASES;
pub use real::{convert, Real};

use crate::activation::Activation;
use crate::batch::Batch;
use crate::graph::SparseMatrix;
use crate::loss::LossKind;
pub(crate) use csr::Csr;
use kernels::ActKind;

/// A compiled network with all its buffers, for one data set (inputs, targets, loss).
pub struct Engine<T: Real> {
    plan: Plan,
    layout: Layout,
    act: ActKind,
    n: usize,
    loss: LossKind,
    a: Option<Csr<T>>,
    a_t: Option<Csr<T>>,
    /// The column parts ([`Parts`] consecutive ranges of samples), each owning all of its
    /// buffers.
    parts: Vec<Part<T>>,
    /// Room for one buffer per part: a propagation moves every part's source buffer here for
    /// its join (`mixing.rs`), so the steady state allocates nothing.
    taken: Vec<Vec<T>>,
    kink_points: Vec<f64>,
    /// ‖∇L‖² of the last [`Self::loss_and_grad`], in f64.
    grad_norm_sq: f64,
    /// Whether forward passes record the pieces' bits (σ with one kink, kink tracking on).
    record_pieces: bool,
    /// σ' from the pieces' bits ([`ActKind::below_slope`], sample-major layout): hidden stages
    /// keep no z (the products write a scratch buffer), forward passes always record the bits,
    /// and the backward pass reads those instead of z — a part's 100 KB z per stage neither
    /// written back to memory nor read again.
    sigma_bits: bool,
    /// Seconds per [`PHASES`] entry, accumulated when profiling is on.
    profile: Option<[f64; PHASES.len()]>,
}

impl<T: Real> Engine<T> {
    /// Builds the engine for `plan` on inputs `x` (d × n) and targets `y` (m × n), in the
    /// plan's preferred [`Layout`], cut for the current rayon pool ([`Parts::for_pool`]).
    /// `a_hat` is required when the plan propagates (GCN).
    pub fn new(
        plan: Plan,
        activation: &Activation,
        x: &Batch,
        y: &Batch,
        loss: LossKind,
        a_hat: Option<&SparseMatrix>,
    ) -> Self {
        let layout = Layout::preferred(&plan);
        Self::with_layout(plan, activation, x, y, loss, a_hat, layout)
    }

    /// [`Self::new`] in a given layout (Samples only for plans that never mix samples).
    pub fn with_layout(
        plan: Plan,
        activation: &Activation,
        x: &Batch,
        y: &Batch,
        loss: LossKind,
        a_hat: Option<&SparseMatrix>,
        layout: Layout,
    ) -> Self {
        let parts = Parts::for_pool();
        Self::with_parts(plan, activation, x, y, loss, a_hat, layout, parts)
    }

    /// [`Self::with_layout`] with the samples cut into the given parts.
    #[allow(clippy::too_many_arguments)]
    pub fn with_parts(
        plan: Plan,
        activation: &Activation,
        x: &Batch,
        y: &Batch,
        loss: LossKind,
        a_hat: Option<&SparseMatrix>,
        layout: Layout,
        parts: Parts,
    ) -> Self {
        assert!(
            layout == Layout::Features || Layout::preferred(&plan) == Layout::Samples,
            "engine: graph propagation needs the feature-major layout"
        );
        let sample_major = layout == Layout::Samples;
        let n = x.n();
        assert_eq!(x.features(), plan.in_dim(), "engine: input width");
        assert_eq!(y.features(), plan.out_dim(), "engine: output width");
        assert_eq!(y.n(), n, "engine: one target per sample");
        let needs_graph = plan.stages.iter().any(|s| s.prop != Prop::None);
        let (a, a_t) = match (needs_graph, a_hat) {
            (true, Some(m)) => {
                assert_eq!(m.n(), n, "engine: Â must have one node per sample");
                (
                    Some(Csr::from_sparse(m, false)),
                    Some(Csr::from_sparse(m, true)),
                )
            }
            (true, None) => panic!("engine: the plan propagates but no Â was given"),
            _ => (None, None),
        };
        let mut xs: Vec<T> = convert(x.as_slice());
        if plan.stages[0].prop == Prop::Before {
            // Â X is fixed for the whole run.
            let mut ax = vec![T::default(); xs.len()];
            // All of X as a single part: one gather over all rows.
            let whole = std::slice::from_ref(&xs);
            a.as_ref()
                .unwrap()
                .propagate(whole, n, &mut ax, x.features(), 0);
            xs = ax;
        }
        let ys: Vec<T> = convert(y.as_slice());
        let count = parts.count();
        let chunk_cols = kernels::chunk_cols(n, count);
        let act = ActKind::new(activation);
        let sigma_bits = sample_major && act.below_slope().is_some() && activation.kinks() == [0.0];
        let parts = (0..count)
            .map(|k| {
                let (c0, c1) = kernels::part_cols(n, count, k);
                Part::new(
                    &plan,
                    &xs,
                    &ys,
                    (c0, c1 - c0),
                    chunk_cols,
                    sample_major,
                    !sigma_bits,
                )
            })
            .collect();
        Self {
            act,
            sigma_bits,
            kink_points: activation.kinks(),
            record_pieces: false,
            grad_norm_sq: 0.0,
            n,
            loss,
            a,
            a_t,
            parts,
            taken: Vec::with_capacity(count),
            profile: None,
            plan,
            layout,
        }
    }

    /// Keeps every stage's z and computes σ' from it even where the bits would do (tests compare
    /// the two routes; they must agree bit for bit).
    #[cfg(test)]
    pub(crate) fn keep_z(&mut self) {
        if !self.sigma_bits {
            return;
        }
        self.sigma_bits = false;
        for part in &mut self.parts {
            for (z, st) in part.z.iter_mut().zip(&self.plan.stages) {
                z.resize(st.out * part.cols, T::default());
            }
        }
    }

    /// Starts (or restarts) accumulating per-phase times.
    pub fn enable_profile(&mut self) {
        self.profile = Some([0.0; PHASES.len()]);
    }
    /// Seconds spent per phase ([`PHASES`]) since [`Self::enable_profile`].
    pub fn profile(&self) -> Option<[f64; PHASES.len()]> {
        self.profile
    }
    fn charge(&mut self, clock: &Clock) {
        if let Some(p) = self.profile.as_mut() {
            for (a, b) in p.iter_mut().zip(clock.acc) {
                *a += b;
            }
        }
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }
    pub fn layout(&self) -> Layout {
        self.layout
    }
    pub fn p(&self) -> usize {
        self.plan.num_params()
    }
    /// Floating-point work of one epoch by the usual count 6·n·p (forward, input and weight
    /// cotangents of every parameter).
    pub fn nominal_flops(&self) -> f64 {
        6.0 * self.n as f64 * self.p() as f64
    }
    /// The network's outputs u (m × n) after [`Self::forward`] (and after
    /// [`Self::loss_and_grad`], which leaves them in place).
    pub fn outputs(&self) -> impl Iterator<Item = T> + '_ {
        let (m, sample_major) = (self.plan.out_dim(), self.layout == Layout::Samples);
        self.parts.iter().flat_map(move |part| {
            let (u, cols) = (part.z.last().unwrap(), part.cols);
            (0..m * cols).map(move |e| {
                if sample_major {
                    u[e % m * cols + e / m]
                } else {
                    u[e]
                }
            })
        })
    }

    /// The piece of σ every pre-activation sits in, in the order of the general path's
    /// `visit_pre_activations` (layer by layer, sample-major), appended to `out`.
    /// The (stage, part) blocks are filled in parallel, each into its own slice of `out`.
    pub fn pieces(&self, out: &mut Vec<u16>) {
        use rayon::prelude::*;
        let ns = self.plan.stages.len();
        let start = out.len();
        let total: usize = self.piece_segments().iter().sum();
        out.resize(start + total, 0);
        let mut rest = &mut out[start..];
        let mut jobs = Vec::with_capacity((ns - 1) * self.parts.len());
        for s in 0..ns - 1 {
            for part in &self.parts {
                let (head, tail) = rest.split_at_mut(self.plan.stages[s].out * part.cols);
                jobs.push((part, s, head));
                rest = tail;
            }
        }
        let sample_major = self.layout == Layout::Samples;
        jobs.into_par_iter().for_each(|(part, s, dst)| {
            if self.sigma_bits {
                // The bits (z > 0, σ's single kink) are the pieces.
                let fm = &part.bits[s].fm;
                for (e, d) in dst.iter_mut().enumerate() {
                    *d = (fm[e / 64] >> (e % 64) & 1) as u16;
                }
            } else {
                let feats = self.plan.stages[s].out;
                kernels::pieces_into(&part.z[s], &self.kink_points, dst, feats, sample_major)
            }
        });
    }
    /// σ's kink point when it has exactly one (the tracker then follows pieces as bits through
    /// [`Self::piece_segments`] and [`Self::piece_bits`]).
    pub fn single_kink(&self) -> Option<f64> {
        match self.kink_points[..] {
            [k] => Some(k),
            _ => None,
        }
    }
    /// Entry counts of the (stage, part) blocks of pre-activations, in the order of
    /// [`Self::pieces`].
    pub fn piece_segments(&self) -> Vec<usize> {
        let ns = self.plan.stages.len();
        (0..ns - 1)
            .flat_map(|s| {
                let out = self.plan.stages[s].out;
                self.parts.iter().map(move |part| out * part.cols)
            })
            .collect()
    }
    /// Makes forward passes record the pieces' bits for [`Self::piece_bits`] (σ with one kink;
    /// no effect otherwise). Costs one pass over each stage's z while it is in cache.
    pub fn set_record_pieces(&mut self, on: bool) {
        self.record_pieces = on;
    }
    /// The kink forward passes record the pieces' bits at, if they do: always when σ' is read
    /// off the bits, else when asked to ([`Self::set_record_pieces`]).
    fn recorded_kink(&self) -> Option<f64> {
        if self.sigma_bits {
            return Some(0.0);
        }
        self.single_kink().filter(|_| self.record_pieces)
    }
    /// For σ with one kink: the pieces of the last forward pass as bits in `layout` (built from
    /// [`Self::piece_segments`]): copied from the bits the pass recorded (see
    /// [`Self::set_record_pieces`]), else computed from z, the blocks in parallel.
    pub fn piece_bits(&self, layout: &crate::kinks::BitLayout, words: &mut [u64]) {
        use rayon::prelude::*;
        let Some(kink) = self.single_kink() else {
            return;
        };
        let ns = self.plan.stages.len();
        let blocks = (0..ns - 1).flat_map(|s| self.parts.iter().map(move |part| (part, s)));
        let jobs: Vec<_> = blocks.zip(layout.split_mut(words)).collect();
        if self.recorded_kink().is_some() {
            for ((part, s), dst) in jobs {
                dst.copy_from_slice(&part.bits[s].fm);
            }
        } else {
            let sample_major = self.layout == Layout::Samples;
            jobs.into_par_iter().for_each(|((part, s), dst)| {
                let feats = self.plan.stages[s].out;
                kernels::piece_bits_into(&part.z[s], kink, dst, feats, sample_major)
            });
        }
    }
    /// ‖∇L‖₂ of the last [`Self::loss_and_grad`] (summed in f64 while the gradient is formed).
    pub fn grad_norm(&self) -> f64 {
        self.grad_norm_sq.sqrt()
    }
    /// Number of pre-activations the kink tracker follows.
    pub fn tracked(&self) -> usize {
        let ns = self.plan.stages.len();
        self.n
            * self.plan.stages[..ns - 1]
                .iter()
                .map(|s| s.out)
                .sum::<usize>()
    }
}
