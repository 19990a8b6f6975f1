//! The epoch's orchestration over the column parts: [`Engine::loss_and_grad`] and
//! [`Engine::forward`]. Plans that never mix samples (DNN, ResNet) run a whole epoch per part
//! in one fork-join over the parts (`passes.rs`); plans that propagate over the graph (GCN)
//! fork and join per stage, because Â needs a complete batch: each propagation reads every
//! part's source (taken out of the parts for the join, so that each part stays otherwise
//! mutable) and writes its own part's columns. Afterwards the parts' gradient contributions
//! are summed in part order, so results do not depend on the thread count or on which core ran
//! which part.

use super::kernels::{self, both, run_parts, Csr, CHUNKS, PARTS};
use super::passes::{mm, tail, Ctx};
use super::{Clock, Engine, Part, Prop, Real};
use faer::Accum;
use std::array::from_fn;
use std::mem::take;

/// grad = Σ_k parts[k].g in part order, the vector split over both cores.
fn sum_parts<T: Real>(grad: &mut [T], parts: &[Part<T>; PARTS]) {
    let mid = grad.len() / 2;
    let (a, b) = grad.split_at_mut(mid);
    let go = |dst: &mut [T], off: usize| {
        let end = off + dst.len();
        kernels::sum_into(dst, from_fn(|k| &parts[k].g[off..end]));
    };
    both(|| go(a, 0), || go(b, mid));
}

impl<T: Real> Engine<T> {
    fn mixes(&self) -> bool {
        self.plan.stages.iter().any(|s| s.prop != Prop::None)
    }

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
        };
        let a = self.a.as_ref();
        for s in 0..self.plan.stages.len() {
            forward_stage(&cx, &mut self.parts, a, s, None, &mut clock);
        }
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
        let mixes = self.mixes();
        let cx = Ctx {
            plan: &self.plan,
            act: &self.act,
            theta,
            cpc: kernels::chunk_cols(self.n),
            on: clock.on,
        };
        if mixes {
            let (a, a_t) = (self.a.as_ref().unwrap(), self.a_t.as_ref().unwrap());
            epoch_mixing(&cx, &mut self.parts, a, a_t, c_loss, &mut clock);
        } else {
            let c = run_parts(&mut self.parts, cx.on, &|part| {
                part.epoch_local(&cx, c_loss)
            });
            clock.absorb(&c);
        }
        sum_parts(grad, &self.parts);
        clock.lap(7);
        self.charge(&clock);
        self.parts.iter().map(|part| part.loss).sum()
    }
}

/// Stage s's forward on every part (one or two fork-joins). With `loss` the last stage's join
/// also computes the loss, the output cotangent and its bias sums.
fn forward_stage<T: Real>(
    cx: &Ctx<'_, T>,
    parts: &mut [Part<T>; PARTS],
    a: Option<&Csr<T>>,
    s: usize,
    loss: Option<f64>,
    clock: &mut Clock,
) {
    let st = &cx.plan.stages[s];
    let (w, _, _) = st.params(cx.theta);
    let (inp, out, on) = (st.inp, st.out, cx.on);
    let pw = CHUNKS / PARTS * cx.cpc;
    let finish = |part: &mut Part<T>, c: &mut Clock| {
        if let Some(c_loss) = loss {
            part.loss_local(cx, c_loss, c);
        }
    };
    match st.prop {
        Prop::Before if s > 0 => {
            // p = Â h (every part's h[s − 1]), then z = W p and the tail, per part.
            let hs: [Vec<T>; PARTS] = from_fn(|k| take(&mut parts[k].h[s - 1]));
            let src = from_fn(|k| &hs[k][..]);
            let a = a.unwrap();
            let c = run_parts(parts, on, &|part| {
                let mut c = Clock::new(on);
                a.propagate(src, pw, &mut part.p[s], inp, part.c0);
                c.lap(2);
                mm(&mut part.z[s], w, &part.p[s], out, inp, Accum::Replace);
                c.lap(0);
                tail(cx, st, &mut part.z[s], part.h.get_mut(s), &part.p[s]);
                c.lap(1);
                finish(part, &mut c);
                c
            });
            for (part, h) in parts.iter_mut().zip(hs) {
                part.h[s - 1] = h;
            }
            clock.absorb(&c);
        }
        Prop::After => {
            // q = W src per part; then z = Â q needs every part's q.
            let c = run_parts(parts, on, &|part| {
                let mut c = Clock::new(on);
                let src: &[T] = if s == 0 { &part.x } else { &part.h[s - 1] };
                mm(&mut part.p[s], w, src, out, inp, Accum::Replace);
                c.lap(0);
                c
            });
            clock.absorb(&c);
            let qs: [Vec<T>; PARTS] = from_fn(|k| take(&mut parts[k].p[s]));
            let q = from_fn(|k| &qs[k][..]);
            let a = a.unwrap();
            let c = run_parts(parts, on, &|part| {
                let mut c = Clock::new(on);
                a.propagate(q, pw, &mut part.z[s], out, part.c0);
                c.lap(2);
                // Â after W: a residual skip would need the stage's source; presets have none.
                tail(cx, st, &mut part.z[s], part.h.get_mut(s), &[]);
                c.lap(1);
                finish(part, &mut c);
                c
            });
            for (part, q) in parts.iter_mut().zip(qs) {
                part.p[s] = q;
            }
            clock.absorb(&c);
        }
        _ => {
            let c = run_parts(parts, on, &|part| {
                let mut c = Clock::new(on);
                part.forward_local(cx, s, &mut c);
                finish(part, &mut c);
                c
            });
            clock.absorb(&c);
        }
    }
}

