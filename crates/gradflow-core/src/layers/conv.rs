//! The 2-D convolution y = conv(x, W) + b (PyTorch's `nn.Conv2d` with groups = 1, zero padding,
//! equal stride and padding on both axes). Bilinear in its input and parameters, so a polynomial
//! layer in the sense of eq. (1).
//!
//! θ holds `weight` [out, in, kh, kw] row-major, then `bias` [out] — `Conv2d.weight` and
//! `Conv2d.bias` exactly, so saved tensors load in PyTorch unchanged (no `bias` for
//! `bias=False`, [`Conv2d::without_bias`]); groups are [`super::GroupedConv2d`]. Images are flattened
//! (c, h, w) row-major (see [`super::image`]).
//!
//! Implementation: im2col. For each sample the K = in·kh·kw input values under the kernel at
//! each of the P = H'·W' output positions form a column of a K × P matrix; the convolution is the
//! product Wmat (out × K) · cols, done for a chunk of samples at once (K × chunk·P) with faer.
//! The vjp uses the transposed products (W̄ᵀ += cols · Ȳᵀ, cols̄ = Wᵀ Ȳ) and col2im, the
//! adjoint of im2col, which scatter-adds the column cotangents back onto the input pixels.

use super::image::{hw, kernel_label, output_side, per_column_gram, ImageShape};
use super::{no_tape, Batch, Layer, ParamSpec, Tape};
use crate::batch::par;
use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

/// Upper bound on the entries of one chunk's im2col matrix (K × chunk·P): 4 Mi f64 = 32 MiB.
const COLS_BUDGET: usize = 1 << 22;

/// `nn.Conv2d(in_ch, out_ch, (kh, kw), stride, padding)` on in_ch × in_h × in_w images.
#[derive(Clone, Debug)]
pub struct Conv2d {
    pub in_ch: usize,
    pub out_ch: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub padding: usize,
    pub in_h: usize,
    pub in_w: usize,
    /// Whether b is there (`Conv2d(bias=True)`, the default).
    pub bias: bool,
}

