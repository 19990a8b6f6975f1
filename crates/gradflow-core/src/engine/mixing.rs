//! The epoch's orchestration over the column parts: [`Engine::loss_and_grad`] and
//! [`Engine::forward`]. Each part runs as far as it can on its own samples (`passes.rs`); a
//! fork-join ends only where Â needs a complete batch. Plans that never mix samples (DNN,
//! ResNet) thus run a whole epoch in one fork-join; the GCN in one per propagation (5 for the
//! paper's [200, 200]). Each propagation reads every part's source (taken out of the parts for
//! the join, so that each part stays otherwise mutable) and writes its own part's columns, then
//! continues locally up to the next. Afterwards the parts' gradient contributions are summed in
//! part order, so results do not depend on the thread count or on which core ran which part.

use super::csr::Csr;
use super::kernels::{self, both, run_parts, CHUNKS, PARTS};
use super::passes::{mm, tail, Ctx};
use super::{Clock, Engine, Part, Prop, Real};
use faer::Accum;
use std::array::from_fn;
use std::mem::take;

/// grad = Σ_k parts[k].g in part order, the vector split over both cores; returns ‖grad‖² (in
/// f64, the two halves' sums added in order).
fn sum_parts<T: Real>(grad: &mut [T], parts: &[Part<T>; PARTS]) -> f64 {
    let mid = grad.len() / 2;
    let (a, b) = grad.split_at_mut(mid);
    let go = |dst: &mut [T], off: usize| {
        let end = off + dst.len();
        kernels::sum_into(dst, from_fn(|k| &parts[k].g[off..end]))
    };
    let (sa, sb) = both(|| go(a, 0), || go(b, mid));
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
            cpc: kernels::chunk_cols(self.n),
            on: clock.on,
            record_kink: self.recorded_kink(),
            sm: self.layout == super::Layout::Samples,
            sigma_bits: self.sigma_bits,
        };
        forward_all(&cx, &mut self.parts, self.a.as_ref(), None, &mut clock);
        self.charge(&clock);
    }

    /// L(θ) and ∇L(θ) into `grad` (overwritten). The loss is accumulated in f64.
    ///
    /// When both cores are in use the whole evaluation runs inside rayon's pool (one hand-over
    /// per epoch), so the joins are cheap worker-to-worker ones rather than a wake-up of the
    /// pool from outside each time.
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
            cpc: kernels::chunk_cols(self.n),
            on: clock.on,
            record_kink: self.recorded_kink(),
            sm: self.layout == super::Layout::Samples,
            sigma_bits: self.sigma_bits,
        };
        forward_all(
            &cx,
            &mut self.parts,
            self.a.as_ref(),
            Some(c_loss),
            &mut clock,
        );
        backward_all(&cx, &mut self.parts, self.a_t.as_ref(), &mut clock);
        self.grad_norm_sq = sum_parts(grad, &self.parts);
        clock.lap(7);
        self.charge(&clock);
        self.parts.iter().map(|part| part.loss).sum()
    }
}

