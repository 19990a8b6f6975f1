//! The image layers (Conv2d, DepthwiseConv2d, AvgPool2d, MaxPool2d, Upsample2d): the `Layer`
//! contract by central finite differences over many shapes, forwards against naive loops written
//! here (never the library's im2col), PyTorch state-dict names and shapes, the structured NTK
//! term against the generic route, and a small CNN whose NTK equals J Jᵀ with J by finite
//! differences of the model outputs.

use crate::common;

use common::{check_layer, dot, min_kink_distance, random_batch, rng, uniform_vec};
use faer::Mat;
use gradflow::activation::Activation;
use gradflow::config::Preset;
use gradflow::init::{init_params, InitScheme};
use gradflow::layers::{
    generic_vjp_gram, ActivationLayer, AvgPool2d, Conv2d, Dense, DepthwiseConv2d, GroupedConv2d,
    ImageShape, Layer, MaxPool2d, ParamRole, Serial, Upsample2d,
};
use gradflow::model::Model;
use gradflow::ntk;
use gradflow::Batch;

/// A naive grouped convolution, 7 nested loops (sample, out channel, h', w', in channel of the
/// group, kernel row, kernel column): weight [out, in/groups, kh, kw] row-major then bias [out].
#[allow(clippy::too_many_arguments)]
fn naive_conv(
    theta: &[f64],
    x: &Batch,
    (in_ch, out_ch, groups): (usize, usize, usize),
    (kh, kw): (usize, usize),
    stride: usize,
    pad: usize,
    (h, w): (usize, usize),
) -> Batch {
    let oh_n = (h + 2 * pad - kh) / stride + 1;
    let ow_n = (w + 2 * pad - kw) / stride + 1;
    let (cin_g, cout_g) = (in_ch / groups, out_ch / groups);
    let bias = &theta[out_ch * cin_g * kh * kw..];
    let mut y = Batch::zeros(out_ch * oh_n * ow_n, x.n());
    for i in 0..x.n() {
        for o in 0..out_ch {
            let g = o / cout_g;
            for oh in 0..oh_n {
                for ow in 0..ow_n {
                    let mut acc = bias[o];
                    for cg in 0..cin_g {
                        let c = g * cin_g + cg;
                        for dh in 0..kh {
                            for dw in 0..kw {
                                let ih = (oh * stride + dh) as isize - pad as isize;
                                let iw = (ow * stride + dw) as isize - pad as isize;
                                if ih < 0 || iw < 0 || ih >= h as isize || iw >= w as isize {
                                    continue;
                                }
                                let wv = theta[((o * cin_g + cg) * kh + dh) * kw + dw];
                                let xv = x.col(i)[(c * h + ih as usize) * w + iw as usize];
                                acc += wv * xv;
                            }
                        }
                    }
                    y.col_mut(i)[(o * oh_n + oh) * ow_n + ow] = acc;
                }
            }
        }
    }
    y
}

fn assert_close_batches(a: &Batch, b: &Batch, tol: f64, what: &str) {
    assert_eq!(
        (a.features(), a.n()),
        (b.features(), b.n()),
        "{what}: shape"
    );
    for (k, (u, v)) in a.as_slice().iter().zip(b.as_slice()).enumerate() {
        assert!(
            (u - v).abs() <= tol * (1.0 + v.abs()),
            "{what}: entry {k}: {u} vs {v}"
        );
    }
}

/// (in, out, kh, kw, stride, padding, h, w, n)
type ConvCase = (
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
);

const CONV_CASES: &[ConvCase] = &[
    (1, 1, 1, 1, 1, 0, 5, 5, 2),
    (2, 3, 1, 1, 2, 0, 5, 6, 2),
    (1, 2, 3, 3, 1, 0, 5, 5, 2),
    (3, 4, 3, 3, 1, 1, 6, 5, 2),
    (2, 2, 3, 3, 2, 1, 7, 6, 2),
    (2, 3, 2, 3, 1, 1, 5, 6, 2),
    (3, 1, 2, 3, 2, 0, 7, 6, 1),
    (1, 4, 3, 3, 2, 0, 6, 7, 3),
];

#[test]
fn conv_passes_the_layer_contract_on_many_shapes() {
    for (seed, &(ci, co, kh, kw, s, p, h, w, n)) in CONV_CASES.iter().enumerate() {
        let layer = Conv2d::new(ci, co, kh, kw, s, p, h, w);
        let r = check_layer(&layer, n, 10 + seed as u64);
        assert_eq!(r.checked_params, co * ci * kh * kw + co);
        assert_eq!(r.checked_inputs, ci * h * w * n);
    }
}

