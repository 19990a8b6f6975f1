//! The engine's forward and backward passes. Both cores work on every stage: the n columns
//! (samples) are split into two fixed halves run with [`both`], each half doing its own
//! single-threaded matrix product and then, fused in the same task, its element-wise work, so a
//! stage costs one synchronisation (two when Â has to see a complete batch first). Weight
//! cotangents Z̄·srcᵀ sum over all columns, so they are split by rows of W instead, in the same
//! tasks as the input cotangent of the matching column half. Z̄ ping-pongs between two buffers
//! so that one half can write the next stage's Z̄ while the other still reads this stage's.

use super::kernels::{self, both, chunk_cols, half_cols};
use super::{cm, cm_mut, Clock, Engine, Prop, Real};
use faer::linalg::matmul::matmul;
use faer::{Accum, MatRef, Par};

/// dst (out × cols) (=|+=) W (row-major out × inp) · src (inp × cols), on this thread.
fn mm<T: Real>(dst: &mut [T], w: &[T], src: &[T], out: usize, inp: usize, acc: Accum) {
    let cols = dst.len() / out.max(1);
    matmul(
        cm_mut(dst, out, cols),
        acc,
        MatRef::from_row_major_slice(w, out, inp),
        cm(src, inp, cols),
        T::one(),
        Par::Seq,
    );
}

/// dst (inp × cols) (=|+=) Wᵀ · g (out × cols), on this thread.
fn mm_t<T: Real>(dst: &mut [T], w: &[T], g: &[T], out: usize, inp: usize, acc: Accum) {
    let cols = dst.len() / inp.max(1);
    matmul(
        cm_mut(dst, inp, cols),
        acc,
        MatRef::from_row_major_slice(w, out, inp).transpose(),
        cm(g, out, cols),
        T::one(),
        Par::Seq,
    );
}

/// Rows r0..r0+rows of gW (row-major out × inp) = S̄[rows, :] · srcᵀ, on this thread. The
/// product goes to a column-major scratch (`tmp`, rows × inp) — about twice as fast as a
/// row-major destination — and is then transposed into θ's layout by blocks.
#[allow(clippy::too_many_arguments)]
fn weight_rows<T: Real>(
    gw: &mut [T],
    tmp: &mut [T],
    sbar: &[T],
    src: &[T],
    out: usize,
    inp: usize,
    n: usize,
    r0: usize,
    rows: usize,
) {
    let tmp = &mut tmp[..rows * inp];
    matmul(
        cm_mut(tmp, rows, inp),
        Accum::Replace,
        cm(sbar, out, n).subrows(r0, rows),
        cm(src, inp, n).transpose(),
        T::one(),
        Par::Seq,
    );
    const B: usize = 32;
    for a0 in (0..inp).step_by(B) {
        for q0 in (0..rows).step_by(B) {
            for a in a0..(a0 + B).min(inp) {
                let col = &tmp[a * rows..(a + 1) * rows];
                for q in q0..(q0 + B).min(rows) {
                    gw[q * inp + a] = col[q];
                }
            }
        }
    }
}

