//! Nearest-neighbour upsampling by an integer factor f: PyTorch's
//! `nn.Upsample(scale_factor=f, mode="nearest")`, y[c, h, w] = x[c, ⌊h/f⌋, ⌊w/f⌋] on
//! channels × (f·H) × (f·W) outputs. Parameter-free and linear: jvp = forward(ẋ), and the vjp
//! sums ȳ over each f × f block back onto its source pixel.

use super::image::{hw, ImageShape};
use super::{no_tape, Batch, Layer, Tape};
use rayon::prelude::*;

/// `nn.Upsample(scale_factor=factor, mode="nearest")` on channels × in_h × in_w images.
#[derive(Clone, Debug)]
pub struct Upsample2d {
    pub channels: usize,
    pub factor: usize,
    pub in_h: usize,
    pub in_w: usize,
}

impl Upsample2d {
    /// Panics on impossible shapes (a zero channel count, factor or side).
    pub fn new(channels: usize, factor: usize, in_h: usize, in_w: usize) -> Self {
        assert!(channels >= 1, "Upsample2d: channels must be at least 1");
        assert!(factor >= 1, "Upsample2d: factor must be at least 1");
        assert!(
            in_h >= 1 && in_w >= 1,
            "Upsample2d: input sides must be at least 1 (got {in_h}×{in_w})"
        );
        Self {
            channels,
            factor,
            in_h,
            in_w,
        }
    }
    pub fn input_shape(&self) -> ImageShape {
        ImageShape::new(self.channels, self.in_h, self.in_w)
    }
    /// channels × (factor·H) × (factor·W).
    pub fn output_shape(&self) -> ImageShape {
        ImageShape::new(
            self.channels,
            self.factor * self.in_h,
            self.factor * self.in_w,
        )
    }
    /// Calls f(output index, source input index) for every output pixel of one sample.
    #[inline]
    fn for_each_pixel(&self, mut f: impl FnMut(usize, usize)) {
        let (i, o) = (self.input_shape(), self.output_shape());
        for c in 0..o.c {
            for h in 0..o.h {
                for w in 0..o.w {
                    f(
                        o.index(c, h, w),
                        i.index(c, h / self.factor, w / self.factor),
                    );
                }
            }
        }
    }
    fn apply(&self, x: &Batch) -> Batch {
        let (il, ol) = (self.input_shape().len(), self.output_shape().len());
        let mut y = Batch::zeros(ol, x.n());
        y.as_mut_slice()
            .par_chunks_mut(ol)
            .zip(x.as_slice().par_chunks(il))
            .for_each(|(yc, xc)| self.for_each_pixel(|q, a| yc[q] = xc[a]));
        y
    }
}

impl Layer for Upsample2d {
    fn describe(&self) -> String {
        let o = self.output_shape();
        format!(
            "upsample {} ×{} ({} → {})",
            self.channels,
            self.factor,
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
    fn forward(&self, _: &[f64], x: &Batch) -> (Batch, Tape) {
        (self.apply(x), no_tape())
    }
    fn vjp(&self, _: &[f64], _: &Batch, _: &Tape, y_bar: &Batch, _: &mut [f64]) -> Batch {
        let (il, ol) = (self.input_shape().len(), self.output_shape().len());
        let mut x_bar = Batch::zeros(il, y_bar.n());
        x_bar
            .as_mut_slice()
            .par_chunks_mut(il)
            .zip(y_bar.as_slice().par_chunks(ol))
            .for_each(|(xc, yc)| self.for_each_pixel(|q, a| xc[a] += yc[q]));
        x_bar
    }
    fn jvp(&self, _: &[f64], _: &Batch, _: &Tape, x_dot: &Batch, _: &[f64]) -> Batch {
        self.apply(x_dot)
    }
}