/// One epoch of a plan that propagates over the graph: per stage, fork-joins separated by the
/// propagations (the loss joins the last stage's; each backward propagation is fused with the
/// local work after it).
fn epoch_mixing<T: Real>(
    cx: &Ctx<'_, T>,
    parts: &mut [Part<T>; PARTS],
    a: &Csr<T>,
    a_t: &Csr<T>,
    c_loss: f64,
    clock: &mut Clock,
) {
    let on = cx.on;
    let pw = CHUNKS / PARTS * cx.cpc;
    let ns = cx.plan.stages.len();
    for s in 0..ns {
        let loss = (s + 1 == ns).then_some(c_loss);
        forward_stage(cx, parts, Some(a), s, loss, clock);
    }
    for s in (0..ns).rev() {
        let st = &cx.plan.stages[s];
        let (inp, out) = (st.inp, st.out);
        match st.prop {
            Prop::After => {
                // S̄ = Âᵀ Z̄ (every part's Z̄, taken out for the join) into pb, then the local
                // work from pb; σ' writes the next Z̄ into zb2 and swaps it into zb.
                let zs: [Vec<T>; PARTS] = from_fn(|k| take(&mut parts[k].zb));
                let zb = from_fn(|k| &zs[k][..]);
                let c = run_parts(parts, on, &|part| {
                    let mut c = Clock::new(on);
                    a_t.propagate(zb, pw, &mut part.pb[..out * part.cols], out, part.c0);
                    c.lap(2);
                    part.weight_local(cx, s, true, &mut c);
                    if s > 0 {
                        part.input_local(cx, s, true, false, &mut c);
                        part.act_back_local(cx, s, &mut c);
                    }
                    c
                });
                clock.absorb(&c);
                // The old Z̄ becomes the spare buffer (zb2), or stays in zb at the first stage.
                for (part, z) in parts.iter_mut().zip(zs) {
                    if s > 0 {
                        part.zb2 = z;
                    } else {
                        part.zb = z;
                    }
                }
            }
            Prop::Before if s > 0 => {
                // Weight cotangent from p = Â h; Wᵀ Z̄ into pb; then H̄ = Âᵀ pb needs every
                // part's pb (taken out for the join) and is followed by σ' in the same task.
                let c = run_parts(parts, on, &|part| {
                    let mut c = Clock::new(on);
                    part.weight_local(cx, s, false, &mut c);
                    part.input_local(cx, s, false, true, &mut c);
                    c
                });
                clock.absorb(&c);
                let ps: [Vec<T>; PARTS] = from_fn(|k| take(&mut parts[k].pb));
                let pb = from_fn(|k| &ps[k][..]);
                let c = run_parts(parts, on, &|part| {
                    let mut c = Clock::new(on);
                    a_t.propagate(pb, pw, &mut part.hb[..inp * part.cols], inp, part.c0);
                    c.lap(2);
                    part.act_back_local(cx, s, &mut c);
                    c
                });
                for (part, p) in parts.iter_mut().zip(ps) {
                    part.pb = p;
                }
                clock.absorb(&c);
            }
            _ => {
                let c = run_parts(parts, on, &|part| {
                    let mut c = Clock::new(on);
                    part.backward_local(cx, s, &mut c);
                    c
                });
                clock.absorb(&c);
            }
        }
    }
}