/// The forward pass on every part: one fork-join up to the first propagation, then one per
/// propagation, each continuing locally up to the next ([`Part::forward_on`]). With `loss`, the
/// last join also computes the loss and starts the backward pass.
fn forward_all<T: Real>(
    cx: &Ctx<'_, T>,
    parts: &mut [Part<T>; PARTS],
    a: Option<&Csr<T>>,
    loss: Option<f64>,
    clock: &mut Clock,
) {
    let on = cx.on;
    let pw = CHUNKS / PARTS * cx.cpc;
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
                let hs: [Vec<T>; PARTS] = from_fn(|k| take(&mut parts[k].h[s - 1]));
                let src = from_fn(|k| &hs[k][..]);
                let a = a.unwrap();
                let c = run_parts(parts, on, &|part| {
                    let mut c = Clock::new(on);
                    a.propagate(src, pw, &mut part.p[s], inp, part.c0);
                    c.lap(2);
                    mm(
                        &mut part.z[s],
                        w,
                        &part.p[s],
                        out,
                        inp,
                        Accum::Replace,
                        false,
                    );
                    c.lap(0);
                    let bits = part.bits.get_mut(s);
                    tail(cx, st, &mut part.z[s], part.h.get_mut(s), &part.p[s], bits);
                    c.lap(1);
                    part.forward_on(cx, s + 1, loss, &mut c);
                    c
                });
                for (part, h) in parts.iter_mut().zip(hs) {
                    part.h[s - 1] = h;
                }
                clock.absorb(&c);
            }
            Prop::After => {
                // z = Â q (every part's q = W src, taken out for the join), the tail.
                let qs: [Vec<T>; PARTS] = from_fn(|k| take(&mut parts[k].p[s]));
                let q = from_fn(|k| &qs[k][..]);
                let a = a.unwrap();
                let c = run_parts(parts, on, &|part| {
                    let mut c = Clock::new(on);
                    a.propagate(q, pw, &mut part.z[s], out, part.c0);
                    c.lap(2);
                    // Â after W: a residual skip would need the stage's source; presets have none.
                    let bits = part.bits.get_mut(s);
                    tail(cx, st, &mut part.z[s], part.h.get_mut(s), &[], bits);
                    c.lap(1);
                    part.forward_on(cx, s + 1, loss, &mut c);
                    c
                });
                for (part, q) in parts.iter_mut().zip(qs) {
                    part.p[s] = q;
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
/// spare afterwards.
fn backward_all<T: Real>(
    cx: &Ctx<'_, T>,
    parts: &mut [Part<T>; PARTS],
    a_t: Option<&Csr<T>>,
    clock: &mut Clock,
) {
    let on = cx.on;
    let pw = CHUNKS / PARTS * cx.cpc;
    for (s, st) in cx.plan.stages.iter().enumerate().rev() {
        let (inp, out) = (st.inp, st.out);
        match st.prop {
            Prop::After => {
                // S̄ = Âᵀ Z̄ into pb, the stage's local work from pb, then on down.
                let zs: [Vec<T>; PARTS] = from_fn(|k| {
                    let spare = take(&mut parts[k].zb_spare);
                    std::mem::replace(&mut parts[k].zb, spare)
                });
                let zb = from_fn(|k| &zs[k][..out * parts[k].cols]);
                let a_t = a_t.unwrap();
                let c = run_parts(parts, on, &|part| {
                    let mut c = Clock::new(on);
                    a_t.propagate(zb, pw, &mut part.pb[..out * part.cols], out, part.c0);
                    c.lap(2);
                    part.weight_local(cx, s, true, &mut c);
                    if s > 0 {
                        part.input_local(cx, s, true, false, &mut c);
                        part.act_back_local(cx, s, &mut c);
                    }
                    part.backward_on(cx, s, &mut c);
                    c
                });
                for (part, z) in parts.iter_mut().zip(zs) {
                    part.zb_spare = z;
                }
                clock.absorb(&c);
            }
            Prop::Before if s > 0 => {
                // H̄ = Âᵀ (Wᵀ Z̄) from every part's pb (filled by the join before), σ', on down.
                let ps: [Vec<T>; PARTS] = from_fn(|k| {
                    let spare = take(&mut parts[k].pb_spare);
                    std::mem::replace(&mut parts[k].pb, spare)
                });
                let pb = from_fn(|k| &ps[k][..inp * parts[k].cols]);
                let a_t = a_t.unwrap();
                let c = run_parts(parts, on, &|part| {
                    let mut c = Clock::new(on);
                    a_t.propagate(pb, pw, &mut part.hb[..inp * part.cols], inp, part.c0);
                    c.lap(2);
                    part.act_back_local(cx, s, &mut c);
                    part.backward_on(cx, s, &mut c);
                    c
                });
                for (part, p) in parts.iter_mut().zip(ps) {
                    part.pb_spare = p;
                }
                clock.absorb(&c);
            }
            _ => {}
        }
    }
}