impl Conv2d {
    /// Panics on impossible shapes: zero channels, kernel or stride, or an output side < 1.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        in_ch: usize,
        out_ch: usize,
        kh: usize,
        kw: usize,
        stride: usize,
        padding: usize,
        in_h: usize,
        in_w: usize,
    ) -> Self {
        let layer = Self {
            in_ch,
            out_ch,
            kh,
            kw,
            stride,
            padding,
            in_h,
            in_w,
            bias: true,
        };
        assert!(
            in_ch >= 1 && out_ch >= 1,
            "Conv2d: channels must be at least 1 (got {in_ch} → {out_ch})"
        );
        layer.output_shape();
        layer
    }
    /// A square kernel k × k.
    pub fn square(
        in_ch: usize,
        out_ch: usize,
        k: usize,
        stride: usize,
        padding: usize,
        in_h: usize,
        in_w: usize,
    ) -> Self {
        Self::new(in_ch, out_ch, k, k, stride, padding, in_h, in_w)
    }
    /// The same convolution without bias (`bias=False`): θ holds only the weight.
    pub fn without_bias(self) -> Self {
        Self {
            bias: false,
            ..self
        }
    }
    pub fn input_shape(&self) -> ImageShape {
        ImageShape::new(self.in_ch, self.in_h, self.in_w)
    }
    /// out_ch × H' × W' with H' = (H + 2p − kh)/stride + 1 (floor), likewise W'.
    pub fn output_shape(&self) -> ImageShape {
        ImageShape::new(
            self.out_ch,
            output_side(
                "Conv2d",
                "height",
                self.in_h,
                self.kh,
                self.stride,
                self.padding,
            ),
            output_side(
                "Conv2d",
                "width",
                self.in_w,
                self.kw,
                self.stride,
                self.padding,
            ),
        )
    }
    /// K = in·kh·kw, the length of one im2col column (and the fan-in).
    fn k_len(&self) -> usize {
        self.in_ch * self.kh * self.kw
    }
    fn n_weights(&self) -> usize {
        self.out_ch * self.k_len()
    }
    /// W as an out × K matrix (row-major in θ) and b (empty without bias).
    fn split<'a>(&self, theta: &'a [f64]) -> (MatRef<'a, f64>, &'a [f64]) {
        let (w, b) = theta.split_at(self.n_weights());
        (
            MatRef::from_row_major_slice(w, self.out_ch, self.k_len()),
            b,
        )
    }
    /// Samples per chunk so that the chunk's im2col matrix stays within [`COLS_BUDGET`].
    fn chunk(&self, positions: usize) -> usize {
        (COLS_BUDGET / (self.k_len() * positions).max(1)).max(1)
    }

    /// One sample's im2col matrix, K × P column-major: entry (k, pos) at pos·K + k, with
    /// k = (c·kh + dh)·kw + dw (the order of the weight's trailing [in, kh, kw]) and
    /// pos = oh·W' + ow; padded positions are zero.
    fn im2col(&self, o: ImageShape, x: &[f64], cols: &mut [f64]) {
        let (s, p) = (self.stride as isize, self.padding as isize);
        let (h, w) = (self.in_h as isize, self.in_w as isize);
        let mut it = cols.iter_mut();
        for oh in 0..o.h as isize {
            for ow in 0..o.w as isize {
                for c in 0..self.in_ch {
                    let plane = &x[c * self.in_h * self.in_w..(c + 1) * self.in_h * self.in_w];
                    for dh in 0..self.kh as isize {
                        let ih = oh * s - p + dh;
                        for dw in 0..self.kw as isize {
                            let iw = ow * s - p + dw;
                            let v = if ih >= 0 && ih < h && iw >= 0 && iw < w {
                                plane[(ih * w + iw) as usize]
                            } else {
                                0.0
                            };
                            *it.next().expect("im2col buffer too short") = v;
                        }
                    }
                }
            }
        }
    }

    /// The adjoint of [`Self::im2col`]: x̄ += col2im(cols̄).
    fn col2im_add(&self, o: ImageShape, cols: &[f64], x_bar: &mut [f64]) {
        let (s, p) = (self.stride as isize, self.padding as isize);
        let (h, w) = (self.in_h as isize, self.in_w as isize);
        let mut it = cols.iter();
        for oh in 0..o.h as isize {
            for ow in 0..o.w as isize {
                for c in 0..self.in_ch {
                    let plane =
                        &mut x_bar[c * self.in_h * self.in_w..(c + 1) * self.in_h * self.in_w];
                    for dh in 0..self.kh as isize {
                        let ih = oh * s - p + dh;
                        for dw in 0..self.kw as isize {
                            let iw = ow * s - p + dw;
                            let v = *it.next().expect("col2im buffer too short");
                            if ih >= 0 && ih < h && iw >= 0 && iw < w {
                                plane[(ih * w + iw) as usize] += v;
                            }
                        }
                    }
                }
            }
        }
    }

    /// The im2col matrices of samples i0..i0+nc side by side: K × nc·P, column-major.
    fn cols_chunk(&self, o: ImageShape, x: &Batch, i0: usize, nc: usize, cols: &mut Vec<f64>) {
        let kp = self.k_len() * o.plane();
        cols.resize(kp * nc, 0.0);
        cols[..kp * nc]
            .par_chunks_mut(kp)
            .enumerate()
            .for_each(|(i, c)| self.im2col(o, x.col(i0 + i), c));
    }

    /// y += conv(x, W) (no bias), chunk by chunk: Yᵀ (nc·P × out) = colsᵀ Wᵀ, then each sample's
    /// block is copied into its (out, h', w') layout.
    fn add_conv(&self, w: MatRef<'_, f64>, x: &Batch, y: &mut Batch) {
        let o = self.output_shape();
        let (k, pp, out) = (self.k_len(), o.plane(), self.out_ch);
        let chunk = self.chunk(pp);
        let mut cols = Vec::new();
        let mut yt = Vec::new();
        for i0 in (0..x.n()).step_by(chunk) {
            let nc = chunk.min(x.n() - i0);
            let rows = nc * pp;
            self.cols_chunk(o, x, i0, nc, &mut cols);
            yt.resize(rows * out, 0.0);
            let cm = MatRef::from_column_major_slice(&cols[..k * rows], k, rows);
            let ym = MatMut::from_column_major_slice_mut(&mut yt[..rows * out], rows, out);
            matmul(
                ym,
                Accum::Replace,
                cm.transpose(),
                w.transpose(),
                1.0,
                par(),
            );
            let yt = &yt[..rows * out];
            y.as_mut_slice()[i0 * o.len()..(i0 + nc) * o.len()]
                .par_chunks_mut(o.len())
                .enumerate()
                .for_each(|(i, yc)| {
                    for (oc, dst) in yc.chunks_mut(pp).enumerate() {
                        let src = &yt[oc * rows + i * pp..oc * rows + (i + 1) * pp];
                        for (d, s) in dst.iter_mut().zip(src) {
                            *d += s;
                        }
                    }
                });
        }
    }

    /// Ȳᵀ (nc·P × out) of samples i0..i0+nc: entry (i·P + pos, o) = ȳ_{i0+i}[o·P + pos].
    fn y_bar_t(&self, o: ImageShape, y_bar: &Batch, i0: usize, nc: usize, yt: &mut Vec<f64>) {
        let (pp, out) = (o.plane(), self.out_ch);
        let rows = nc * pp;
        yt.resize(rows * out, 0.0);
        for oc in 0..out {
            for i in 0..nc {
                yt[oc * rows + i * pp..oc * rows + (i + 1) * pp]
                    .copy_from_slice(&y_bar.col(i0 + i)[oc * pp..(oc + 1) * pp]);
            }
        }
    }

    /// x̄ = (∂y/∂x)ᵀ ȳ = col2im(Wᵀ Ȳ); it does not depend on x, so any number of columns works.
    fn input_cotangent(&self, w: MatRef<'_, f64>, y_bar: &Batch) -> Batch {
        let o = self.output_shape();
        let (k, pp) = (self.k_len(), o.plane());
        let in_len = self.input_shape().len();
        let n = y_bar.n();
        let mut x_bar = Batch::zeros(in_len, n);
        let chunk = self.chunk(pp);
        let (mut yt, mut cols) = (Vec::new(), Vec::new());
        for i0 in (0..n).step_by(chunk) {
            let nc = chunk.min(n - i0);
            let rows = nc * pp;
            self.y_bar_t(o, y_bar, i0, nc, &mut yt);
            cols.resize(k * rows, 0.0);
            let ym = MatRef::from_column_major_slice(&yt[..rows * self.out_ch], rows, self.out_ch);
            let cm = MatMut::from_column_major_slice_mut(&mut cols[..k * rows], k, rows);
            matmul(
                cm,
                Accum::Replace,
                w.transpose(),
                ym.transpose(),
                1.0,
                par(),
            );
            let cols = &cols[..k * rows];
            x_bar.as_mut_slice()[i0 * in_len..(i0 + nc) * in_len]
                .par_chunks_mut(in_len)
                .enumerate()
                .for_each(|(i, xb)| self.col2im_add(o, &cols[i * k * pp..(i + 1) * k * pp], xb));
        }
        x_bar
    }

    /// θ̄ += (∂y/∂θ)ᵀ ȳ: W̄ᵀ (K × out, i.e. W̄ row-major) += cols · Ȳᵀ, b̄_o += Σ ȳ over channel o.
    fn add_param_cotangent(&self, x: &Batch, y_bar: &Batch, theta_bar: &mut [f64]) {
        let o = self.output_shape();
        let (k, pp, out) = (self.k_len(), o.plane(), self.out_ch);
        let chunk = self.chunk(pp);
        let (gw, gb) = theta_bar.split_at_mut(self.n_weights());
        let mut gw = MatMut::from_column_major_slice_mut(gw, k, out);
        let (mut yt, mut cols) = (Vec::new(), Vec::new());
        for i0 in (0..x.n()).step_by(chunk) {
            let nc = chunk.min(x.n() - i0);
            let rows = nc * pp;
            self.cols_chunk(o, x, i0, nc, &mut cols);
            self.y_bar_t(o, y_bar, i0, nc, &mut yt);
            let cm = MatRef::from_column_major_slice(&cols[..k * rows], k, rows);
            let ym = MatRef::from_column_major_slice(&yt[..rows * out], rows, out);
            matmul(gw.as_mut(), Accum::Add, cm, ym, 1.0, par());
            // gb is empty without bias.
            for (oc, g) in gb.iter_mut().enumerate() {
                *g += yt[oc * rows..(oc + 1) * rows].iter().sum::<f64>();
            }
        }
    }

    /// y += b per channel; nothing without bias.
    fn add_bias(&self, y: &mut Batch, b: &[f64]) {
        if !self.bias {
            return;
        }
        let pp = self.output_shape().plane();
        y.as_mut_slice()
            .par_chunks_mut(pp * self.out_ch)
            .for_each(|yc| {
                for (plane, &bo) in yc.chunks_mut(pp).zip(b) {
                    plane.iter_mut().for_each(|v| *v += bo);
                }
            });
    }
}