#[test]
fn conv_forward_matches_naive_loops() {
    for (seed, &(ci, co, kh, kw, s, p, h, w, n)) in CONV_CASES.iter().enumerate() {
        let layer = Conv2d::new(ci, co, kh, kw, s, p, h, w);
        let mut r = rng(200 + seed as u64);
        let theta = uniform_vec(&mut r, layer.num_params(), -1.0, 1.0);
        let x = random_batch(&mut r, layer.in_dim(), n);
        let got = layer.forward(&theta, &x).0;
        let want = naive_conv(&theta, &x, (ci, co, 1), (kh, kw), s, p, (h, w));
        assert_close_batches(&got, &want, 1e-13, &layer.describe());
        let o = layer.output_shape();
        assert_eq!(o.len(), want.features());
        assert_eq!(o.h, (h + 2 * p - kh) / s + 1);
        assert_eq!(o.w, (w + 2 * p - kw) / s + 1);
    }
}

/// Enough samples of a 3×32×32 image that the im2col matrix is built in two chunks; checks the
/// forward against the naive loop and the vjp against the jvp (adjointness) across chunks.
#[test]
fn conv_on_batches_larger_than_one_chunk() {
    let layer = Conv2d::new(3, 4, 3, 3, 1, 1, 32, 32);
    let n = 160; // 27·1024·160 > 2²² entries
    let mut r = rng(7);
    let theta = uniform_vec(&mut r, layer.num_params(), -1.0, 1.0);
    let x = random_batch(&mut r, layer.in_dim(), n);
    let (y, tape) = layer.forward(&theta, &x);
    let want = naive_conv(&theta, &x, (3, 4, 1), (3, 3), 1, 1, (32, 32));
    assert_close_batches(&y, &want, 1e-13, "chunked conv");
    let y_bar = random_batch(&mut r, layer.out_dim(), n);
    let x_dot = random_batch(&mut r, layer.in_dim(), n);
    let t_dot = uniform_vec(&mut r, layer.num_params(), -1.0, 1.0);
    let mut t_bar = vec![0.0; layer.num_params()];
    let x_bar = layer.vjp(&theta, &x, &tape, &y_bar, &mut t_bar);
    let y_dot = layer.jvp(&theta, &x, &tape, &x_dot, &t_dot);
    let lhs = dot(y_dot.as_slice(), y_bar.as_slice());
    let rhs = dot(x_dot.as_slice(), x_bar.as_slice()) + dot(&t_dot, &t_bar);
    assert!(
        (lhs - rhs).abs() <= 1e-10 * lhs.abs().max(1.0),
        "{lhs} vs {rhs}"
    );
}

#[test]
fn depthwise_passes_the_contract_and_matches_a_grouped_naive_conv() {
    // (channels, kh, kw, stride, padding, h, w, n)
    let cases = [
        (1, 1, 1, 1, 0, 5, 5, 2),
        (2, 3, 3, 1, 1, 5, 6, 2),
        (3, 3, 3, 2, 1, 7, 6, 2),
        (2, 2, 3, 1, 0, 6, 5, 3),
        (3, 2, 3, 2, 1, 6, 7, 1),
    ];
    for (seed, &(c, kh, kw, s, p, h, w, n)) in cases.iter().enumerate() {
        let layer = DepthwiseConv2d::new(c, kh, kw, s, p, h, w);
        assert_eq!(layer.num_params(), c * kh * kw + c);
        check_layer(&layer, n, 300 + seed as u64);
        let mut r = rng(400 + seed as u64);
        let theta = uniform_vec(&mut r, layer.num_params(), -1.0, 1.0);
        let x = random_batch(&mut r, layer.in_dim(), n);
        let got = layer.forward(&theta, &x).0;
        let want = naive_conv(&theta, &x, (c, c, c), (kh, kw), s, p, (h, w));
        assert_close_batches(&got, &want, 1e-13, &layer.describe());
    }
}

