//! Rows ∇_θ z_j of pinned entries for plans that mix samples (gcn), as dense p-vectors, by
//! reverse passes restricted to the nodes a cotangent has reached, on the buffers of the last
//! gradient evaluation (its z, h, ÂX and Â-propagated inputs; no forward pass of its own).
//!
//! A seed at (stage s, node i, unit u) is a cotangent supported on {i}. Going down, W and σ'
//! keep the support; Âᵀ widens it to the nodes k with Â_jk ≠ 0 for some j in it. Per stage t
//! the row gets Z̄_t (or Âᵀ Z̄_t when Â follows W) times the stage's source, summed over the
//! support, the bias part Σ Z̄_t and, for PReLU, Σ H̄ ⊙ ∂σ/∂a. The arithmetic is the compiled
//! reverse pass restricted to the support (the other columns are exact zeros).

use super::part::Ctx;
use super::{Compiled, FREE};
use crate::engine::Prop;

/// Per-node cotangents with their support: `vals` holds `width` values per node (zero off
/// the support), `nodes` the support, `member` its indicator.
#[derive(Default)]
struct Sparse {
    vals: Vec<f64>,
    nodes: Vec<usize>,
    member: Vec<bool>,
    width: usize,
}

impl Sparse {
    /// Empty, for n nodes of up to `wmax` values (allocates only the first time).
    fn reset(&mut self, n: usize, wmax: usize) {
        if self.member.len() != n || self.vals.len() != n * wmax {
            self.vals = vec![0.0; n * wmax];
            self.member = vec![false; n];
            self.nodes.clear();
        }
        self.restart(0);
    }

    /// Zeroes the values on the support, empties it, and sets the width.
    fn restart(&mut self, width: usize) {
        let w = self.width;
        for &j in &self.nodes {
            self.vals[j * w..(j + 1) * w]
                .iter_mut()
                .for_each(|v| *v = 0.0);
            self.member[j] = false;
        }
        self.nodes.clear();
        self.width = width;
    }

    /// Node j's values (joining the support).
    fn at(&mut self, j: usize) -> &mut [f64] {
        if !self.member[j] {
            self.member[j] = true;
            self.nodes.push(j);
        }
        let w = self.width;
        &mut self.vals[j * w..(j + 1) * w]
    }

    fn col(&self, j: usize) -> &[f64] {
        &self.vals[j * self.width..(j + 1) * self.width]
    }
}

/// The buffers of [`Compiled::dense_rows`], kept between evaluations.
#[derive(Default)]
pub(super) struct Buffers {
    /// Z̄ of the current stage, the cotangent between Â and W, and the next H̄.
    zbar: Sparse,
    mid: Sparse,
    hbar: Sparse,
}

/// gW (row-major out × inp) += Σ_{j in support} ḡ_j ⊗ src_j.
fn weight_part(gw: &mut [f64], g: &Sparse, src: &[f64], inp: usize) {
    for &j in &g.nodes {
        let s = &src[j * inp..(j + 1) * inp];
        for (o, &v) in g.col(j).iter().enumerate() {
            if v != 0.0 {
                for (r, &x) in gw[o * inp..(o + 1) * inp].iter_mut().zip(s) {
                    *r += v * x;
                }
            }
        }
    }
}

/// dst_j = Wᵀ ḡ_j for every j in g's support (dst restarted at width inp; W row-major
/// out × inp).
fn input_part(dst: &mut Sparse, g: &Sparse, w: &[f64], inp: usize) {
    dst.restart(inp);
    for &j in &g.nodes {
        let d = dst.at(j);
        for (o, &v) in g.col(j).iter().enumerate() {
            if v != 0.0 {
                for (x, &wv) in d.iter_mut().zip(&w[o * inp..(o + 1) * inp]) {
                    *x += v * wv;
                }
            }
        }
    }
}

/// dst = Âᵀ g (dst restarted at g's width): dst_k = Σ_j Â_jk g_j.
fn propagate_t(dst: &mut Sparse, g: &Sparse, cx: &Ctx) {
    let a = cx.a.expect("a plan that mixes samples has Â");
    dst.restart(g.width);
    for &j in &g.nodes {
        for (k, v) in a.row(j) {
            for (d, &x) in dst.at(k).iter_mut().zip(g.col(j)) {
                *d += v * x;
            }
        }
    }
}

