//! The affine layer y = W x + b (PyTorch's `nn.Linear`): W is out×in, stored row-major in θ,
//! followed by b — the layout of `Linear.weight` and `Linear.bias`, so saved tensors load in
//! PyTorch unchanged. Polynomial (bilinear) in its input and parameters, as eq. (1) requires.

use super::{no_tape, Batch, Layer, ParamSpec, Tape};
use crate::batch::par;
use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef};

#[derive(Clone, Debug)]
pub struct Dense {
    pub inp: usize,
    pub out: usize,
}

impl Dense {
    pub fn new(inp: usize, out: usize) -> Self {
        Self { inp, out }
    }
    fn split<'a>(&self, theta: &'a [f64]) -> (MatRef<'a, f64>, &'a [f64]) {
        let (w, b) = theta.split_at(self.inp * self.out);
        (MatRef::from_row_major_slice(w, self.out, self.inp), b)
    }
}

impl Layer for Dense {
    fn describe(&self) -> String {
        format!("dense {} → {}", self.inp, self.out)
    }
    fn in_dim(&self) -> usize {
        self.inp
    }
    fn out_dim(&self) -> usize {
        self.out
    }
    fn param_specs(&self) -> Vec<ParamSpec> {
        ParamSpec::weight_and_bias(vec![self.out, self.inp], self.inp)
    }
    fn num_params(&self) -> usize {
        self.out * (self.inp + 1)
    }

    fn forward(&self, theta: &[f64], x: &Batch) -> (Batch, Tape) {
        let (w, b) = self.split(theta);
        let mut y = Batch::zeros(self.out, x.n());
        matmul(y.mat_mut(), Accum::Replace, w, x.mat(), 1.0, par());
        y.add_to_columns(b);
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

    /// Structured NTK term (Novak et al. 2022): per column c the weight cotangent is ȳ_c x_cᵀ and
    /// the bias cotangent ȳ_c, so ⟨θ̄_c, θ̄_c'⟩ = (ȳ_c·ȳ_c')(x_c·x_c' + 1). Computed in column tiles
    /// so the extra memory is N × 256, not N × N. Only the lower triangle (c ≥ c') is written.
    fn vjp_gram(
        &self,
        theta: &[f64],
        x: &Batch,
        _: &Tape,
        y_bar: &Batch,
        reps: usize,
        gram: &mut faer::Mat<f64>,
    ) -> Batch {
        let (w, _) = self.split(theta);
        let big_n = y_bar.n();
        let mut x_bar = Batch::zeros(self.inp, big_n);
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
        // Lower triangle only (rows c ≥ the tile's first column): the caller mirrors it.
        const TILE: usize = 256;
        let mut a = faer::Mat::<f64>::zeros(big_n, TILE);
        let kk = k.as_ref();
        for c0 in (0..big_n).step_by(TILE) {
            let t = TILE.min(big_n - c0);
            let rows = big_n - c0;
            let mut at = a.as_mut().submatrix_mut(0, 0, rows, t);
            let yt = y_bar.mat().subcols(c0, t);
            let yr = y_bar.mat().subcols(c0, rows);
            matmul(at.as_mut(), Accum::Replace, yr.transpose(), yt, 1.0, par());
            let at = at.as_ref();
            for j in 0..t {
                let cj = c0 + j;
                let kj = kk
                    .col(cj / reps)
                    .try_as_col_major()
                    .expect("contiguous column")
                    .as_slice();
                let src = at
                    .col(j)
                    .try_as_col_major()
                    .expect("contiguous column")
                    .as_slice();
                let dst = gram
                    .as_mut()
                    .col_mut(cj)
                    .try_as_col_major_mut()
                    .expect("contiguous column")
                    .as_slice_mut();
                for (r, (d, s)) in dst[c0 + j..].iter_mut().zip(&src[j..]).enumerate() {
                    *d += s * (kj[(c0 + j + r) / reps] + 1.0);
                }
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
        y_dot.add_to_columns(b_dot);
        y_dot
    }
}