#[test]
fn pools_and_upsample_pass_the_contract() {
    for (seed, &(c, k, s, h, w, n)) in [
        (1, 2, 2, 4, 4, 2),
        (2, 2, 2, 5, 6, 2),
        (3, 3, 1, 5, 5, 2),
        (2, 3, 2, 7, 6, 1),
        (1, 2, 1, 5, 6, 3),
    ]
    .iter()
    .enumerate()
    {
        check_layer(&AvgPool2d::new(c, k, s, h, w), n, 500 + seed as u64);
        // Random inputs: ties have probability zero, and a window's maximum beats the runner-up
        // by far more than the finite-difference step.
        check_layer(&MaxPool2d::new(c, k, s, h, w), n, 600 + seed as u64);
    }
    for (seed, &(c, f, h, w, n)) in [(1, 1, 3, 3, 2), (2, 2, 3, 4, 2), (3, 3, 2, 3, 2)]
        .iter()
        .enumerate()
    {
        check_layer(&Upsample2d::new(c, f, h, w), n, 700 + seed as u64);
    }
}

#[test]
fn avg_pool_and_upsample_match_hand_loops() {
    let (c, k, s, h, w, n) = (2, 3, 2, 7, 6, 3);
    let pool = AvgPool2d::new(c, k, s, h, w);
    let x = random_batch(&mut rng(800), c * h * w, n);
    let y = pool.forward(&[], &x).0;
    let (oh_n, ow_n) = ((h - k) / s + 1, (w - k) / s + 1);
    assert_eq!(pool.output_shape(), ImageShape::new(c, oh_n, ow_n));
    assert_eq!((oh_n, ow_n), (3, 2));
    for i in 0..n {
        for ch in 0..c {
            for oh in 0..oh_n {
                for ow in 0..ow_n {
                    let mut sum = 0.0;
                    for dh in 0..k {
                        for dw in 0..k {
                            sum += x.col(i)[(ch * h + oh * s + dh) * w + ow * s + dw];
                        }
                    }
                    let got = y.col(i)[(ch * oh_n + oh) * ow_n + ow];
                    assert!((got - sum / 9.0).abs() <= 1e-15);
                }
            }
        }
    }

    let (f, h, w) = (3, 2, 3);
    let up = Upsample2d::new(c, f, h, w);
    let x = random_batch(&mut rng(801), c * h * w, n);
    let y = up.forward(&[], &x).0;
    assert_eq!(y.features(), c * h * f * w * f);
    for i in 0..n {
        for ch in 0..c {
            for yh in 0..h * f {
                for yw in 0..w * f {
                    assert_eq!(
                        y.col(i)[(ch * h * f + yh) * w * f + yw],
                        x.col(i)[(ch * h + yh / f) * w + yw / f]
                    );
                }
            }
        }
    }
}

#[test]
fn max_pool_on_a_hand_example() {
    // One channel, 4×4, k2 s2:
    //  1  5 | 2  0
    //  3 -1 | 7  7     ← tie in the top-right window: the gradient goes to the first 7
    //  ------+------
    //  0  0 | -4 -2
    //  0  0 | -3 -5    ← all-equal window: the first pixel
    let x = Batch::from_vec(
        16,
        1,
        vec![
            1., 5., 2., 0., 3., -1., 7., 7., 0., 0., -4., -2., 0., 0., -3., -5.,
        ],
    );
    let pool = MaxPool2d::new(1, 2, 2, 4, 4);
    let (y, tape) = pool.forward(&[], &x);
    assert_eq!(y.as_slice(), &[5., 7., 0., -2.]);
    let y_bar = Batch::from_vec(4, 1, vec![10., 20., 30., 40.]);
    let x_bar = pool.vjp(&[], &x, &tape, &y_bar, &mut []);
    let mut want = [0.0; 16];
    want[1] = 10.; // the 5
    want[6] = 20.; // the first 7 (index 6, not 7)
    want[8] = 30.; // the first 0 of the bottom-left window
    want[11] = 40.; // the −2
    assert_eq!(x_bar.as_slice(), &want[..]);
    let x_dot = Batch::from_vec(16, 1, (0..16).map(|v| v as f64).collect());
    let y_dot = pool.jvp(&[], &x, &tape, &x_dot, &[]);
    assert_eq!(y_dot.as_slice(), &[1., 6., 8., 11.]);

    // Overlapping windows (k2 s1 on a 3×3): the centre maximum is picked by all four windows,
    // so its cotangent is the sum of theirs.
    let x = Batch::from_vec(9, 1, vec![0., 1., 0., 2., 9., 3., 0., 4., 0.]);
    let pool = MaxPool2d::new(1, 2, 1, 3, 3);
    let (y, tape) = pool.forward(&[], &x);
    assert_eq!(y.as_slice(), &[9., 9., 9., 9.]);
    let x_bar = pool.vjp(
        &[],
        &x,
        &tape,
        &Batch::from_vec(4, 1, vec![1., 2., 3., 4.]),
        &mut [],
    );
    assert_eq!(x_bar.as_slice(), &[0., 0., 0., 0., 10., 0., 0., 0., 0.]);
}