impl Layer for Conv2d {
    fn describe(&self) -> String {
        let o = self.output_shape();
        format!(
            "conv {}→{} {} s{} p{} ({} → {}){}",
            self.in_ch,
            self.out_ch,
            kernel_label(self.kh, self.kw),
            self.stride,
            self.padding,
            hw(self.in_h, self.in_w),
            hw(o.h, o.w),
            if self.bias { "" } else { " no bias" }
        )
    }
    fn in_dim(&self) -> usize {
        self.input_shape().len()
    }
    fn out_dim(&self) -> usize {
        self.output_shape().len()
    }
    fn param_specs(&self) -> Vec<ParamSpec> {
        let mut specs = ParamSpec::weight_and_bias(
            vec![self.out_ch, self.in_ch, self.kh, self.kw],
            self.k_len(),
        );
        specs.truncate(if self.bias { 2 } else { 1 });
        specs
    }
    fn num_params(&self) -> usize {
        self.n_weights() + if self.bias { self.out_ch } else { 0 }
    }

    fn forward(&self, theta: &[f64], x: &Batch) -> (Batch, Tape) {
        let (w, b) = self.split(theta);
        let mut y = Batch::zeros(self.out_dim(), x.n());
        self.add_conv(w, x, &mut y);
        self.add_bias(&mut y, b);
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
        self.add_param_cotangent(x, y_bar, theta_bar);
        self.input_cotangent(w, y_bar)
    }