impl<T: Real> Engine<T> {
    pub(super) fn forward_timed(&mut self, theta: &[T], clock: &mut Clock) {
        assert_eq!(theta.len(), self.p(), "engine: θ has the wrong length");
        clock.lap(0);
        let n = self.n;
        let hc = half_cols(n);
        let on = clock.on;
        let ns = self.plan.stages.len();
        for s in 0..ns {
            let st = self.plan.stages[s].clone();
            let (w, b, slope) = st.params(theta);
            let slope = slope.unwrap_or_default();
            let (inp, out) = (st.inp, st.out);
            let last = s + 1 == ns;
            let (h_prev, h_rest) = self.h.split_at_mut(s);
            let src: &[T] = if s == 0 { &self.x } else { &h_prev[s - 1] };
            let (z0, z1) = self.z[s].split_at_mut(hc * out);
            let (h0, h1): (&mut [T], &mut [T]) = if last {
                (&mut [], &mut [])
            } else {
                h_rest[0].split_at_mut(hc * out)
            };
            let act = &self.act;
            let a = self.a.as_ref();
            // The element-wise tail of a half: bias (+ σ, + skip).
            let tail = |z: &mut [T], h: &mut [T], c0: usize, c: &mut Clock| {
                if last {
                    kernels::add_bias(z, b, out);
                } else {
                    let skip = st.residual.then(|| &src[c0 * inp..c0 * inp + z.len()]);
                    kernels::bias_act_forward(act, slope, b, z, h, skip, out);
                }
                c.lap(1);
            };
            match st.prop {
                Prop::After => {
                    // q = W src per half; then z = Â q needs all of q.
                    let (q0, q1) = self.p[s].split_at_mut(hc * out);
                    let half = |q: &mut [T], c0: usize| {
                        let mut c = Clock::new(on);
                        mm(
                            q,
                            w,
                            &src[c0 * inp..c0 * inp + q.len() / out * inp],
                            out,
                            inp,
                            Accum::Replace,
                        );
                        c.lap(0);
                        c
                    };
                    let (c, _) = both(|| half(q0, 0), || half(q1, hc));
                    clock.absorb(&c);
                    let q: &[T] = &self.p[s];
                    let a = a.unwrap();
                    let half = |z: &mut [T], h: &mut [T], c0: usize| {
                        let mut c = Clock::new(on);
                        a.propagate(q, z, out, c0);
                        c.lap(2);
                        tail(z, h, c0, &mut c);
                        c
                    };
                    let (c, _) = both(|| half(z0, h0, 0), || half(z1, h1, hc));
                    clock.absorb(&c);
                }
                Prop::Before if s > 0 => {
                    let (p0, p1) = self.p[s].split_at_mut(hc * inp);
                    let a = a.unwrap();
                    let half = |p: &mut [T], z: &mut [T], h: &mut [T], c0: usize| {
                        let mut c = Clock::new(on);
                        a.propagate(src, p, inp, c0);
                        c.lap(2);
                        mm(z, w, p, out, inp, Accum::Replace);
                        c.lap(0);
                        tail(z, h, c0, &mut c);
                        c
                    };
                    let (c, _) = both(|| half(p0, z0, h0, 0), || half(p1, z1, h1, hc));
                    clock.absorb(&c);
                }
                _ => {
                    // Prop::None, or Before at stage 0 where x already holds ÂX.
                    let half = |z: &mut [T], h: &mut [T], c0: usize| {
                        let mut c = Clock::new(on);
                        let cols = z.len() / out;
                        mm(
                            z,
                            w,
                            &src[c0 * inp..(c0 + cols) * inp],
                            out,
                            inp,
                            Accum::Replace,
                        );
                        c.lap(0);
                        tail(z, h, c0, &mut c);
                        c
                    };
                    let (c, _) = both(|| half(z0, h0, 0), || half(z1, h1, hc));
                    clock.absorb(&c);
                }
            }
        }
    }

