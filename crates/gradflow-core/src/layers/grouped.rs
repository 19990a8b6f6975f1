//! The grouped 2-D convolution: PyTorch's `nn.Conv2d(in, out, k, stride, padding, groups=G)`.
//! Input channels are cut into G consecutive blocks of in/G, output channels into G blocks of
//! out/G, and block g of the output is an ordinary [`Conv2d`] of block g of the input. With
//! channel-major (c, h, w) features each block is a consecutive slice of a sample's column.
//!
//! θ holds PyTorch's state-dict layout: `weight` [out, in/G, kh, kw] row-major (group g's filters
//! are rows g·out/G … of it, so they are consecutive), then `bias` [out] (absent for
//! `bias=False`). Each group's [`Conv2d`] wants its weight and bias side by side, so the layer
//! gathers a group's θ into a small buffer per call and scatters its parameter cotangents back;
//! that costs O(p) copies per pass, nothing next to the convolutions. Depthwise convolutions
//! with bias (G = in = out) have their own faster layer, [`super::DepthwiseConv2d`].

use super::image::ImageShape;
use super::{tape_ref, Batch, Layer, ParamSpec, Tape};
use super::{Conv2d, ParamRole};

/// `nn.Conv2d(in_ch, out_ch, (kh, kw), stride, padding, groups)`: one [`Conv2d`] per group.
#[derive(Clone, Debug)]
pub struct GroupedConv2d {
    /// The convolution of one group (in/G → out/G channels); every group has this shape.
    pub group: Conv2d,
    pub groups: usize,
}

impl GroupedConv2d {
    /// Panics unless `groups` ≥ 1 divides both channel counts (a model-builder error), or on
    /// the shapes [`Conv2d::new`] refuses.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        in_ch: usize,
        out_ch: usize,
        k: usize,
        stride: usize,
        padding: usize,
        groups: usize,
        in_h: usize,
        in_w: usize,
        bias: bool,
    ) -> Self {
        assert!(
            groups >= 1 && in_ch.is_multiple_of(groups) && out_ch.is_multiple_of(groups),
            "GroupedConv2d: groups = {groups} must divide both channel counts ({in_ch} → {out_ch})"
        );
        let mut group = Conv2d::square(
            in_ch / groups,
            out_ch / groups,
            k,
            stride,
            padding,
            in_h,
            in_w,
        );
        if !bias {
            group = group.without_bias();
        }
        Self { group, groups }
    }
    pub fn input_shape(&self) -> ImageShape {
        let s = self.group.input_shape();
        ImageShape::new(s.c * self.groups, s.h, s.w)
    }
    pub fn output_shape(&self) -> ImageShape {
        let s = self.group.output_shape();
        ImageShape::new(s.c * self.groups, s.h, s.w)
    }
    fn group_weights(&self) -> usize {
        self.group.out_ch * self.group.in_ch * self.group.kh * self.group.kw
    }
    /// Where group g's weight and bias sit in θ: (weight range start, bias range start), each
    /// of the group's lengths.
    fn offsets(&self, g: usize) -> (usize, usize) {
        let wg = self.group_weights();
        (g * wg, self.groups * wg + g * self.group.out_ch)
    }
    /// Group g's θ as its [`Conv2d`] reads it: weight, then bias.
    fn gather(&self, theta: &[f64], g: usize) -> Vec<f64> {
        let (w, b) = self.offsets(g);
        let wg = self.group_weights();
        let mut v = theta[w..w + wg].to_vec();
        if self.group.bias {
            v.extend_from_slice(&theta[b..b + self.group.out_ch]);
        }
        v
    }
    /// θ̄ += group g's parameter cotangent (in its [`Self::gather`] layout).
    fn scatter_add(&self, g: usize, sub: &[f64], theta_bar: &mut [f64]) {
        let (w, b) = self.offsets(g);
        let wg = self.group_weights();
        for (t, s) in theta_bar[w..w + wg].iter_mut().zip(&sub[..wg]) {
            *t += s;
        }
        if self.group.bias {
            for (t, s) in theta_bar[b..].iter_mut().zip(&sub[wg..]) {
                *t += s;
            }
        }
    }
    fn in_rows(&self, x: &Batch, g: usize) -> Batch {
        let len = self.group.in_dim();
        x.rows(g * len, len)
    }
    fn out_rows(&self, y: &Batch, g: usize) -> Batch {
        let len = self.group.out_dim();
        y.rows(g * len, len)
    }
    /// Writes `part` (features × n) into rows g·len … of `into`.
    fn put_rows(into: &mut Batch, g: usize, part: &Batch) {
        let len = part.features();
        for i in 0..part.n() {
            into.col_mut(i)[g * len..(g + 1) * len].copy_from_slice(part.col(i));
        }
    }
}

