//! The depthwise 2-D convolution: PyTorch's `nn.Conv2d(C, C, (kh, kw), stride, padding,
//! groups = C)`, one kh × kw filter per channel, y_c = x_c ⋆ W_c + b_c with zero padding.
//! Bilinear in input and parameters (a polynomial layer of eq. (1)).
//!
//! θ holds `weight` [C, 1, kh, kw] row-major, then `bias` [C] — the state-dict layout of a
//! grouped `Conv2d`, so saved tensors load in PyTorch unchanged. With only kh·kw multiplies per
//! output there is nothing for a matrix product to win, so this is direct loops, parallel over
//! samples (outputs, input cotangents) or channels (parameter cotangents), which keeps every sum
//! in a fixed order.

use super::image::{hw, kernel_label, output_side, per_column_gram, ImageShape};
use super::{no_tape, Batch, Layer, ParamSpec, Tape};
use rayon::prelude::*;

/// `nn.Conv2d(channels, channels, (kh, kw), stride, padding, groups=channels)` on
/// channels × in_h × in_w images.
#[derive(Clone, Debug)]
pub struct DepthwiseConv2d {
    pub channels: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub padding: usize,
    pub in_h: usize,
    pub in_w: usize,
}

impl DepthwiseConv2d {
    /// Panics on impossible shapes: zero channels, kernel or stride, or an output side < 1.
    pub fn new(
        channels: usize,
        kh: usize,
        kw: usize,
        stride: usize,
        padding: usize,
        in_h: usize,
        in_w: usize,
    ) -> Self {
        let layer = Self {
            channels,
            kh,
            kw,
            stride,
            padding,
            in_h,
            in_w,
        };
        assert!(
            channels >= 1,
            "DepthwiseConv2d: channels must be at least 1"
        );
        layer.output_shape();
        layer
    }
    pub fn input_shape(&self) -> ImageShape {
        ImageShape::new(self.channels, self.in_h, self.in_w)
    }
    /// channels × H' × W' with H' = (H + 2p − kh)/stride + 1 (floor), likewise W'.
    pub fn output_shape(&self) -> ImageShape {
        let what = "DepthwiseConv2d";
        ImageShape::new(
            self.channels,
            output_side(
                what,
                "height",
                self.in_h,
                self.kh,
                self.stride,
                self.padding,
            ),
            output_side(what, "width", self.in_w, self.kw, self.stride, self.padding),
        )
    }
    fn taps(&self) -> usize {
        self.kh * self.kw
    }
    fn n_weights(&self) -> usize {
        self.channels * self.taps()
    }

    /// Visits, for channel c, every (output index within the channel plane, tap index, input
    /// index within the channel plane) triple whose input pixel lies inside the image.
    #[inline]
    fn for_each_tap(&self, o: ImageShape, mut f: impl FnMut(usize, usize, usize)) {
        let (s, p) = (self.stride as isize, self.padding as isize);
        let (h, w) = (self.in_h as isize, self.in_w as isize);
        for oh in 0..o.h {
            for ow in 0..o.w {
                let q = oh * o.w + ow;
                for dh in 0..self.kh {
                    let ih = (oh as isize) * s - p + dh as isize;
                    if ih < 0 || ih >= h {
                        continue;
                    }
                    for dw in 0..self.kw {
                        let iw = (ow as isize) * s - p + dw as isize;
                        if iw >= 0 && iw < w {
                            f(q, dh * self.kw + dw, (ih * w + iw) as usize);
                        }
                    }
                }
            }
        }
    }

    /// y += depthwise(x, W) on whole batches (no bias).
    fn add_conv(&self, w: &[f64], x: &Batch, y: &mut Batch) {
        let (o, i) = (self.output_shape(), self.input_shape());
        let (op, ip, t) = (o.plane(), i.plane(), self.taps());
        y.as_mut_slice()
            .par_chunks_mut(o.len())
            .zip(x.as_slice().par_chunks(i.len()))
            .for_each(|(yc, xc)| {
                for c in 0..self.channels {
                    let (yp, xp) = (&mut yc[c * op..(c + 1) * op], &xc[c * ip..(c + 1) * ip]);
                    let wc = &w[c * t..(c + 1) * t];
                    self.for_each_tap(o, |q, k, a| yp[q] += wc[k] * xp[a]);
                }
            });
    }

    fn add_bias(&self, y: &mut Batch, b: &[f64]) {
        let op = self.output_shape().plane();
        y.as_mut_slice()
            .par_chunks_mut(op * self.channels)
            .for_each(|yc| {
                for (plane, &bc) in yc.chunks_mut(op).zip(b) {
                    plane.iter_mut().for_each(|v| *v += bc);
                }
            });
    }