#[test]
fn parameters_are_laid_out_as_pytorch_state_dicts() {
    let conv = Conv2d::new(3, 8, 2, 3, 1, 1, 8, 8);
    let specs = conv.param_specs();
    assert_eq!(specs.len(), 2);
    assert_eq!(
        (specs[0].name.as_str(), specs[0].shape.clone()),
        ("weight", vec![8, 3, 2, 3])
    );
    assert_eq!(specs[0].role, ParamRole::Weight { fan_in: 18 });
    assert_eq!(
        (specs[1].name.as_str(), specs[1].shape.clone()),
        ("bias", vec![8])
    );
    assert_eq!(specs[1].role, ParamRole::Bias { fan_in: 18 });
    assert_eq!(conv.num_params(), 8 * 3 * 2 * 3 + 8);

    let dw = DepthwiseConv2d::new(4, 3, 3, 1, 1, 6, 6);
    let specs = dw.param_specs();
    assert_eq!(specs[0].shape, vec![4, 1, 3, 3]);
    assert_eq!(specs[1].shape, vec![4]);
    assert_eq!(specs[0].role, ParamRole::Weight { fan_in: 9 });
    assert_eq!(dw.num_params(), 4 * 9 + 4);

    for l in [
        Box::new(AvgPool2d::new(2, 2, 2, 4, 4)) as Box<dyn Layer>,
        Box::new(MaxPool2d::new(2, 2, 2, 4, 4)),
        Box::new(Upsample2d::new(2, 2, 4, 4)),
    ] {
        assert_eq!(l.num_params(), 0);
        assert!(l.param_specs().is_empty());
    }

    // Inside a Serial the names are nn.Sequential's; PyTorch's default init bounds 1/√fan_in.
    let net = Serial::new(vec![
        Box::new(Conv2d::new(1, 2, 3, 3, 1, 0, 5, 5)),
        Box::new(Conv2d::new(2, 2, 3, 3, 1, 0, 3, 3)),
    ]);
    let names: Vec<_> = net.param_specs().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["0.weight", "0.bias", "1.weight", "1.bias"]);
    let theta = init_params(&net.param_specs(), &InitScheme::Torch, 3);
    assert!(theta[..18].iter().all(|v| v.abs() <= 1.0 / 3.0));
    assert!(theta[20..56].iter().all(|v| v.abs() <= 1.0 / 18f64.sqrt()));
}

#[test]
fn shapes_and_descriptions() {
    let conv = Conv2d::new(3, 8, 3, 3, 1, 1, 8, 8);
    assert_eq!(conv.describe(), "conv 3→8 k3 s1 p1 (8×8 → 8×8)");
    assert_eq!(conv.output_shape(), ImageShape::new(8, 8, 8));
    assert_eq!((conv.in_dim(), conv.out_dim()), (192, 512));
    let conv = Conv2d::new(2, 4, 2, 3, 2, 0, 7, 6);
    assert_eq!(conv.describe(), "conv 2→4 k2×3 s2 p0 (7×6 → 3×2)");
    assert_eq!(conv.out_dim(), 4 * 3 * 2);
    assert_eq!(
        DepthwiseConv2d::new(8, 3, 3, 2, 1, 8, 8).describe(),
        "depthwise conv 8 k3 s2 p1 (8×8 → 4×4)"
    );
    assert_eq!(
        AvgPool2d::new(8, 2, 2, 8, 8).describe(),
        "avgpool 8 k2 s2 (8×8 → 4×4)"
    );
    assert_eq!(
        MaxPool2d::new(8, 3, 2, 7, 7).describe(),
        "maxpool 8 k3 s2 (7×7 → 3×3)"
    );
    assert_eq!(
        Upsample2d::new(8, 2, 4, 4).describe(),
        "upsample 8 ×2 (4×4 → 8×8)"
    );
    assert_eq!(
        MaxPool2d::new(2, 2, 2, 5, 5).output_shape().len(),
        2 * 2 * 2
    );
}

#[test]
#[should_panic(expected = "smaller than the kernel")]
fn conv_rejects_a_kernel_larger_than_the_padded_image() {
    Conv2d::new(1, 1, 5, 5, 1, 0, 3, 3);
}

