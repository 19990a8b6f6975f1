//! Convolutional presets on C×H×W images (PyTorch layout), each a composition of the generic
//! layers so every derivative and NTK route comes from the layers themselves:
//! - `cnn`: [conv k×k (same padding) → σ → 2×2 average pool] per entry of `channels`, then a
//!   dense read-out (pooling only while both sides are ≥ 2).
//! - `conv_resnet` (Du et al. 2019a): conv → σ to `width` channels, then `depth` blocks
//!   x + σ(conv(x)), then a dense read-out.
//! - `unet` (Ronneberger et al.): encoder levels with `channels[i]` channels (average-pool down),
//!   decoder with nearest upsampling, skip connections concatenated along channels, and a 1×1
//!   convolution to `out_channels` at full resolution: the output is an image.
//! - `mobilenet` (Howard et al.): a stem conv, then depthwise-separable blocks (depthwise k×k,
//!   stride 2 while the image is ≥ 2 wide → σ → pointwise 1×1 → σ), then a dense read-out.

use crate::activation::Activation;
use crate::config::Preset;
use crate::layers::{
    ActivationLayer, AvgPool2d, Conv2d, Dense, DepthwiseConv2d, FanOutConcat, Identity, ImageShape,
    Layer, Residual, Serial, Upsample2d,
};
use crate::model::Model;

fn act(a: &Activation, shape: ImageShape) -> Box<dyn Layer> {
    Box::new(ActivationLayer::new(a.clone(), shape.len()))
}

/// A same-padding k×k convolution from `shape` to `out` channels, and its output shape.
fn conv(shape: ImageShape, out: usize, k: usize) -> (Box<dyn Layer>, ImageShape) {
    let c = Conv2d::square(shape.c, out, k, 1, k / 2, shape.h, shape.w);
    let s = c.output_shape();
    (Box::new(c), s)
}

pub fn cnn(input: ImageShape, channels: &[usize], k: usize, m: usize, a: &Activation) -> Model {
    let mut layers: Vec<Box<dyn Layer>> = Vec::new();
    let mut shape = input;
    for &c in channels {
        let (l, s) = conv(shape, c, k);
        layers.push(l);
        layers.push(act(a, s));
        shape = s;
        if shape.h >= 2 && shape.w >= 2 {
            let pool = AvgPool2d::new(shape.c, 2, 2, shape.h, shape.w);
            shape = pool.output_shape();
            layers.push(Box::new(pool));
        }
    }
    layers.push(Box::new(Dense::new(shape.len(), m)));
    Model::new(Box::new(Serial::new(layers)), Preset::Cnn, a.clone())
}

pub fn conv_resnet(
    input: ImageShape,
    width: usize,
    depth: usize,
    k: usize,
    m: usize,
    a: &Activation,
) -> Model {
    let (stem, shape) = conv(input, width, k);
    let mut layers: Vec<Box<dyn Layer>> = vec![stem, act(a, shape)];
    for _ in 0..depth {
        let (c, s) = conv(shape, width, k);
        layers.push(Box::new(Residual::new(Box::new(Serial::new(vec![
            c,
            act(a, s),
        ])))));
    }
    layers.push(Box::new(Dense::new(shape.len(), m)));
    Model::new(Box::new(Serial::new(layers)), Preset::ConvResnet, a.clone())
}

/// The U-Net level `i` at `shape` (already with `channels[i-1]` channels): down, process, recurse,
/// up, and concatenate with the skip; returns a layer from `shape` to 2·channels[i−1] channels.
fn unet_level(
    shape: ImageShape,
    channels: &[usize],
    i: usize,
    k: usize,
    a: &Activation,
) -> Box<dyn Layer> {
    let pool = AvgPool2d::new(shape.c, 2, 2, shape.h, shape.w);
    let down = pool.output_shape();
    let (c1, s1) = conv(down, channels[i], k);
    let mut inner: Vec<Box<dyn Layer>> = vec![Box::new(pool), c1, act(a, s1)];
    if i + 1 < channels.len() {
        let deeper = unet_level(s1, channels, i + 1, k, a);
        let merged = ImageShape::new(2 * channels[i], s1.h, s1.w);
        let (c2, s2) = conv(merged, channels[i], k);
        inner.extend([deeper, c2, act(a, s2)]);
    }
    let up = Upsample2d::new(channels[i], 2, s1.h, s1.w);
    let (c3, s3) = conv(up.output_shape(), shape.c, k);
    inner.extend([Box::new(up) as Box<dyn Layer>, c3, act(a, s3)]);
    Box::new(FanOutConcat::new(vec![
        Box::new(Identity::new(shape.len())),
        Box::new(Serial::new(inner)),
    ]))
}

pub fn unet(
    input: ImageShape,
    channels: &[usize],
    k: usize,
    out_channels: usize,
    a: &Activation,
) -> Model {
    let (stem, s0) = conv(input, channels[0], k);
    let mut layers: Vec<Box<dyn Layer>> = vec![stem, act(a, s0)];
    let mut shape = s0;
    if channels.len() > 1 {
        layers.push(unet_level(s0, channels, 1, k, a));
        let merged = ImageShape::new(2 * channels[0], s0.h, s0.w);
        let (c, s) = conv(merged, channels[0], k);
        layers.extend([c, act(a, s)]);
        shape = s;
    }
    let (head, _) = conv(shape, out_channels, 1);
    layers.push(head);
    Model::new(Box::new(Serial::new(layers)), Preset::Unet, a.clone())
}

pub fn mobilenet(
    input: ImageShape,
    channels: &[usize],
    k: usize,
    m: usize,
    a: &Activation,
) -> Model {
    let (stem, mut shape) = conv(input, channels[0], k);
    let mut layers: Vec<Box<dyn Layer>> = vec![stem, act(a, shape)];
    for &c in &channels[1..] {
        let stride = if shape.h >= 2 && shape.w >= 2 { 2 } else { 1 };
        let dw = DepthwiseConv2d::new(shape.c, k, k, stride, k / 2, shape.h, shape.w);
        let s = dw.output_shape();
        layers.push(Box::new(dw));
        layers.push(act(a, s));
        let pw = Conv2d::square(s.c, c, 1, 1, 0, s.h, s.w);
        shape = pw.output_shape();
        layers.push(Box::new(pw));
        layers.push(act(a, shape));
    }
    layers.push(Box::new(Dense::new(shape.len(), m)));
    Model::new(Box::new(Serial::new(layers)), Preset::Mobilenet, a.clone())
}