    /// x̄ = (∂y/∂x)ᵀ ȳ (independent of x, so any number of columns works).
    fn input_cotangent(&self, w: &[f64], y_bar: &Batch) -> Batch {
        let (o, i) = (self.output_shape(), self.input_shape());
        let (op, ip, t) = (o.plane(), i.plane(), self.taps());
        let mut x_bar = Batch::zeros(i.len(), y_bar.n());
        x_bar
            .as_mut_slice()
            .par_chunks_mut(i.len())
            .zip(y_bar.as_slice().par_chunks(o.len()))
            .for_each(|(xc, yc)| {
                for c in 0..self.channels {
                    let (xp, yp) = (&mut xc[c * ip..(c + 1) * ip], &yc[c * op..(c + 1) * op]);
                    let wc = &w[c * t..(c + 1) * t];
                    self.for_each_tap(o, |q, k, a| xp[a] += wc[k] * yp[q]);
                }
            });
        x_bar
    }

    /// Channel c's parameter cotangent of one sample: W̄_c (taps) and b̄_c, added.
    fn add_channel_cotangent(&self, c: usize, x: &[f64], y_bar: &[f64], g: &mut [f64]) {
        let (o, i) = (self.output_shape(), self.input_shape());
        let (op, ip, t) = (o.plane(), i.plane(), self.taps());
        let (xp, yp) = (&x[c * ip..(c + 1) * ip], &y_bar[c * op..(c + 1) * op]);
        let (gw, gb) = g.split_at_mut(t);
        self.for_each_tap(o, |q, k, a| gw[k] += yp[q] * xp[a]);
        gb[0] += yp.iter().sum::<f64>();
    }

    /// θ̄ += (∂y/∂θ)ᵀ ȳ, in parallel over channels, samples summed in order.
    fn add_param_cotangent(&self, x: &Batch, y_bar: &Batch, theta_bar: &mut [f64]) {
        let t = self.taps();
        let (gw, gb) = theta_bar.split_at_mut(self.n_weights());
        gw.par_chunks_mut(t)
            .zip(gb.par_iter_mut())
            .enumerate()
            .for_each(|(c, (gwc, gbc))| {
                let mut g = vec![0.0; t + 1];
                for i in 0..x.n() {
                    self.add_channel_cotangent(c, x.col(i), y_bar.col(i), &mut g);
                }
                for (d, s) in gwc.iter_mut().zip(&g) {
                    *d += s;
                }
                *gbc += g[t];
            });
    }
}

impl Layer for DepthwiseConv2d {
    fn describe(&self) -> String {
        let o = self.output_shape();
        format!(
            "depthwise conv {} {} s{} p{} ({} → {})",
            self.channels,
            kernel_label(self.kh, self.kw),
            self.stride,
            self.padding,
            hw(self.in_h, self.in_w),
            hw(o.h, o.w)
        )
    }
    fn in_dim(&self) -> usize {
        self.input_shape().len()
    }
    fn out_dim(&self) -> usize {
        self.output_shape().len()
    }
    fn param_specs(&self) -> Vec<ParamSpec> {
        ParamSpec::weight_and_bias(vec![self.channels, 1, self.kh, self.kw], self.taps())
    }
    fn num_params(&self) -> usize {
        self.n_weights() + self.channels
    }

    fn forward(&self, theta: &[f64], x: &Batch) -> (Batch, Tape) {
        let (w, b) = theta.split_at(self.n_weights());
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
        self.add_param_cotangent(x, y_bar, theta_bar);
        self.input_cotangent(&theta[..self.n_weights()], y_bar)
    }

    fn jvp(&self, theta: &[f64], x: &Batch, _: &Tape, x_dot: &Batch, theta_dot: &[f64]) -> Batch {
        let nw = self.n_weights();
        let mut y_dot = Batch::zeros(self.out_dim(), x.n());
        self.add_conv(&theta[..nw], x_dot, &mut y_dot);
        self.add_conv(&theta_dot[..nw], x, &mut y_dot);
        self.add_bias(&mut y_dot, &theta_dot[nw..]);
        y_dot
    }

    /// NTK term: each column's parameter cotangent comes from its own sample alone (see
    /// [`per_column_gram`]); the θ̄ layout is [W̄ (C·taps), b̄ (C)].
    fn vjp_gram(
        &self,
        theta: &[f64],
        x: &Batch,
        _: &Tape,
        y_bar: &Batch,
        reps: usize,
        gram: &mut faer::Mat<f64>,
    ) -> Batch {
        let (nw, t) = (self.n_weights(), self.taps());
        per_column_gram(self.num_params(), x, y_bar, reps, gram, |xi, yc, g| {
            let (gw, gb) = g.split_at_mut(nw);
            let mut buf = vec![0.0; t + 1];
            for c in 0..self.channels {
                buf.iter_mut().for_each(|v| *v = 0.0);
                self.add_channel_cotangent(c, xi, yc, &mut buf);
                gw[c * t..(c + 1) * t].copy_from_slice(&buf[..t]);
                gb[c] = buf[t];
            }
        });
        self.input_cotangent(&theta[..nw], y_bar)
    }
}