#[test]
#[should_panic(expected = "stride must be at least 1")]
fn pool_rejects_stride_zero() {
    AvgPool2d::new(1, 2, 0, 4, 4);
}

/// Grouped and bias-free convolutions (`groups`, `bias=False` of `nn.Conv2d`): the layer contract
/// by finite differences, the forward against the naive grouped loops (a missing bias read as
/// zeros), and PyTorch's state-dict shapes.
#[test]
fn grouped_and_bias_free_convs_pass_the_contract_and_match_naive_loops() {
    // (in, out, k, stride, padding, groups, bias, h, w, n)
    let cases = [
        (2, 4, 3, 1, 1, 2, true, 5, 5, 2),
        (4, 2, 3, 2, 1, 2, false, 6, 5, 2),
        (3, 6, 1, 1, 0, 3, true, 4, 4, 3),
        (3, 3, 3, 1, 1, 3, false, 5, 4, 2),
        (2, 3, 3, 1, 0, 1, false, 5, 5, 2),
    ];
    for (seed, &(ci, co, k, s, p, g, bias, h, w, n)) in cases.iter().enumerate() {
        let layer: Box<dyn Layer> = if g == 1 {
            Box::new(Conv2d::square(ci, co, k, s, p, h, w).without_bias())
        } else {
            Box::new(GroupedConv2d::new(ci, co, k, s, p, g, h, w, bias))
        };
        let weights = co * (ci / g) * k * k;
        let p_want = weights + if bias { co } else { 0 };
        assert_eq!(layer.num_params(), p_want, "{}", layer.describe());
        let specs = layer.param_specs();
        assert_eq!(specs[0].name, "weight");
        assert_eq!(specs[0].shape, vec![co, ci / g, k, k]);
        assert_eq!(specs.len(), if bias { 2 } else { 1 });
        let r = check_layer(layer.as_ref(), n, 1500 + seed as u64);
        assert_eq!(r.checked_params, p_want);
        let mut rr = rng(1600 + seed as u64);
        let theta = uniform_vec(&mut rr, layer.num_params(), -1.0, 1.0);
        let x = random_batch(&mut rr, layer.in_dim(), n);
        let got = layer.forward(&theta, &x).0;
        let mut with_bias = theta.clone();
        with_bias.resize(weights + co, 0.0);
        let want = naive_conv(&with_bias, &x, (ci, co, g), (k, k), s, p, (h, w));
        assert_close_batches(&got, &want, 1e-13, &layer.describe());
    }
}

/// The structured vjp_gram of the parametrised layers against the generic per-column route,
/// with several output directions per sample (reps = 3).
#[test]
fn structured_vjp_gram_matches_the_generic_route() {
    let layers: Vec<Box<dyn Layer>> = vec![
        Box::new(Conv2d::new(2, 3, 3, 3, 1, 1, 5, 5)),
        Box::new(Conv2d::new(1, 2, 2, 3, 2, 0, 6, 7)),
        Box::new(DepthwiseConv2d::new(3, 3, 2, 1, 1, 5, 4)),
        Box::new(Conv2d::new(2, 3, 3, 3, 1, 1, 5, 5).without_bias()),
        Box::new(GroupedConv2d::new(4, 2, 3, 1, 1, 2, 5, 4, true)),
        Box::new(GroupedConv2d::new(2, 4, 3, 2, 0, 2, 5, 5, false)),
    ];
    let (n, reps) = (3, 3);
    for (seed, layer) in layers.iter().enumerate() {
        let mut r = rng(900 + seed as u64);
        let theta = uniform_vec(&mut r, layer.num_params(), -1.0, 1.0);
        let x = random_batch(&mut r, layer.in_dim(), n);
        let y_bar = random_batch(&mut r, layer.out_dim(), n * reps);
        let (_, tape) = layer.forward(&theta, &x);
        let mut g1 = Mat::<f64>::zeros(n * reps, n * reps);
        let mut g2 = Mat::<f64>::zeros(n * reps, n * reps);
        let xb1 = layer.vjp_gram(&theta, &x, &tape, &y_bar, reps, &mut g1);
        let xb2 = generic_vjp_gram(layer.as_ref(), &theta, &x, &tape, &y_bar, reps, &mut g2);
        assert_close_batches(&xb1, &xb2, 1e-13, &layer.describe());
        let scale = (0..n * reps).map(|c| g2[(c, c)]).fold(0.0, f64::max);
        for c in 0..n * reps {
            for d in 0..=c {
                assert!(
                    (g1[(c, d)] - g2[(c, d)]).abs() <= 1e-12 * scale,
                    "{}: gram[{c}, {d}] = {} vs {}",
                    layer.describe(),
                    g1[(c, d)],
                    g2[(c, d)]
                );
            }
        }
    }
}

