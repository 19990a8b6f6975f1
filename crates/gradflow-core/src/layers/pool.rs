//! Pooling over k × k windows with a stride and no padding, channel by channel: PyTorch's
//! `nn.AvgPool2d(k, stride)` and `nn.MaxPool2d(k, stride)` (floor mode). Both are parameter-free.
//!
//! Average pooling is linear: y = mean of the window, so jvp = forward(ẋ) and the vjp spreads
//! ȳ/k² over the window. Max pooling is piecewise linear: on the region where the arg-max of
//! every window is fixed it is the selection y_q = x_{arg max}, so the tape keeps the arg-max
//! of every window (ties → the first index in row-major window order, as a strict `>` scan
//! gives; a NaN wins, so non-finite inputs propagate like PyTorch's), the jvp gathers ẋ there
//! and the vjp scatters ȳ there.

use super::image::{hw, output_side, ImageShape};
use super::{no_tape, tape_ref, Batch, Layer, Tape};
use rayon::prelude::*;

/// The window geometry shared by both pools.
#[derive(Clone, Copy, Debug)]
struct Pool {
    input: ImageShape,
    output: ImageShape,
    k: usize,
    stride: usize,
}

impl Pool {
    fn new(what: &str, channels: usize, k: usize, stride: usize, in_h: usize, in_w: usize) -> Self {
        assert!(channels >= 1, "{what}: channels must be at least 1");
        let output = ImageShape::new(
            channels,
            output_side(what, "height", in_h, k, stride, 0),
            output_side(what, "width", in_w, k, stride, 0),
        );
        Self {
            input: ImageShape::new(channels, in_h, in_w),
            output,
            k,
            stride,
        }
    }
    /// Offsets of a window's pixels from its top-left pixel, in row-major window order.
    fn offsets(&self) -> Vec<usize> {
        (0..self.k)
            .flat_map(|dh| (0..self.k).map(move |dw| dh * self.input.w + dw))
            .collect()
    }
    /// Calls f(output index, input index of the window's top-left pixel) for one sample.
    #[inline]
    fn for_each_window(&self, mut f: impl FnMut(usize, usize)) {
        let (i, o) = (self.input, self.output);
        for c in 0..o.c {
            for oh in 0..o.h {
                for ow in 0..o.w {
                    f(
                        o.index(c, oh, ow),
                        i.index(c, oh * self.stride, ow * self.stride),
                    );
                }
            }
        }
    }
    fn describe(&self, kind: &str) -> String {
        format!(
            "{kind} {} k{} s{} ({} → {})",
            self.input.c,
            self.k,
            self.stride,
            hw(self.input.h, self.input.w),
            hw(self.output.h, self.output.w)
        )
    }
}

/// `nn.AvgPool2d(k, stride)` on channels × in_h × in_w images (no padding, floor mode).
#[derive(Clone, Debug)]
pub struct AvgPool2d {
    pub channels: usize,
    pub k: usize,
    pub stride: usize,
    pub in_h: usize,
    pub in_w: usize,
}

impl AvgPool2d {
    /// Panics on impossible shapes (zero channels, kernel or stride; output side < 1).
    pub fn new(channels: usize, k: usize, stride: usize, in_h: usize, in_w: usize) -> Self {
        let layer = Self {
            channels,
            k,
            stride,
            in_h,
            in_w,
        };
        layer.pool();
        layer
    }
    fn pool(&self) -> Pool {
        Pool::new(
            "AvgPool2d",
            self.channels,
            self.k,
            self.stride,
            self.in_h,
            self.in_w,
        )
    }
    pub fn input_shape(&self) -> ImageShape {
        self.pool().input
    }
    /// channels × H' × W' with H' = (H − k)/stride + 1 (floor), likewise W'.
    pub fn output_shape(&self) -> ImageShape {
        self.pool().output
    }
    /// The linear map y = mean over each window.
    fn apply(&self, x: &Batch) -> Batch {
        let pool = self.pool();
        let off = pool.offsets();
        let scale = 1.0 / (self.k * self.k) as f64;
        let mut y = Batch::zeros(pool.output.len(), x.n());
        y.as_mut_slice()
            .par_chunks_mut(pool.output.len())
            .zip(x.as_slice().par_chunks(pool.input.len()))
            .for_each(|(yc, xc)| {
                pool.for_each_window(|q, a| {
                    yc[q] = off.iter().map(|d| xc[a + d]).sum::<f64>() * scale
                });
            });
        y
    }
}