impl Compiled {
    /// The rows ∇_θ z_j of the pinned entries (in `pinned` order) into `rows`, k dense
    /// p-vectors, for a plan that mixes samples; reads the buffers of the last
    /// [`Self::gradient`] evaluation, which must have been at `theta` with `pieces` and the
    /// installed pins. Returns the number of reverse passes (one per entry).
    pub fn dense_rows(
        &mut self,
        theta: &[f64],
        pieces: &[u16],
        pinned: &[usize],
        rows: &mut crate::flow::system::Rows,
    ) -> usize {
        assert!(
            self.mixes_samples(),
            "dense rows are for plans that mix samples"
        );
        let p = self.plan.num_params();
        rows.reset(pinned.len(), p);
        let n = self.parts[0].cols();
        let wmax = self.plan.max_width();
        let mut b = std::mem::take(&mut self.g);
        for buf in [&mut b.zbar, &mut b.mid, &mut b.hbar] {
            buf.reset(n, wmax);
        }
        for (&e, row) in pinned.iter().zip(rows.iter_mut()) {
            let (s, i, u) = self.locate(e);
            b.zbar.restart(self.plan.stages[s].out);
            b.zbar.at(i)[u] = 1.0;
            self.row_down(theta, pieces, s, &mut b, row);
        }
        self.g = b;
        pinned.len()
    }

    /// One row: from Z̄ of stage s in `b.zbar` down to the first stage.
    fn row_down(&self, theta: &[f64], pieces: &[u16], s: usize, b: &mut Buffers, row: &mut [f64]) {
        let cx = self.ctx(theta, pieces, &[]);
        let part = &self.parts[0];
        let d = self.plan.in_dim();
        for t in (0..=s).rev() {
            let st = &self.plan.stages[t];
            let (w, _, _) = st.params(theta);
            let src: &[f64] = match (t, cx.prop(t)) {
                (0, _) => &self.x[..part.cols() * d],
                (_, Prop::Before) => &part.propagated[t],
                _ => &part.h[t - 1],
            };
            let (gw, gb, _) = st.params_mut(row);
            for &j in &b.zbar.nodes {
                for (g, v) in gb.iter_mut().zip(b.zbar.col(j)) {
                    *g += v;
                }
            }
            // The cotangent at W's output: Z̄, or Âᵀ Z̄ when Â follows W.
            let after = cx.prop(t) == Prop::After;
            if after {
                propagate_t(&mut b.mid, &b.zbar, &cx);
            }
            let wbar = if after { &b.mid } else { &b.zbar };
            weight_part(gw, wbar, src, st.inp);
            if t == 0 {
                break;
            }
            // H̄ of stage t − 1: Wᵀ (that cotangent), then Âᵀ when Â precedes W.
            if cx.prop(t) == Prop::Before {
                input_part(&mut b.mid, &b.zbar, w, st.inp);
                propagate_t(&mut b.hbar, &b.mid, &cx);
            } else {
                input_part(&mut b.hbar, wbar, w, st.inp);
            }
            // Z̄ of stage t − 1 = H̄ ⊙ σ'(z), and PReLU's slope part Σ H̄ ⊙ ∂σ/∂a (for a
            // σ linear on each piece, σ' is the piece's slope and ∂σ/∂a is z on PReLU's
            // negative piece, as in the gradient's reverse pass).
            let prev = &self.plan.stages[t - 1];
            let a = prev.params(theta).2.unwrap_or(0.0);
            let sl = cx.slopes(a);
            let off = cx.offsets[t - 1];
            let z = &part.z[t - 1];
            b.zbar.restart(prev.out);
            let mut ga = 0.0;
            for &j in &b.hbar.nodes {
                let e0 = off + j * prev.out;
                let zj = &z[j * prev.out..(j + 1) * prev.out];
                let dst = b.zbar.at(j);
                let pairs = dst.iter_mut().zip(b.hbar.col(j)).enumerate();
                if cx.linear {
                    for (v, (d, &hv)) in pairs {
                        let e = e0 + v;
                        *d = hv * cx.factor(e, &sl);
                        if prev.prelu && cx.pin_of[e] == FREE && cx.pieces[e] == 0 {
                            ga += hv * zj[v];
                        }
                    }
                } else {
                    for (v, (d, &hv)) in pairs {
                        let (_, dv, da) = cx.sigma(e0 + v, zj[v], a);
                        ga += hv * da;
                        *d = hv * dv;
                    }
                }
            }
            if let (_, _, Some(g)) = prev.params_mut(row) {
                *g += ga;
            }
        }
        b.zbar.restart(0);
        b.mid.restart(0);
        b.hbar.restart(0);
    }
}
