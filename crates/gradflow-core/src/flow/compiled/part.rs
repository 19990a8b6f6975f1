//! One part of the samples on the compiled route: its buffers, and the forward and reverse
//! passes on the frozen pattern (see the parent module's docs, **Gradient**). A stage that
//! propagates over the graph applies Â where its [`Prop`] says (before or after W) and Âᵀ in
//! the reverse pass; such plans run as one part holding every sample.

use super::{PinSlot, FREE};
use crate::activation::Activation;
use crate::engine::{Csr, Plan, Prop};
use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};

/// One part's buffers: samples i0..i1, every stage's z and h (features × samples).
#[derive(Default)]
pub(super) struct Part {
    pub(super) i0: usize,
    pub(super) i1: usize,
    pub(super) z: Vec<Vec<f64>>,
    pub(super) h: Vec<Vec<f64>>,
    /// Per stage that propagates: Â src (Â before W, in × samples) or W src (Â after W,
    /// out × samples); empty for other stages.
    pub(super) propagated: Vec<Vec<f64>>,
    pub(super) zbar: Vec<f64>,
    /// The reverse pass's cotangent between Â and W of a propagating stage.
    pub(super) mid_bar: Vec<f64>,
    pub(super) hbar: Vec<f64>,
    pub(super) hbar_next: Vec<f64>,
    pub(super) grad: Vec<f64>,
    pub(super) sse: f64,
    /// Cotangent at σ(z_j) per pinned index j (NaN for samples of the other part).
    pub(super) rec: Vec<f64>,
}

/// Read-only inputs of a pass.
pub(super) struct Ctx<'a> {
    pub(super) plan: &'a Plan,
    pub(super) act: &'a Activation,
    pub(super) x: &'a [f64],
    pub(super) y: &'a [f64],
    pub(super) c: f64,
    pub(super) theta: &'a [f64],
    pub(super) pieces: &'a [u16],
    pub(super) pin_of: &'a [u32],
    pub(super) pins: &'a [PinSlot],
    pub(super) offsets: &'a [usize],
    pub(super) pinned: &'a [usize],
    /// σ is linear on each piece with its kink at 0 (ReLU, leaky ReLU, PReLU).
    pub(super) linear: bool,
    /// Â and Âᵀ when the plan propagates over the graph.
    pub(super) a: Option<&'a Csr<f64>>,
    pub(super) a_t: Option<&'a Csr<f64>>,
}

impl Ctx<'_> {
    /// Where stage s propagates as the passes see it: Â before the first stage is already in
    /// x (ÂX is fixed), so that stage reads x like a stage without propagation.
    pub(super) fn prop(&self, s: usize) -> Prop {
        match self.plan.stages[s].prop {
            Prop::Before if s == 0 => Prop::None,
            p => p,
        }
    }

    /// dst (width × n) = Â src (`transpose`: Âᵀ src), columns of `width` features; the
    /// part holds every sample (plans that propagate run as one part).
    fn propagate(&self, transpose: bool, src: &Vec<f64>, dst: &mut [f64], width: usize) {
        let a = if transpose { self.a_t } else { self.a };
        let a = a.expect("a plan that propagates has Â");
        let n = dst.len() / width;
        a.propagate(std::slice::from_ref(src), n, dst, width, 0);
    }

    /// For a [`Self::linear`] σ: the factor f with σ(z) = f·z = σ'(z)·z on entry e's piece (or
    /// its pinned slope; the kink is at 0, where σ vanishes).
    #[inline(always)]
    pub(super) fn factor(&self, e: usize, slopes: &[f64; 2]) -> f64 {
        match self.pin_of[e] {
            FREE => slopes[(self.pieces[e] as usize).min(1)],
            j => self.pins[j as usize].slope,
        }
    }

    /// σ's slopes left and right of 0 for a [`Self::linear`] σ.
    pub(super) fn slopes(&self, a: f64) -> [f64; 2] {
        [
            self.act.piece_derivative(0, -1.0, a),
            self.act.piece_derivative(1, 1.0, a),
        ]
    }

    /// (σ, σ', ∂σ/∂a) of entry e at z.
    #[inline]
    pub(super) fn sigma(&self, e: usize, z: f64, a: f64) -> (f64, f64, f64) {
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

pub(super) fn view(s: &[f64], rows: usize, cols: usize) -> MatRef<'_, f64> {
    MatRef::from_column_major_slice(s, rows, cols)
}

