//! The epoch's orchestration over the two column halves: [`Engine::loss_and_grad`] and
//! [`Engine::forward`]. Plans that never mix samples (DNN, ResNet) run a whole epoch per half
//! in one fork-join (`passes.rs`); plans that propagate over the graph (GCN) fork and join per
//! stage, because Â needs a complete batch: each propagation reads both halves' sources and
//! writes its own half's columns. Afterwards the second half's gradient contribution is added
//! to the first's (split over both cores), always in the same order, so results do not depend
//! on the thread count.

use super::kernels::{self, both, Csr};
use super::passes::{mm, tail, Ctx};
use super::{Clock, Engine, Half, Prop, Real};
use faer::Accum;

/// Σ = a + b element-wise into `a`, the two halves of the vector on both cores.
fn add_halves<T: Real>(a: &mut [T], b: &[T]) {
    let mid = a.len() / 2;
    let (a0, a1) = a.split_at_mut(mid);
    let (b0, b1) = b.split_at(mid);
    let add = |x: &mut [T], y: &[T]| x.iter_mut().zip(y).for_each(|(u, &v)| *u += v);
    both(|| add(a0, b0), || add(a1, b1));
}

impl<T: Real> Engine<T> {
    fn mixes(&self) -> bool {
        self.plan.stages.iter().any(|s| s.prop != Prop::None)
    }

