//! The engine's per-part passes: everything one column part ([`Part`]) does on one thread — a
//! stage's forward product and fused bias + σ, the loss and output cotangent, a stage's weight
//! cotangent, input cotangent and fused σ' + bias/slope sums — and, for plans that never mix
//! samples (DNN, ResNet), a whole epoch ([`Part::forward_on`]). Such an epoch is one fork-join
//! over the parts (`mixing.rs`): each part runs the full forward and backward on its own
//! samples, writing its own gradient contribution (`Part::g`); the contributions are summed in
//! a fixed order after the join. Plans that propagate over the graph (GCN) run the same code
//! between propagations, one fork-join per Â.
//!
//! Weight cotangents S̄·srcᵀ are computed per part (a sum over its own samples) straight into
//! θ's row-major layout: the product src·S̄ᵀ with a column-major destination. (With 250-column
//! parts faer runs it as fast as or faster than S̄·srcᵀ into a column-major scratch, the
//! earlier route, which also needed a transposition; on 500 columns it was half as fast for
//! the 500-wide first layers.)

use super::kernels::{self, ActKind};
use super::rows::Track;
use super::{view, view_mut, Clock, Part, Plan, Prop, Real, Stage, StageBits};
use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};

/// What every per-part step reads.
pub(super) struct Ctx<'a, T> {
    pub plan: &'a Plan,
    pub act: &'a ActKind,
    pub theta: &'a [T],
    /// Columns per chunk of partial sums ([`kernels::chunk_cols`] of the whole n).
    pub chunk_cols: usize,
    pub on: bool,
    /// σ's single kink point when the pieces are being recorded for the kink tracker: every
    /// tail then also writes its stage's bits (z > kink) while z is still in cache.
    pub record_kink: Option<f64>,
    /// The buffers are sample-major ([`super::Layout::Samples`]).
    pub sample_major: bool,
    /// σ' is read off the pieces' bits: hidden stages' z go to the part's scratch, and the
    /// bits are always recorded (`record_kink` is then Some(0)).
    pub sigma_bits: bool,
}

/// dst (out × cols) (=|+=) W (row-major out × inp) · src (inp × cols), on this thread; dst and
/// src sample-major when `sample_major`.
pub(super) fn mm<T: Real>(
    dst: &mut [T],
    w: &[T],
    src: &[T],
    out: usize,
    inp: usize,
    acc: Accum,
    sample_major: bool,
) {
    let cols = dst.len() / out.max(1);
    matmul(
        view_mut(dst, out, cols, sample_major),
        acc,
        MatRef::from_row_major_slice(w, out, inp),
        view(src, inp, cols, sample_major),
        T::one(),
        Par::Seq,
    );
}

/// dst (inp × cols) (=|+=) Wᵀ · g (out × cols), on this thread; dst and g sample-major when
/// `sample_major`.
fn mm_t<T: Real>(
    dst: &mut [T],
    w: &[T],
    g: &[T],
    out: usize,
    inp: usize,
    acc: Accum,
    sample_major: bool,
) {
    let cols = dst.len() / inp.max(1);
    matmul(
        view_mut(dst, inp, cols, sample_major),
        acc,
        MatRef::from_row_major_slice(w, out, inp).transpose(),
        view(g, out, cols, sample_major),
        T::one(),
        Par::Seq,
    );
}

/// gW (θ's row-major out × inp) = S̄ (out × cols) · srcᵀ, summed over this part's columns, on
/// this thread. θ's row-major out × inp is a column-major inp × out, so the product src · S̄ᵀ
/// lands there directly (S̄ and src sample-major when `sample_major`).
#[allow(clippy::too_many_arguments)]
fn weight_cot<T: Real>(
    gw: &mut [T],
    sbar: &[T],
    src: &[T],
    out: usize,
    inp: usize,
    cols: usize,
    sample_major: bool,
) {
    if cols == 0 {
        // An empty part (small n): no samples, no contribution.
        gw.iter_mut().for_each(|v| *v = T::default());
        return;
    }
    matmul(
        MatMut::from_column_major_slice_mut(gw, inp, out),
        Accum::Replace,
        view(src, inp, cols, sample_major),
        view(sbar, out, cols, sample_major).transpose(),
        T::one(),
        Par::Seq,
    );
}