pub(super) fn view_mut(s: &mut [f64], rows: usize, cols: usize) -> MatMut<'_, f64> {
    MatMut::from_column_major_slice_mut(s, rows, cols)
}

impl Part {
    pub(super) fn new(plan: &Plan, i0: usize, i1: usize, p: usize) -> Self {
        let cols = i1 - i0;
        let wmax = plan.max_width();
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
            propagated: plan
                .stages
                .iter()
                .enumerate()
                .map(|(t, st)| match st.prop {
                    Prop::Before if t > 0 => vec![0.0; st.inp * cols],
                    Prop::After => vec![0.0; st.out * cols],
                    _ => Vec::new(),
                })
                .collect(),
            zbar: vec![0.0; wmax * cols],
            mid_bar: vec![0.0; wmax * cols],
            hbar: vec![0.0; wmax * cols],
            hbar_next: vec![0.0; wmax * cols],
            grad: vec![0.0; p],
            sse: 0.0,
            rec: Vec::new(),
        }
    }

    pub(super) fn cols(&self) -> usize {
        self.i1 - self.i0
    }

    /// Forward pass on this part's samples (and the part's SSE).
    pub(super) fn forward(&mut self, cx: &Ctx) {
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
            let w = MatRef::from_row_major_slice(w, st.out, st.inp);
            match cx.prop(s) {
                Prop::None => matmul(
                    view_mut(z, st.out, cols),
                    Accum::Replace,
                    w,
                    view(src, st.inp, cols),
                    1.0,
                    Par::Seq,
                ),
                Prop::Before => {
                    // z = W (Â h), h the previous stage's output.
                    let p = &mut self.propagated[s];
                    cx.propagate(false, &before[s - 1], p, st.inp);
                    let p = view(p, st.inp, cols);
                    matmul(
                        view_mut(z, st.out, cols),
                        Accum::Replace,
                        w,
                        p,
                        1.0,
                        Par::Seq,
                    );
                }
                Prop::After => {
                    // z = Â (W src).
                    let q = &mut self.propagated[s];
                    let src = view(src, st.inp, cols);
                    matmul(
                        view_mut(q, st.out, cols),
                        Accum::Replace,
                        w,
                        src,
                        1.0,
                        Par::Seq,
                    );
                    cx.propagate(false, q, z, st.out);
                }
            }
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
    pub(super) fn backward(&mut self, cx: &Ctx) {
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
            let prop = cx.prop(s);
            // The source W multiplies, and the cotangent at W's output (Â after W: Âᵀ Z̄).
            let src: &[f64] = match (s, prop) {
                (0, _) => &cx.x[self.i0 * d..self.i1 * d],
                (_, Prop::Before) => &self.propagated[s],
                _ => &self.h[s - 1],
            };
            if prop == Prop::After {
                cx.propagate(true, &self.zbar, &mut self.mid_bar[..len], st.out);
            }
            let wbar = if prop == Prop::After {
                &self.mid_bar[..len]
            } else {
                &self.zbar[..len]
            };
            let (gw, gb, gslope) = st.params_mut(&mut self.grad);
            matmul(
                MatMut::from_column_major_slice_mut(gw, st.inp, st.out),
                Accum::Replace,
                view(src, st.inp, cols),
                view(wbar, st.out, cols).transpose(),
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
                let acc = if st.residual {
                    Accum::Add
                } else {
                    Accum::Replace
                };
                let w_t = MatRef::from_row_major_slice(w, st.out, st.inp).transpose();
                if prop == Prop::Before {
                    // H̄ = Âᵀ (Wᵀ Z̄).
                    let pbar = view_mut(&mut self.mid_bar[..prev], st.inp, cols);
                    let wbar = view(&self.zbar[..len], st.out, cols);
                    matmul(pbar, Accum::Replace, w_t, wbar, 1.0, Par::Seq);
                    let (pbar, hbar) = (&self.mid_bar, &mut self.hbar_next[..prev]);
                    cx.propagate(true, pbar, hbar, st.inp);
                } else {
                    let wbar = view(wbar, st.out, cols);
                    let dst = view_mut(&mut self.hbar_next[..prev], st.inp, cols);
                    matmul(dst, acc, w_t, wbar, 1.0, Par::Seq);
                }
                std::mem::swap(&mut self.hbar, &mut self.hbar_next);
            }
        }
    }
}