/// conv → leaky ReLU → avgpool → dense: the "flatten" is the identity on the (c, h, w) layout.
fn small_cnn() -> Serial {
    let conv = Conv2d::new(2, 3, 3, 3, 1, 1, 6, 6);
    let o = conv.output_shape();
    let pool = AvgPool2d::new(o.c, 2, 2, o.h, o.w);
    let p = pool.output_shape();
    Serial::new(vec![
        Box::new(conv),
        Box::new(ActivationLayer::new(Activation::leaky_relu(), o.len())),
        Box::new(pool),
        Box::new(Dense::new(p.len(), 2)),
    ])
}

#[test]
fn small_cnns_pass_the_layer_contract() {
    check_layer(&small_cnn(), 3, 1000);
    // depthwise → maxpool → upsample → 1×1 conv → dense.
    let dw = DepthwiseConv2d::new(2, 3, 3, 1, 1, 6, 6);
    let net = Serial::new(vec![
        Box::new(dw),
        Box::new(ActivationLayer::new(Activation::leaky_relu(), 72)),
        Box::new(MaxPool2d::new(2, 2, 2, 6, 6)),
        Box::new(Upsample2d::new(2, 2, 3, 3)),
        Box::new(Conv2d::new(2, 3, 1, 1, 1, 0, 6, 6)),
        Box::new(Dense::new(108, 2)),
    ]);
    check_layer(&net, 2, 1001);
}

#[test]
fn cnn_ntk_equals_j_jt_by_finite_differences() {
    let model = Model::new(Box::new(small_cnn()), Preset::Cnn, Activation::leaky_relu());
    assert_eq!(ntk::gram_route(&model), ntk::GramRoute::Structured);
    let n = 4;
    // A point whose pre-activations are away from the kink, so finite differences are exact
    // up to rounding (θ ± h moves them by ~1e-6).
    let (theta, x) = (0..100u64)
        .map(|s| {
            let theta = init_params(&model.param_specs(), &InitScheme::Torch, s);
            let x = random_batch(&mut rng(1100 + s), model.in_dim(), n);
            (theta, x)
        })
        .find(|(t, x)| min_kink_distance(model.net.as_ref(), t, x) >= 1e-4)
        .expect("a point away from the kinks");
    let (h, route) = ntk::gram(&model, &theta, &x);
    assert_eq!(route, ntk::GramRoute::Structured);

    // J by central differences of the outputs u(θ) (row i·m + a).
    let (nm, p) = (n * model.out_dim(), model.p());
    let mut j = Mat::<f64>::zeros(nm, p);
    let step = 1e-6;
    let mut t = theta.clone();
    for k in 0..p {
        t[k] = theta[k] + step;
        let up = model.outputs(&t, &x);
        t[k] = theta[k] - step;
        let dn = model.outputs(&t, &x);
        t[k] = theta[k];
        for r in 0..nm {
            j[(r, k)] = (up.as_slice()[r] - dn.as_slice()[r]) / (2.0 * step);
        }
    }
    let h_fd = &j * j.transpose();
    let h_vjp = {
        let jv = ntk::jacobian(&model, &theta, &x);
        &jv * jv.transpose()
    };
    let mut scale: f64 = 0.0;
    for c in 0..nm {
        for r in 0..nm {
            scale = scale.max(h_vjp[(r, c)].abs());
        }
    }
    for c in 0..nm {
        for r in 0..nm {
            assert!(
                (h[(r, c)] - h_vjp[(r, c)]).abs() <= 1e-12 * scale,
                "H[{r}, {c}] = {} vs per-output vjp {}",
                h[(r, c)],
                h_vjp[(r, c)]
            );
            assert!(
                (h[(r, c)] - h_fd[(r, c)]).abs() <= 1e-6 * scale,
                "H[{r}, {c}] = {} vs finite differences {}",
                h[(r, c)],
                h_fd[(r, c)]
            );
            assert_eq!(h[(r, c)], h[(c, r)], "H must be symmetric");
        }
    }
}
