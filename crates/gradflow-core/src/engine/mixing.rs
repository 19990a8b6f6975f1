//! The epoch's orchestration over the column parts: [`Engine::loss_and_grad`] and
//! [`Engine::forward`]. Each part runs as far as it can on its own samples (`passes.rs`); a
//! fork-join ends only where Â needs a complete batch. Plans that never mix samples (DNN,
//! ResNet) thus run a whole epoch in one fork-join; the GCN in one per propagation (5 for the
//! paper's [200, 200]). Each propagation reads every part's source (taken out of the parts for
//! the join, so that each part stays otherwise mutable) and writes its own part's columns, then
//! continues locally up to the next. Afterwards the parts' gradient contributions are summed in
//! part order, so for a given number of parts results do not depend on the thread count or on
//! which core ran which part.

use super::csr::Csr;
use super::kernels::{self, both, run_parts};
use super::passes::{mm, tail, Ctx};
use super::{Clock, Engine, Part, Prop, Real};
use faer::Accum;
use std::mem::take;

/// grad[off..] (`grad` being that range) = Σ_k parts[k].g in part order, the range cut into
/// `pieces` consecutive ranges summed in parallel (halved recursively); returns ‖grad‖² (in f64,
/// the ranges' sums added pairwise as they were halved). The cut, hence the rounding of the
/// norm, depends on `pieces` only.
fn sum_parts<T: Real>(grad: &mut [T], off: usize, parts: &[Part<T>], pieces: usize) -> f64 {
    if pieces <= 1 {
        return kernels::sum_into(grad, parts, off);
    }
    let left = pieces / 2;
    let mid = grad.len() * left / pieces;
    let (a, b) = grad.split_at_mut(mid);
    let (sa, sb) = both(
        || sum_parts(a, off, parts, left),
        || sum_parts(b, off + mid, parts, pieces - left),
    );
    sa + sb
}

impl<T: Real> Engine<T> {
    /// The forward pass at θ; the outputs are then in [`Self::outputs`].
    pub fn forward(&mut self, theta: &[T]) {
        assert_eq!(theta.len(), self.p(), "engine: θ has the wrong length");
        let mut clock = Clock::new(self.profile.is_some());
        let cx = Ctx {
            plan: &self.plan,
            act: &self.act,
            theta,
            chunk_cols: kernels::chunk_cols(self.n, self.parts.len()),
            on: clock.on,
            record_kink: self.recorded_kink(),
            sample_major: self.layout == super::Layout::Samples,
            sigma_bits: self.sigma_bits,
        };
        let (parts, taken) = (&mut self.parts, &mut self.taken);
        forward_all(&cx, parts, taken, self.a.as_ref(), None, &mut clock);
        self.charge(&clock);
    }

    /// L(θ) and ∇L(θ) into `grad` (overwritten). The loss is accumulated in f64.
    ///
    /// When the parts run in parallel the whole evaluation runs inside rayon's pool (one
    /// hand-over per epoch), so the joins are cheap worker-to-worker ones rather than a wake-up
    /// of the pool from outside each time.
    pub fn loss_and_grad(&mut self, theta: &[T], grad: &mut [T]) -> f64 {
        if kernels::parallel() && rayon::current_thread_index().is_none() {
            let mut loss = 0.0;
            rayon::scope(|_| loss = self.loss_and_grad_here(theta, grad));
            loss
        } else {
            self.loss_and_grad_here(theta, grad)
        }
    }

    fn loss_and_grad_here(&mut self, theta: &[T], grad: &mut [T]) -> f64 {
        assert_eq!(theta.len(), self.p(), "engine: θ has the wrong length");
        assert_eq!(
            grad.len(),
            self.p(),
            "engine: gradient has the wrong length"
        );
        let mut clock = Clock::new(self.profile.is_some());
        let c_loss = self.loss.c(self.n, self.plan.out_dim());
        let cx = Ctx {
            plan: &self.plan,
            act: &self.act,
            theta,
            chunk_cols: kernels::chunk_cols(self.n, self.parts.len()),
            on: clock.on,
            record_kink: self.recorded_kink(),
            sample_major: self.layout == super::Layout::Samples,
            sigma_bits: self.sigma_bits,
        };
        let (parts, taken) = (&mut self.parts, &mut self.taken);
        forward_all(&cx, parts, taken, self.a.as_ref(), Some(c_loss), &mut clock);
        backward_all(&cx, parts, taken, self.a_t.as_ref(), &mut clock);
        // Two parts per thread the engine was cut for: the sum in one range per such thread.
        let pieces = (self.parts.len() / 2).max(1);
        self.grad_norm_sq = sum_parts(grad, 0, &self.parts, pieces);
        clock.lap(7);
        self.charge(&clock);
        self.parts.iter().map(|part| part.loss).sum()
    }
}

