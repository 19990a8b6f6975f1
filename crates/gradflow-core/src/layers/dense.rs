//! The affine layer y = W x + b (PyTorch's `nn.Linear`): W is out×in, stored row-major in θ,
//! followed by b — the layout of `Linear.weight` and `Linear.bias`, so saved tensors load in
//! PyTorch unchanged. Polynomial (bilinear) in its input and parameters, as eq. (1) requires.
//! `Linear(bias=False)` is the same layer without b ([`Dense::without_bias`]).

use super::{no_tape, Affine, Batch, Layer, ParamSpec, Structure, Tape};
use crate::batch::par;
use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef};
use rayon::prelude::*;

#[derive(Clone, Debug)]
pub struct Dense {
    pub inp: usize,
    pub out: usize,
    /// Whether b is there (`Linear(bias=True)`, the default).
    pub bias: bool,
}

impl Dense {
    pub fn new(inp: usize, out: usize) -> Self {
        Self {
            inp,
            out,
            bias: true,
        }
    }
    /// y = W x, PyTorch's `Linear(inp, out, bias=False)`: θ holds only W.
    pub fn without_bias(inp: usize, out: usize) -> Self {
        Self {
            bias: false,
            ..Self::new(inp, out)
        }
    }
    /// W and b (empty without bias).
    fn split<'a>(&self, theta: &'a [f64]) -> (MatRef<'a, f64>, &'a [f64]) {
        let (w, b) = theta.split_at(self.inp * self.out);
        (MatRef::from_row_major_slice(w, self.out, self.inp), b)
    }
}

impl Layer for Dense {
    fn describe(&self) -> String {
        let bias = if self.bias { "" } else { " (no bias)" };
        format!("dense {} → {}{bias}", self.inp, self.out)
    }
    fn in_dim(&self) -> usize {
        self.inp
    }
    fn out_dim(&self) -> usize {
        self.out
    }
    fn param_specs(&self) -> Vec<ParamSpec> {
        let mut specs = ParamSpec::weight_and_bias(vec![self.out, self.inp], self.inp);
        specs.truncate(if self.bias { 2 } else { 1 });
        specs
    }
    fn num_params(&self) -> usize {
        self.out * (self.inp + usize::from(self.bias))
    }
    fn structure(&self) -> Structure<'_> {
        let mut affine = Affine::weight_then_bias(self.inp, self.out);
        if !self.bias {
            affine.bias = None;
        }
        Structure::Affine(affine)
    }

    fn forward(&self, theta: &[f64], x: &Batch) -> (Batch, Tape) {
        let (w, b) = self.split(theta);
        let mut y = Batch::zeros(self.out, x.n());
        matmul(y.mat_mut(), Accum::Replace, w, x.mat(), 1.0, par());
        if self.bias {
            y.add_to_columns(b);
        }
        (y, no_tape())
    }

    fn vjp(
        &self,
        theta: &[f64],
        x: &Batch,
        _: &Tape,
        y_bar: &Batch,
        theta_bar: &mut [f64],
    ) -> Batch {
        let (w, _) = self.split(theta);
        let mut x_bar = Batch::zeros(self.inp, x.n());
        matmul(
            x_bar.mat_mut(),
            Accum::Replace,
            w.transpose(),
            y_bar.mat(),
            1.0,
            par(),
        );
        let (gw, gb) = theta_bar.split_at_mut(self.inp * self.out);
        let gw = MatMut::from_row_major_slice_mut(gw, self.out, self.inp);
        matmul(gw, Accum::Add, y_bar.mat(), x.mat().transpose(), 1.0, par());
        for i in 0..y_bar.n() {
            for (g, v) in gb.iter_mut().zip(y_bar.col(i)) {
                *g += v;
            }
        }
        x_bar
    }

    fn jvp(&self, theta: &[f64], x: &Batch, _: &Tape, x_dot: &Batch, theta_dot: &[f64]) -> Batch {
        let (w, _) = self.split(theta);
        let (w_dot, b_dot) = self.split(theta_dot);
        let mut y_dot = Batch::zeros(self.out, x.n());
        matmul(y_dot.mat_mut(), Accum::Replace, w, x_dot.mat(), 1.0, par());
        matmul(y_dot.mat_mut(), Accum::Add, w_dot, x.mat(), 1.0, par());
        if self.bias {
            y_dot.add_to_columns(b_dot);
        }
        y_dot
    }
}