    fn jvp(&self, theta: &[f64], x: &Batch, _: &Tape, x_dot: &Batch, theta_dot: &[f64]) -> Batch {
        let (w, _) = self.split(theta);
        let (w_dot, b_dot) = self.split(theta_dot);
        let mut y_dot = Batch::zeros(self.out_dim(), x.n());
        self.add_conv(w, x_dot, &mut y_dot);
        self.add_conv(w_dot, x, &mut y_dot);
        self.add_bias(&mut y_dot, b_dot);
        y_dot
    }

    /// NTK term: column c's parameter cotangent depends only on its own sample i = c / reps —
    /// W̄ᵀ_c = cols_i · Ȳ_cᵀ (the cotangent column read as P × out), b̄_c = channel sums of ȳ_c —
    /// so each is one single-sample product (in parallel over columns), gathered into P with
    /// PᵀP added to the Gram matrix. The input cotangents of all N columns are one batched
    /// col2im(Wᵀ Ȳ), which does not need x.
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
        let o = self.output_shape();
        let (k, pp, out) = (self.k_len(), o.plane(), self.out_ch);
        per_column_gram(self.num_params(), x, y_bar, reps, gram, |xi, yc, g| {
            let mut cols = vec![0.0; k * pp];
            self.im2col(o, xi, &mut cols);
            let (gw, gb) = g.split_at_mut(k * out);
            let cm = MatRef::from_column_major_slice(&cols, k, pp);
            let ym = MatRef::from_column_major_slice(yc, pp, out);
            let gw = MatMut::from_column_major_slice_mut(gw, k, out);
            matmul(gw, Accum::Replace, cm, ym, 1.0, Par::Seq);
            // gb is empty without bias.
            for (g, plane) in gb.iter_mut().zip(yc.chunks(pp)) {
                *g = plane.iter().sum();
            }
        });
        self.input_cotangent(w, y_bar)
    }
}