/// Stage `st`'s element-wise tail: z += b, then h = σ(z) (+ skip) unless it is the last stage
/// (and the pieces' bits, when recorded).
pub(super) fn tail<T: Real>(
    cx: &Ctx<'_, T>,
    st: &Stage,
    z: &mut [T],
    h: Option<&mut Vec<T>>,
    skip: &[T],
    bits: Option<&mut StageBits>,
) {
    let (_, b, slope) = st.params(cx.theta);
    match h {
        None => kernels::add_bias(z, b, st.out, cx.sample_major),
        Some(h) => {
            let skip = st.residual.then_some(skip);
            let slope = slope.unwrap_or_default();
            let (act, out, sample_major) = (cx.act, st.out, cx.sample_major);
            match (cx.record_kink, bits) {
                // Sample-major: the bits in the same pass, block by block.
                (Some(kink), Some(bits)) if sample_major => {
                    let track = Some(Track {
                        kink,
                        sample_major: &mut bits.sample_major,
                        fm: &mut bits.fm,
                    });
                    kernels::bias_act_forward(act, slope, b, z, h, skip, out, sample_major, track);
                }
                (Some(kink), Some(bits)) => {
                    kernels::bias_act_forward(act, slope, b, z, h, skip, out, sample_major, None);
                    kernels::piece_bits_into(z, kink, &mut bits.fm, out, false);
                }
                _ => kernels::bias_act_forward(act, slope, b, z, h, skip, out, sample_major, None),
            }
        }
    }
}

impl<T: Real> Part<T> {
    /// Stage s's forward on this part, for a stage that reads no other sample (no Â, or Â
    /// before the first stage, where x already holds ÂX).
    pub(super) fn forward_local(&mut self, cx: &Ctx<'_, T>, s: usize, c: &mut Clock) {
        let st = &cx.plan.stages[s];
        let (w, _, _) = st.params(cx.theta);
        let (h_prev, h_rest) = self.h.split_at_mut(s);
        let src: &[T] = if s == 0 { &self.x } else { &h_prev[s - 1] };
        let hidden = s + 1 < cx.plan.stages.len();
        let z = if cx.sigma_bits && hidden {
            &mut self.zs[..st.out * self.cols]
        } else {
            &mut self.z[s][..]
        };
        mm(z, w, src, st.out, st.inp, Accum::Replace, cx.sample_major);
        c.lap(0);
        tail(cx, st, z, h_rest.first_mut(), src, self.bits.get_mut(s));
        c.lap(1);
    }

    /// This part's share of L (in `self.loss`), its output cotangent (into z_bar) and the last
    /// stage's bias cotangent over its columns (into `self.g`).
    pub(super) fn loss_local(&mut self, cx: &Ctx<'_, T>, c_loss: f64, c: &mut Clock) {
        let m = cx.plan.out_dim();
        let u = self.z.last().unwrap();
        self.loss = kernels::loss_cotangent(u, &self.y, &mut self.z_bar, c_loss);
        c.lap(3);
        let (_, gb, _) = cx.plan.stages.last().unwrap().params_mut(&mut self.g);
        let z_bar = &self.z_bar[..m * self.cols];
        kernels::row_sums(
            z_bar,
            m,
            cx.chunk_cols,
            &mut self.partial,
            gb,
            cx.sample_major,
        );
        c.lap(6);
    }

    /// Stage s's weight cotangent over this part's columns into `self.g`, from S̄ in z_bar (or in p_bar
    /// when `sbar_in_pb`: Âᵀ Z̄ for a stage propagating after W).
    pub(super) fn weight_local(
        &mut self,
        cx: &Ctx<'_, T>,
        s: usize,
        sbar_in_pb: bool,
        c: &mut Clock,
    ) {
        let st = &cx.plan.stages[s];
        let (inp, out, cols) = (st.inp, st.out, self.cols);
        let src: &[T] = match (s, st.prop) {
            (0, _) => &self.x,
            (_, Prop::Before) => &self.propagated[s],
            _ => &self.h[s - 1],
        };
        let sbar = if sbar_in_pb { &self.p_bar } else { &self.z_bar };
        let (gw, _, _) = st.params_mut(&mut self.g);
        weight_cot(
            gw,
            &sbar[..out * cols],
            src,
            out,
            inp,
            cols,
            cx.sample_major,
        );
        c.lap(4);
    }