impl Layer for AvgPool2d {
    fn describe(&self) -> String {
        self.pool().describe("avgpool")
    }
    fn in_dim(&self) -> usize {
        self.input_shape().len()
    }
    fn out_dim(&self) -> usize {
        self.output_shape().len()
    }
    fn forward(&self, _: &[f64], x: &Batch) -> (Batch, Tape) {
        (self.apply(x), no_tape())
    }
    fn vjp(&self, _: &[f64], _: &Batch, _: &Tape, y_bar: &Batch, _: &mut [f64]) -> Batch {
        let pool = self.pool();
        let off = pool.offsets();
        let scale = 1.0 / (self.k * self.k) as f64;
        let mut x_bar = Batch::zeros(pool.input.len(), y_bar.n());
        x_bar
            .as_mut_slice()
            .par_chunks_mut(pool.input.len())
            .zip(y_bar.as_slice().par_chunks(pool.output.len()))
            .for_each(|(xc, yc)| {
                pool.for_each_window(|q, a| {
                    let g = yc[q] * scale;
                    off.iter().for_each(|d| xc[a + d] += g);
                });
            });
        x_bar
    }
    fn jvp(&self, _: &[f64], _: &Batch, _: &Tape, x_dot: &Batch, _: &[f64]) -> Batch {
        self.apply(x_dot)
    }
}

/// `nn.MaxPool2d(k, stride)` on channels × in_h × in_w images (no padding, floor mode).
#[derive(Clone, Debug)]
pub struct MaxPool2d {
    pub channels: usize,
    pub k: usize,
    pub stride: usize,
    pub in_h: usize,
    pub in_w: usize,
}

/// Max-pool tape: for sample i and output q, the input index (within the sample) of the
/// window's maximum, at i·out_len + q.
struct ArgMax(Vec<usize>);

impl MaxPool2d {
    /// Panics on impossible shapes (zero channels, kernel or stride; output side < 1).
    pub fn new(channels: usize, k: usize, stride: usize, in_h: usize, in_w: usize) -> Self {
        let layer = Self {
            channels,
            k,
            stride,
            in_h,
            in_w,
        };
        layer.pool();
        layer
    }
    fn pool(&self) -> Pool {
        Pool::new(
            "MaxPool2d",
            self.channels,
            self.k,
            self.stride,
            self.in_h,
            self.in_w,
        )
    }
    pub fn input_shape(&self) -> ImageShape {
        self.pool().input
    }
    /// channels × H' × W' with H' = (H − k)/stride + 1 (floor), likewise W'.
    pub fn output_shape(&self) -> ImageShape {
        self.pool().output
    }
    /// The arg-max tape of an input batch (see [`ArgMax`]).
    fn arg_max(&self, x: &Batch) -> Vec<usize> {
        let pool = self.pool();
        let off = pool.offsets();
        let mut arg = vec![0; pool.output.len() * x.n()];
        arg.par_chunks_mut(pool.output.len())
            .zip(x.as_slice().par_chunks(pool.input.len()))
            .for_each(|(ac, xc)| {
                pool.for_each_window(|q, a0| {
                    let mut best = a0;
                    for &d in &off[1..] {
                        let (v, b) = (xc[a0 + d], xc[best]);
                        if v > b || (v.is_nan() && !b.is_nan()) {
                            best = a0 + d;
                        }
                    }
                    ac[q] = best;
                });
            });
        arg
    }
    /// y_q = v[arg_q], sample by sample.
    fn gather(&self, arg: &[usize], v: &Batch) -> Batch {
        let pool = self.pool();
        let mut y = Batch::zeros(pool.output.len(), v.n());
        y.as_mut_slice()
            .par_chunks_mut(pool.output.len())
            .zip(arg.par_chunks(pool.output.len()))
            .zip(v.as_slice().par_chunks(pool.input.len()))
            .for_each(|((yc, ac), vc)| {
                for (d, &a) in yc.iter_mut().zip(ac) {
                    *d = vc[a];
                }
            });
        y
    }
}

impl Layer for MaxPool2d {
    fn describe(&self) -> String {
        self.pool().describe("maxpool")
    }
    fn in_dim(&self) -> usize {
        self.input_shape().len()
    }
    fn out_dim(&self) -> usize {
        self.output_shape().len()
    }
    fn forward(&self, _: &[f64], x: &Batch) -> (Batch, Tape) {
        let arg = self.arg_max(x);
        let y = self.gather(&arg, x);
        (y, Box::new(ArgMax(arg)))
    }
    fn vjp(&self, _: &[f64], _: &Batch, tape: &Tape, y_bar: &Batch, _: &mut [f64]) -> Batch {
        let arg = &tape_ref::<ArgMax>(tape).0;
        let pool = self.pool();
        assert_eq!(
            arg.len(),
            pool.output.len() * y_bar.n(),
            "MaxPool2d: ȳ has another number of samples than the forward pass"
        );
        let mut x_bar = Batch::zeros(pool.input.len(), y_bar.n());
        x_bar
            .as_mut_slice()
            .par_chunks_mut(pool.input.len())
            .zip(arg.par_chunks(pool.output.len()))
            .zip(y_bar.as_slice().par_chunks(pool.output.len()))
            .for_each(|((xc, ac), yc)| {
                for (&a, &g) in ac.iter().zip(yc) {
                    xc[a] += g;
                }
            });
        x_bar
    }
    fn jvp(&self, _: &[f64], _: &Batch, tape: &Tape, x_dot: &Batch, _: &[f64]) -> Batch {
        self.gather(&tape_ref::<ArgMax>(tape).0, x_dot)
    }
}