/// The structured NTK term of an affine layer `a` (Novak et al. 2022), the default
/// [`Layer::vjp_gram`] of every layer whose structure is [`Structure::Affine`]: per column c the
/// weight cotangent is ȳ_c x_cᵀ and the bias cotangent ȳ_c, so
/// ⟨θ̄_c, θ̄_c'⟩ = (ȳ_c·ȳ_c')(x_c·x_c' + 1) (without the + 1 for a map without bias). Computed in
/// column tiles so the extra memory is N × 256, not N × N. Only the lower triangle (c ≥ c') is
/// written. `theta` is the layer's slice.
pub fn affine_vjp_gram(
    a: &Affine,
    theta: &[f64],
    x: &Batch,
    y_bar: &Batch,
    reps: usize,
    gram: &mut faer::Mat<f64>,
) -> Batch {
    let w = MatRef::from_row_major_slice(&theta[a.weight..a.weight + a.inp * a.out], a.out, a.inp);
    let with_bias = a.bias.is_some();
    let big_n = y_bar.n();
    let mut x_bar = Batch::zeros(a.inp, big_n);
    matmul(
        x_bar.mat_mut(),
        Accum::Replace,
        w.transpose(),
        y_bar.mat(),
        1.0,
        par(),
    );
    let mut k = faer::Mat::<f64>::zeros(x.n(), x.n());
    matmul(
        k.as_mut(),
        Accum::Replace,
        x.mat().transpose(),
        x.mat(),
        1.0,
        par(),
    );
    // Lower triangle only (rows c ≥ the tile's first column): the caller mirrors it. Column
    // tiles run in parallel; within one, each TILE × TILE block of ȲᵀȲ is formed in a small
    // buffer that stays in cache and applied at once, so H is read and written once per layer.
    const TILE: usize = 256;
    let kk = k.as_ref();
    let yb = y_bar.mat();
    gram.as_mut()
        .par_col_chunks_mut(TILE)
        .enumerate()
        .for_each(|(tile, mut g)| {
            let c0 = tile * TILE;
            let t = g.ncols();
            let mut a = faer::Mat::<f64>::zeros(TILE, t);
            let yt = yb.subcols(c0, t);
            for r0 in (c0..big_n).step_by(TILE) {
                let rows = TILE.min(big_n - r0);
                let mut ab = a.as_mut().subrows_mut(0, rows);
                matmul(
                    ab.as_mut(),
                    Accum::Replace,
                    yb.subcols(r0, rows).transpose(),
                    yt,
                    1.0,
                    faer::Par::Seq,
                );
                for j in 0..t {
                    let cj = c0 + j;
                    let kj = kk
                        .col(cj / reps)
                        .try_as_col_major()
                        .expect("contiguous column")
                        .as_slice();
                    let src = ab
                        .as_ref()
                        .col(j)
                        .try_as_col_major()
                        .expect("contiguous column")
                        .as_slice();
                    let dst = g
                        .as_mut()
                        .col_mut(j)
                        .subrows_mut(r0, rows)
                        .try_as_col_major_mut()
                        .expect("contiguous column")
                        .as_slice_mut();
                    // Rows r ≥ cj only, one sample (reps rows) at a time.
                    let first = cj.max(r0);
                    let mut r = first;
                    while r < r0 + rows {
                        let sample = r / reps;
                        let end = ((sample + 1) * reps).min(r0 + rows);
                        let f = if with_bias {
                            kj[sample] + 1.0
                        } else {
                            kj[sample]
                        };
                        for (d, s) in dst[r - r0..end - r0].iter_mut().zip(&src[r - r0..end - r0]) {
                            *d += s * f;
                        }
                        r = end;
                    }
                }
            }
        });
    x_bar
}