/// The forward pass on every part: one fork-join up to the first propagation, then one per
/// propagation, each continuing locally up to the next ([`Part::forward_on`]). With `loss`, the
/// last join also computes the loss and starts the backward pass. `taken` (empty, with room for
/// a buffer per part) holds the buffers a propagation reads from every part during its join.
fn forward_all<T: Real>(
    cx: &Ctx<'_, T>,
    parts: &mut [Part<T>],
    taken: &mut Vec<Vec<T>>,
    a: Option<&Csr<T>>,
    loss: Option<f64>,
    clock: &mut Clock,
) {
    let on = cx.on;
    let part_width = kernels::CHUNKS_PER_PART * cx.chunk_cols;
    let c = run_parts(parts, on, &|part| {
        let mut c = Clock::new(on);
        part.forward_on(cx, 0, loss, &mut c);
        c
    });
    clock.absorb(&c);
    for (s, st) in cx.plan.stages.iter().enumerate() {
        let (w, _, _) = st.params(cx.theta);
        let (inp, out) = (st.inp, st.out);
        match st.prop {
            Prop::Before if s > 0 => {
                // p = Â h (every part's h[s − 1], taken out for the join), z = W p, the tail.
                taken.extend(parts.iter_mut().map(|part| take(&mut part.h[s - 1])));
                let src = &taken[..];
                let a = a.unwrap();
                let c = run_parts(parts, on, &|part| {
                    let mut c = Clock::new(on);
                    a.propagate(src, part_width, &mut part.propagated[s], inp, part.c0);
                    c.lap(2);
                    mm(
                        &mut part.z[s],
                        w,
                        &part.propagated[s],
                        out,
                        inp,
                        Accum::Replace,
                        false,
                    );
                    c.lap(0);
                    let bits = part.bits.get_mut(s);
                    tail(
                        cx,
                        st,
                        &mut part.z[s],
                        part.h.get_mut(s),
                        &part.propagated[s],
                        bits,
                    );
                    c.lap(1);
                    part.forward_on(cx, s + 1, loss, &mut c);
                    c
                });
                for (part, h) in parts.iter_mut().zip(taken.drain(..)) {
                    part.h[s - 1] = h;
                }
                clock.absorb(&c);
            }
            Prop::After => {
                // z = Â q (every part's q = W src, taken out for the join), the tail.
                taken.extend(parts.iter_mut().map(|part| take(&mut part.propagated[s])));
                let q = &taken[..];
                let a = a.unwrap();
                let c = run_parts(parts, on, &|part| {
                    let mut c = Clock::new(on);
                    a.propagate(q, part_width, &mut part.z[s], out, part.c0);
                    c.lap(2);
                    // Â after W: a residual skip would need the stage's source; presets have none.
                    let bits = part.bits.get_mut(s);
                    tail(cx, st, &mut part.z[s], part.h.get_mut(s), &[], bits);
                    c.lap(1);
                    part.forward_on(cx, s + 1, loss, &mut c);
                    c
                });
                for (part, q) in parts.iter_mut().zip(taken.drain(..)) {
                    part.propagated[s] = q;
                }
                clock.absorb(&c);
            }
            _ => {}
        }
    }
}

/// The rest of the backward pass after [`forward_all`]: one fork-join per propagation, each
/// continuing locally down to the next ([`Part::backward_on`]). The propagated buffer (Z̄ or
/// Wᵀ Z̄) is taken out of every part for the join, its spare standing in, and becomes the
/// spare afterwards (`taken` as in [`forward_all`]).
fn backward_all<T: Real>(
    cx: &Ctx<'_, T>,
    parts: &mut [Part<T>],
    taken: &mut Vec<Vec<T>>,
    a_t: Option<&Csr<T>>,
    clock: &mut Clock,
) {
    let on = cx.on;
    let part_width = kernels::CHUNKS_PER_PART * cx.chunk_cols;
    for (s, st) in cx.plan.stages.iter().enumerate().rev() {
        let (inp, out) = (st.inp, st.out);
        match st.prop {
            Prop::After => {
                // S̄ = Âᵀ Z̄ into p_bar, the stage's local work from p_bar, then on down.
                taken.extend(parts.iter_mut().map(|part| {
                    let spare = take(&mut part.z_bar_spare);
                    std::mem::replace(&mut part.z_bar, spare)
                }));
                let z_bar = &taken[..];
                let a_t = a_t.unwrap();
                let c = run_parts(parts, on, &|part| {
                    let mut c = Clock::new(on);
                    let dst = &mut part.p_bar[..out * part.cols];
                    a_t.propagate(z_bar, part_width, dst, out, part.c0);
                    c.lap(2);
                    part.weight_local(cx, s, true, &mut c);
                    if s > 0 {
                        part.input_local(cx, s, true, false, &mut c);
                        part.act_back_local(cx, s, &mut c);
                    }
                    part.backward_on(cx, s, &mut c);
                    c
                });
                for (part, z) in parts.iter_mut().zip(taken.drain(..)) {
                    part.z_bar_spare = z;
                }
                clock.absorb(&c);
            }
            Prop::Before if s > 0 => {
                // H̄ = Âᵀ (Wᵀ Z̄) from every part's p_bar (filled by the join before), σ', on down.
                taken.extend(parts.iter_mut().map(|part| {
                    let spare = take(&mut part.p_bar_spare);
                    std::mem::replace(&mut part.p_bar, spare)
                }));
                let w_t_z_bar = &taken[..];
                let a_t = a_t.unwrap();
                let c = run_parts(parts, on, &|part| {
                    let mut c = Clock::new(on);
                    let dst = &mut part.h_bar[..inp * part.cols];
                    a_t.propagate(w_t_z_bar, part_width, dst, inp, part.c0);
                    c.lap(2);
                    part.act_back_local(cx, s, &mut c);
                    part.backward_on(cx, s, &mut c);
                    c
                });
                for (part, p) in parts.iter_mut().zip(taken.drain(..)) {
                    part.p_bar_spare = p;
                }
                clock.absorb(&c);
            }
            _ => {}
        }
    }
}