impl Layer for GroupedConv2d {
    fn describe(&self) -> String {
        format!("{} × {} groups", self.group.describe(), self.groups)
    }
    fn in_dim(&self) -> usize {
        self.group.in_dim() * self.groups
    }
    fn out_dim(&self) -> usize {
        self.group.out_dim() * self.groups
    }
    fn param_specs(&self) -> Vec<ParamSpec> {
        let c = &self.group;
        let fan_in = c.in_ch * c.kh * c.kw;
        let out = c.out_ch * self.groups;
        let mut specs = vec![ParamSpec {
            name: "weight".into(),
            shape: vec![out, c.in_ch, c.kh, c.kw],
            role: ParamRole::Weight { fan_in },
        }];
        if c.bias {
            specs.push(ParamSpec {
                name: "bias".into(),
                shape: vec![out],
                role: ParamRole::Bias { fan_in },
            });
        }
        specs
    }
    fn num_params(&self) -> usize {
        self.group.num_params() * self.groups
    }

    fn forward(&self, theta: &[f64], x: &Batch) -> (Batch, Tape) {
        let mut y = Batch::zeros(self.out_dim(), x.n());
        let mut tapes = Vec::with_capacity(self.groups);
        for g in 0..self.groups {
            let (yg, t) = self
                .group
                .forward(&self.gather(theta, g), &self.in_rows(x, g));
            Self::put_rows(&mut y, g, &yg);
            tapes.push(t);
        }
        (y, Box::new(tapes))
    }

    fn vjp(
        &self,
        theta: &[f64],
        x: &Batch,
        tape: &Tape,
        y_bar: &Batch,
        theta_bar: &mut [f64],
    ) -> Batch {
        let tapes = tape_ref::<Vec<Tape>>(tape);
        let mut x_bar = Batch::zeros(self.in_dim(), y_bar.n());
        for (g, t) in tapes.iter().enumerate() {
            let mut sub = vec![0.0; self.group.num_params()];
            let xb = self.group.vjp(
                &self.gather(theta, g),
                &self.in_rows(x, g),
                t,
                &self.out_rows(y_bar, g),
                &mut sub,
            );
            self.scatter_add(g, &sub, theta_bar);
            Self::put_rows(&mut x_bar, g, &xb);
        }
        x_bar
    }

    fn jvp(
        &self,
        theta: &[f64],
        x: &Batch,
        tape: &Tape,
        x_dot: &Batch,
        theta_dot: &[f64],
    ) -> Batch {
        let tapes = tape_ref::<Vec<Tape>>(tape);
        let mut y_dot = Batch::zeros(self.out_dim(), x.n());
        for (g, t) in tapes.iter().enumerate() {
            let yd = self.group.jvp(
                &self.gather(theta, g),
                &self.in_rows(x, g),
                t,
                &self.in_rows(x_dot, g),
                &self.gather(theta_dot, g),
            );
            Self::put_rows(&mut y_dot, g, &yd);
        }
        y_dot
    }

    /// Groups own disjoint parameters, so the Gram of the whole layer is the sum of the groups'
    /// Grams, each from its [`Conv2d::vjp_gram`] on its slice of the input.
    fn vjp_gram(
        &self,
        theta: &[f64],
        x: &Batch,
        tape: &Tape,
        y_bar: &Batch,
        reps: usize,
        gram: &mut faer::Mat<f64>,
    ) -> Batch {
        let tapes = tape_ref::<Vec<Tape>>(tape);
        let mut x_bar = Batch::zeros(self.in_dim(), y_bar.n());
        for (g, t) in tapes.iter().enumerate() {
            let xb = self.group.vjp_gram(
                &self.gather(theta, g),
                &self.in_rows(x, g),
                t,
                &self.out_rows(y_bar, g),
                reps,
                gram,
            );
            Self::put_rows(&mut x_bar, g, &xb);
        }
        x_bar
    }
}