    /// Stage s's input cotangent Wᵀ S̄ over this part: S̄ from z_bar (or p_bar when `sbar_in_pb`),
    /// into h_bar (or into p_bar when `into_pb`, for Â before W); added to h_bar for a residual stage,
    /// whose h_bar holds the cotangent of the stage's output already.
    pub(super) fn input_local(
        &mut self,
        cx: &Ctx<'_, T>,
        s: usize,
        sbar_in_pb: bool,
        into_pb: bool,
        c: &mut Clock,
    ) {
        let st = &cx.plan.stages[s];
        let (inp, out, cols) = (st.inp, st.out, self.cols);
        let (w, _, _) = st.params(cx.theta);
        let acc = if st.residual {
            Accum::Add
        } else {
            Accum::Replace
        };
        let (sbar, dst) = match (sbar_in_pb, into_pb) {
            (false, false) => (&self.z_bar, &mut self.h_bar),
            (true, false) => (&self.p_bar, &mut self.h_bar),
            (false, true) => (&self.z_bar, &mut self.p_bar),
            (true, true) => unreachable!("engine: S̄ and Wᵀ S̄ in the same buffer"),
        };
        mm_t(
            &mut dst[..inp * cols],
            w,
            &sbar[..out * cols],
            out,
            inp,
            acc,
            cx.sample_major,
        );
        c.lap(5);
    }

    /// Z̄ of stage s − 1 = H̄ (in h_bar) ⊙ σ'(z), into z_bar (the previous Z̄ moves to z_bar_next), and the
    /// stage's bias (and PReLU slope) cotangents over this part's chunks into `self.g`.
    pub(super) fn act_back_local(&mut self, cx: &Ctx<'_, T>, s: usize, c: &mut Clock) {
        let prev = &cx.plan.stages[s - 1];
        let (_, _, slope) = prev.params(cx.theta);
        let (w, cols) = (prev.out, self.cols);
        match cx.act.below_slope().filter(|_| cx.sigma_bits) {
            Some(lo) => kernels::act_backward_bits(
                T::from_f64(lo),
                &self.bits[s - 1].sample_major,
                &self.h_bar[..w * cols],
                &mut self.z_bar_next[..w * cols],
                w,
                cx.chunk_cols,
                &mut self.partial,
            ),
            None => kernels::act_backward(
                cx.act,
                slope.unwrap_or_default(),
                &self.z[s - 1],
                &self.h_bar[..w * cols],
                &mut self.z_bar_next[..w * cols],
                w,
                cx.chunk_cols,
                &mut self.partial,
                cx.sample_major,
            ),
        }
        let nch = cols.div_ceil(cx.chunk_cols);
        let (_, gb, gslope) = prev.params_mut(&mut self.g);
        kernels::combine(
            &self.partial[..nch * (w + 1)],
            w + 1,
            nch,
            gb,
            gslope.filter(|_| prev.prelu),
        );
        std::mem::swap(&mut self.z_bar, &mut self.z_bar_next);
        c.lap(6);
    }

    /// Stage s's whole backward on this part, for a stage that mixes no samples.
    pub(super) fn backward_local(&mut self, cx: &Ctx<'_, T>, s: usize, c: &mut Clock) {
        self.weight_local(cx, s, false, c);
        if s > 0 {
            self.input_local(cx, s, false, false, c);
            self.act_back_local(cx, s, c);
        }
    }

    /// The forward pass on this part from stage `from` up to the next stage that needs every
    /// part (Â before W: stop; Â after W: do W·src, then stop). When it reaches the end, with
    /// `loss`: the loss, the output cotangent and the backward pass down to the first
    /// propagation. For plans that never mix samples this is the whole epoch.
    pub(super) fn forward_on(
        &mut self,
        cx: &Ctx<'_, T>,
        from: usize,
        loss: Option<f64>,
        c: &mut Clock,
    ) {
        let ns = cx.plan.stages.len();
        for t in from..ns {
            let st = &cx.plan.stages[t];
            match st.prop {
                Prop::After => {
                    let (w, _, _) = st.params(cx.theta);
                    let src: &[T] = if t == 0 { &self.x } else { &self.h[t - 1] };
                    mm(
                        &mut self.propagated[t],
                        w,
                        src,
                        st.out,
                        st.inp,
                        Accum::Replace,
                        cx.sample_major,
                    );
                    c.lap(0);
                    return;
                }
                Prop::Before if t > 0 => return,
                _ => self.forward_local(cx, t, c),
            }
        }
        if let Some(c_loss) = loss {
            self.loss_local(cx, c_loss, c);
            self.backward_on(cx, ns, c);
        }
    }

    /// The backward pass on this part through the stages below `upto`, down to the next
    /// propagation (Â after W: stop; Â before W: the weight cotangent and Wᵀ Z̄ into p_bar, then
    /// stop).
    pub(super) fn backward_on(&mut self, cx: &Ctx<'_, T>, upto: usize, c: &mut Clock) {
        for t in (0..upto).rev() {
            match cx.plan.stages[t].prop {
                Prop::After => return,
                Prop::Before if t > 0 => {
                    self.weight_local(cx, t, false, c);
                    self.input_local(cx, t, false, true, c);
                    return;
                }
                _ => self.backward_local(cx, t, c),
            }
        }
    }
}