    /// The forward pass at θ; the outputs are then in [`Self::outputs`].
    pub fn forward(&mut self, theta: &[T]) {
        assert_eq!(theta.len(), self.p(), "engine: θ has the wrong length");
        let mut clock = Clock::new(self.profile.is_some());
        let on = clock.on;
        let cx = Ctx {
            plan: &self.plan,
            act: &self.act,
            theta,
            cpc: kernels::chunk_cols(self.n),
            on,
        };
        let (a, hc) = (self.a.as_ref(), self.halves[0].cols);
        for s in 0..self.plan.stages.len() {
            forward_stage(
                &cx,
                &mut self.halves,
                a,
                hc,
                s,
                None,
                [None, None],
                &mut clock,
            );
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
        let on = clock.on;
        let c_loss = self.loss.c(self.n, self.plan.out_dim());
        let mixes = self.mixes();
        let mut g1 = std::mem::take(&mut self.halves[1].g);
        let cx = Ctx {
            plan: &self.plan,
            act: &self.act,
            theta,
            cpc: kernels::chunk_cols(self.n),
            on,
        };
        if mixes {
            let (a, a_t) = (self.a.as_ref().unwrap(), self.a_t.as_ref().unwrap());
            epoch_mixing(
                &cx,
                &mut self.halves,
                a,
                a_t,
                c_loss,
                grad,
                &mut g1,
                &mut clock,
            );
        } else {
            let [h0, h1] = &mut self.halves;
            let (c, _) = both(
                || h0.epoch_local(&cx, c_loss, grad),
                || h1.epoch_local(&cx, c_loss, &mut g1),
            );
            clock.absorb(&c);
        }
        add_halves(grad, &g1);
        clock.lap(7);
        self.halves[1].g = g1;
        self.charge(&clock);
        self.halves[0].loss + self.halves[1].loss
    }
}

/// Stage s's forward on both halves (one or two fork-joins). With `loss` (and gradients `g`)
/// the last stage's join also computes the loss, the output cotangent and its bias sums.
#[allow(clippy::too_many_arguments)]
fn forward_stage<T: Real>(
    cx: &Ctx<'_, T>,
    halves: &mut [Half<T>; 2],
    a: Option<&Csr<T>>,
    hc: usize,
    s: usize,
    loss: Option<f64>,
    g: [Option<&mut [T]>; 2],
    clock: &mut Clock,
) {
    let st = &cx.plan.stages[s];
    let (w, _, _) = st.params(cx.theta);
    let (inp, out, on) = (st.inp, st.out, cx.on);
    let [h0, h1] = halves;
    match st.prop {
        Prop::Before if s > 0 => {
            // p = Â h (both halves' h), then z = W p and the tail, per half.
            // The per-stage outputs h are taken out of both halves for the join: each half reads
            // both halves' h[s − 1] and writes its own h[s].
            let (mut hh0, mut hh1) = (std::mem::take(&mut h0.h), std::mem::take(&mut h1.h));
            let (lo0, hi0) = hh0.split_at_mut(s);
            let (lo1, hi1) = hh1.split_at_mut(s);
            let src = [&lo0[s - 1][..], &lo1[s - 1][..]];
            let a = a.unwrap();
            let half = |hf: &mut Half<T>, hi: &mut [Vec<T>], g: Option<&mut [T]>| {
                let mut c = Clock::new(on);
                a.propagate(src, hc, &mut hf.p[s], inp, hf.c0);
                c.lap(2);
                mm(&mut hf.z[s], w, &hf.p[s], out, inp, Accum::Replace);
                c.lap(0);
                tail(cx, st, &mut hf.z[s], hi.first_mut(), &hf.p[s]);
                c.lap(1);
                if let (Some(g), Some(c_loss)) = (g, loss) {
                    hf.loss_local(cx, c_loss, g, &mut c);
                }
                c
            };
            let [g0, g1] = g;
            let (c, _) = both(|| half(h0, hi0, g0), || half(h1, hi1, g1));
            (h0.h, h1.h) = (hh0, hh1);
            clock.absorb(&c);
        }
        Prop::After => {
            // q = W src per half; then z = Â q needs both halves' q.
            let half = |hf: &mut Half<T>| {
                let mut c = Clock::new(on);
                let src: &[T] = if s == 0 { &hf.x } else { &hf.h[s - 1] };
                mm(&mut hf.p[s], w, src, out, inp, Accum::Replace);
                c.lap(0);
                c
            };
            let (c, _) = both(|| half(h0), || half(h1));
            clock.absorb(&c);
            // q is taken out of both halves for the join, so that each half reads both while
            // its own half is otherwise mutable.
            let (q0, q1) = (std::mem::take(&mut h0.p[s]), std::mem::take(&mut h1.p[s]));
            let q = [&q0[..], &q1[..]];
            let a = a.unwrap();
            let half = |hf: &mut Half<T>, g: Option<&mut [T]>| {
                let mut c = Clock::new(on);
                a.propagate(q, hc, &mut hf.z[s], out, hf.c0);
                c.lap(2);
                // Â after W: a residual skip would need the stage's source; presets have none.
                tail(cx, st, &mut hf.z[s], hf.h.get_mut(s), &[]);
                c.lap(1);
                if let (Some(g), Some(c_loss)) = (g, loss) {
                    hf.loss_local(cx, c_loss, g, &mut c);
                }
                c
            };
            let [g0, g1] = g;
            let (c, _) = both(|| half(h0, g0), || half(h1, g1));
            (h0.p[s], h1.p[s]) = (q0, q1);
            clock.absorb(&c);
        }
        _ => {
            let half = |hf: &mut Half<T>, g: Option<&mut [T]>| {
                let mut c = Clock::new(on);
                hf.forward_local(cx, s, &mut c);
                if let (Some(g), Some(c_loss)) = (g, loss) {
                    hf.loss_local(cx, c_loss, g, &mut c);
                }
                c
            };
            let [g0, g1] = g;
            let (c, _) = both(|| half(h0, g0), || half(h1, g1));
            clock.absorb(&c);
        }
    }
}

/// One epoch of a plan that propagates over the graph: per stage, fork-joins separated by the
/// propagations (the loss joins the last stage's; each backward propagation is fused with the
/// local work after it).
#[allow(clippy::too_many_arguments)]
fn epoch_mixing<T: Real>(
    cx: &Ctx<'_, T>,
    halves: &mut [Half<T>; 2],
    a: &Csr<T>,
    a_t: &Csr<T>,
    c_loss: f64,
    g0: &mut [T],
    g1: &mut [T],
    clock: &mut Clock,
) {
    let on = cx.on;
    let hc = halves[0].cols;
    let ns = cx.plan.stages.len();
    for s in 0..ns {
        let (loss, g) = if s + 1 == ns {
            (Some(c_loss), [Some(&mut *g0), Some(&mut *g1)])
        } else {
            (None, [None, None])
        };
        forward_stage(cx, halves, Some(a), hc, s, loss, g, clock);
    }
    let [h0, h1] = halves;
    for s in (0..ns).rev() {
        let st = &cx.plan.stages[s];
        let (inp, out) = (st.inp, st.out);
        match st.prop {
            Prop::After => {
                // S̄ = Âᵀ Z̄ (both halves' Z̄, taken out for the join) into pb, then the local
                // work from pb; σ' writes the next Z̄ into zb2 and swaps it into zb.
                let (z0, z1) = (std::mem::take(&mut h0.zb), std::mem::take(&mut h1.zb));
                let zb = [&z0[..out * h0.cols], &z1[..out * h1.cols]];
                let half = |hf: &mut Half<T>, g: &mut [T]| {
                    let mut c = Clock::new(on);
                    a_t.propagate(zb, hc, &mut hf.pb[..out * hf.cols], out, hf.c0);
                    c.lap(2);
                    hf.weight_local(cx, s, g, true, &mut c);
                    if s > 0 {
                        hf.input_local(cx, s, true, false, &mut c);
                        hf.act_back_local(cx, s, g, &mut c);
                    }
                    c
                };
                let (c, _) = both(|| half(h0, g0), || half(h1, g1));
                clock.absorb(&c);
                // The old Z̄ becomes the spare buffer (zb2), or stays in zb at the first stage.
                if s > 0 {
                    (h0.zb2, h1.zb2) = (z0, z1);
                } else {
                    (h0.zb, h1.zb) = (z0, z1);
                }
            }
            Prop::Before if s > 0 => {
                // Weight cotangent from p = Â h; Wᵀ Z̄ into pb; then H̄ = Âᵀ pb needs both
                // halves' pb (taken out for the join) and is followed by σ' in the same task.
                let half = |hf: &mut Half<T>, g: &mut [T]| {
                    let mut c = Clock::new(on);
                    hf.weight_local(cx, s, g, false, &mut c);
                    hf.input_local(cx, s, false, true, &mut c);
                    c
                };
                let (c, _) = both(|| half(h0, g0), || half(h1, g1));
                clock.absorb(&c);
                let (p0, p1) = (std::mem::take(&mut h0.pb), std::mem::take(&mut h1.pb));
                let pb = [&p0[..inp * h0.cols], &p1[..inp * h1.cols]];
                let half = |hf: &mut Half<T>, g: &mut [T]| {
                    let mut c = Clock::new(on);
                    a_t.propagate(pb, hc, &mut hf.hb[..inp * hf.cols], inp, hf.c0);
                    c.lap(2);
                    hf.act_back_local(cx, s, g, &mut c);
                    c
                };
                let (c, _) = both(|| half(h0, g0), || half(h1, g1));
                (h0.pb, h1.pb) = (p0, p1);
                clock.absorb(&c);
            }
            _ => {
                let half = |hf: &mut Half<T>, g: &mut [T]| {
                    let mut c = Clock::new(on);
                    hf.backward_local(cx, s, g, &mut c);
                    c
                };
                let (c, _) = both(|| half(h0, g0), || half(h1, g1));
                clock.absorb(&c);
            }
        }
    }
}