    /// L(θ) and ∇L(θ) into `grad` (overwritten). The loss is accumulated in f64.
    ///
    /// When both cores are in use the whole evaluation runs inside rayon's pool (one hand-over
    /// per epoch), so the per-stage joins are cheap worker-to-worker ones rather than a wake-up of
    /// the pool from outside each time.
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
        assert_eq!(
            grad.len(),
            self.p(),
            "engine: gradient has the wrong length"
        );
        let mut clock = Clock::new(self.profile.is_some());
        self.forward_timed(theta, &mut clock);
        let on = clock.on;
        let n = self.n;
        let hc = half_cols(n);
        let cpc = chunk_cols(n);
        let nch = n.div_ceil(cpc);
        let m = self.plan.out_dim();
        let c = self.loss.c(n, m);
        let ns = self.plan.stages.len();
        let loss = kernels::loss_cotangent(self.z.last().unwrap(), &self.y, &mut self.zb, c);
        clock.lap(3);
        {
            let st = &self.plan.stages[ns - 1];
            let (_, gb, _) = st.params_mut(grad);
            kernels::row_sums(&self.zb[..st.out * n], st.out, &mut self.partial, gb);
            clock.lap(6);
        }
        for s in (0..ns).rev() {
            let st = self.plan.stages[s].clone();
            let (inp, out) = (st.inp, st.out);
            let (w, _, _) = st.params(theta);
            let (g_lo, g_hi) = grad.split_at_mut(st.offset);
            let gw = &mut g_hi[..out * inp];
            // S̄, the cotangent of the product W·(source): Z̄, or Âᵀ Z̄ when Â comes after W.
            if st.prop == Prop::After {
                let (zb, a_t) = (&self.zb[..out * n], self.a_t.as_ref().unwrap());
                let (p0, p1) = self.pb[..out * n].split_at_mut(hc * out);
                let half = |p: &mut [T], c0: usize| {
                    let mut c = Clock::new(on);
                    a_t.propagate(zb, p, out, c0);
                    c.lap(2);
                    c
                };
                let (c, _) = both(|| half(p0, 0), || half(p1, hc));
                clock.absorb(&c);
            }
            let sbar: &[T] = if st.prop == Prop::After {
                &self.pb[..out * n]
            } else {
                &self.zb[..out * n]
            };
            let src: &[T] = match (s, st.prop) {
                (0, _) => &self.x,
                (_, Prop::Before) => &self.p[s],
                _ => &self.h[s - 1],
            };
            let r0 = out / 2;
            let (gw0, gw1) = gw.split_at_mut(r0 * inp);
            let (t0, t1) = self.gws.split_at_mut(r0 * inp);
            if s == 0 {
                // The input's cotangent is not needed: both cores on the weight cotangent.
                let half = |g: &mut [T], t: &mut [T], r: usize, rows: usize| {
                    let mut c = Clock::new(on);
                    weight_rows(g, t, sbar, src, out, inp, n, r, rows);
                    c.lap(4);
                    c
                };
                let (c, _) = both(|| half(gw0, t0, 0, r0), || half(gw1, t1, r0, out - r0));
                clock.absorb(&c);
                break;
            }
            let prev = self.plan.stages[s - 1].clone();
            let (_, _, slope) = prev.params(theta);
            let slope = slope.unwrap_or_default();
            let z_prev: &[T] = &self.z[s - 1];
            let act = &self.act;
            let wp = prev.out + 1;
            let pc_half = hc.div_ceil(cpc);
            let (part0, part1) = self.partial[..nch * wp].split_at_mut(pc_half * wp);
            let (hb0, hb1) = self.hb[..inp * n].split_at_mut(hc * inp);
            let (zn0, zn1) = self.zb2[..inp * n].split_at_mut(hc * inp);
            let act_bwd = |hb: &[T], zn: &mut [T], part: &mut [T], c0: usize, c: &mut Clock| {
                let z = &z_prev[c0 * inp..c0 * inp + zn.len()];
                kernels::act_backward(act, slope, z, hb, zn, inp, cpc, part);
                c.lap(6);
            };
            if st.prop == Prop::Before {
                // Â sits before W: H̄ = Âᵀ (Wᵀ Z̄) needs all of Wᵀ Z̄ first. (S̄ is Z̄ here.)
                let zbs: &[T] = &self.zb[..out * n];
                let (pb0, pb1) = self.pb[..inp * n].split_at_mut(hc * inp);
                #[allow(clippy::too_many_arguments)]
                let half =
                    |g: &mut [T], t: &mut [T], r: usize, rows: usize, pb: &mut [T], c0: usize| {
                        let mut c = Clock::new(on);
                        weight_rows(g, t, zbs, src, out, inp, n, r, rows);
                        c.lap(4);
                        let cols = pb.len() / inp;
                        mm_t(
                            pb,
                            w,
                            &zbs[c0 * out..(c0 + cols) * out],
                            out,
                            inp,
                            Accum::Replace,
                        );
                        c.lap(5);
                        c
                    };
                let (c, _) = both(
                    || half(gw0, t0, 0, r0, pb0, 0),
                    || half(gw1, t1, r0, out - r0, pb1, hc),
                );
                clock.absorb(&c);
                let (pb, a_t) = (&self.pb[..inp * n], self.a_t.as_ref().unwrap());
                let half = |hb: &mut [T], zn: &mut [T], part: &mut [T], c0: usize| {
                    let mut c = Clock::new(on);
                    a_t.propagate(pb, hb, inp, c0);
                    c.lap(2);
                    act_bwd(hb, zn, part, c0, &mut c);
                    c
                };
                let (c, _) = both(|| half(hb0, zn0, part0, 0), || half(hb1, zn1, part1, hc));
                clock.absorb(&c);
            } else {
                // A residual stage's skip is the identity: H̄ (holding the cotangent of this
                // stage's output) accumulates Wᵀ S̄ in place.
                let acc = if st.residual {
                    Accum::Add
                } else {
                    Accum::Replace
                };
                #[allow(clippy::too_many_arguments)]
                let half = |g: &mut [T],
                            t: &mut [T],
                            r: usize,
                            rows: usize,
                            hb: &mut [T],
                            zn: &mut [T],
                            part: &mut [T],
                            c0: usize| {
                    let mut c = Clock::new(on);
                    weight_rows(g, t, sbar, src, out, inp, n, r, rows);
                    c.lap(4);
                    let cols = hb.len() / inp;
                    mm_t(hb, w, &sbar[c0 * out..(c0 + cols) * out], out, inp, acc);
                    c.lap(5);
                    act_bwd(hb, zn, part, c0, &mut c);
                    c
                };
                let (c, _) = both(
                    || half(gw0, t0, 0, r0, hb0, zn0, part0, 0),
                    || half(gw1, t1, r0, out - r0, hb1, zn1, part1, hc),
                );
                clock.absorb(&c);
            }
            let (_, gb, gslope) = prev.params_mut(g_lo);
            kernels::combine(
                &self.partial[..nch * wp],
                wp,
                nch,
                gb,
                gslope.filter(|_| prev.prelu),
            );
            std::mem::swap(&mut self.zb, &mut self.zb2);
            clock.lap(6);
        }
        self.charge(&clock);
        loss
    }
}
