//! The paper's other architectures as presets (CNN, ConvResNet, U-Net, MobileNet, ChebConvNet,
//! GraphConvNet, Siamese): parameter counts against hand computation, output shapes, the loss
//! gradient against central finite differences, and the NTK against J Jᵀ with J by finite
//! differences of the outputs.

use faer::Mat;
use gradflow::activation::Activation;
use gradflow::data::Dataset;
use gradflow::graph::{scaled_laplacian, Graph};
use gradflow::init::{init_params, InitScheme};
use gradflow::layers::{ImageShape, PairCombine};
use gradflow::loss::LossKind;
use gradflow::model::Model;
use gradflow::{ntk, presets};
use std::sync::Arc;

fn act() -> Activation {
    Activation::LeakyRelu { slope: 0.1 }
}

/// (model, data) pairs, each with the hand-computed p.
#[allow(clippy::vec_init_then_push)] // one commented case per push
fn cases() -> Vec<(Model, Dataset, usize)> {
    let a = act();

    let mut v = Vec::new();
    // cnn 1×8×8, channels [2, 3]: (9+1)·2 + (2·9+1)·3 + (3·2·2+1)·2.
    v.push((
        presets::cnn(ImageShape::new(1, 8, 8), &[2, 3], 3, 2, &a),
        Dataset::images(4, 1, 8, 8, 2, 1),
        20 + 57 + 26,
    ));
    // conv-resnet 2×6×6, width 3, depth 2: (2·9+1)·3 + 2·(3·9+1)·3 + (3·36+1)·2.
    v.push((
        presets::conv_resnet(ImageShape::new(2, 6, 6), 3, 2, 3, 2, &a),
        Dataset::images(3, 2, 6, 6, 2, 2),
        57 + 168 + 218,
    ));
    // unet 1×4×4, channels [2, 3], 1 output channel: 20 + 57 + 56 + 74 + 3; targets 1×4×4.
    v.push((
        presets::unet(ImageShape::new(1, 4, 4), &[2, 3], 3, 1, &a),
        Dataset::images(3, 1, 4, 4, 16, 3),
        210,
    ));
    // mobilenet 3×8×8, channels [4, 6]: (3·9+1)·4 + (9+1)·4 + (4+1)·6 + (6·16+1)·2.
    v.push((
        presets::mobilenet(ImageShape::new(3, 8, 8), &[4, 6], 3, 2, &a),
        Dataset::images(3, 3, 8, 8, 2, 4),
        112 + 40 + 30 + 194,
    ));
    // siamese d = 3, tower [4, 5]: (3+1)·4 + (4+1)·5, head (5+1)·2 or (10+1)·2.
    v.push((
        presets::siamese(3, &[4, 5], PairCombine::AbsDiff, 2, &a),
        Dataset::pairs(4, 3, 2, 5),
        41 + 12,
    ));
    v.push((
        presets::siamese(3, &[4, 5], PairCombine::Concat, 2, &a),
        Dataset::pairs(4, 3, 2, 6),
        41 + 22,
    ));
    // cheb d = 3, hidden [4], K = 2: (2·3·4 + 4) + (2·4·2 + 2); graphconv: (3·4 + 4 + 3·4) + (4·2 + 2 + 4·2).
    let data = Dataset::ball(6, 3, 2, 7);
    let g = Graph::knn(&data.x, 2).unwrap();
    v.push((
        presets::cheb(Arc::new(scaled_laplacian(&g, None)), 3, &[4], 2, 2, &a),
        data.clone(),
        28 + 18,
    ));
    v.push((
        presets::graphconv(Arc::new(g.adjacency()), 3, &[4], 2, &a),
        data,
        28 + 18,
    ));
    v
}

#[test]
fn parameter_counts_and_shapes() {
    for (model, data, p) in cases() {
        assert_eq!(model.p(), p, "{}", model.preset_name());
        assert_eq!(model.in_dim(), data.d(), "{}", model.preset_name());
        assert_eq!(model.out_dim(), data.m(), "{}", model.preset_name());
        let specs: usize = model.param_specs().iter().map(|s| s.len()).sum();
        assert_eq!(specs, p);
    }
}

#[test]
fn loss_gradients_match_finite_differences() {
    for (model, data, _) in cases() {
        let theta = init_params(&model.param_specs(), &InitScheme::Torch, 3);
        let mut grad = vec![0.0; theta.len()];
        model.loss_and_grad(&theta, &data.x, &data.y, LossKind::HalfSse, &mut grad);
        let h = 1e-6;
        let mut t = theta.clone();
        for k in (0..theta.len()).step_by(1 + theta.len() / 40) {
            t[k] = theta[k] + h;
            let up = model.loss(&t, &data.x, &data.y, LossKind::HalfSse);
            t[k] = theta[k] - h;
            let dn = model.loss(&t, &data.x, &data.y, LossKind::HalfSse);
            t[k] = theta[k];
            let fd = (up - dn) / (2.0 * h);
            assert!(
                (fd - grad[k]).abs() <= 1e-5 * (1.0 + fd.abs()),
                "{} θ[{k}]: {} vs {fd}",
                model.preset_name(),
                grad[k]
            );
        }
    }
}

#[test]
fn ntk_matches_finite_difference_jacobian() {
    for (model, data, _) in cases() {
        let theta = init_params(&model.param_specs(), &InitScheme::Torch, 4);
        let (h, _) = ntk::gram(&model, &theta, &data.x);
        let nm = data.n() * model.out_dim();
        let mut j = Mat::<f64>::zeros(nm, theta.len());
        let mut t = theta.clone();
        let step = 1e-6;
        for k in 0..theta.len() {
            t[k] = theta[k] + step;
            let up = model.outputs(&t, &data.x);
            t[k] = theta[k] - step;
            let dn = model.outputs(&t, &data.x);
            t[k] = theta[k];
            for r in 0..nm {
                j[(r, k)] = (up.as_slice()[r] - dn.as_slice()[r]) / (2.0 * step);
            }
        }
        let want = &j * j.transpose();
        let scale = (0..nm).map(|i| want[(i, i)].abs()).fold(0.0, f64::max);
        for c in 0..nm {
            for r in 0..nm {
                assert!(
                    (h[(r, c)] - want[(r, c)]).abs() <= 1e-5 * scale,
                    "{}: H[{r},{c}] = {} vs {}",
                    model.preset_name(),
                    h[(r, c)],
                    want[(r, c)]
                );
            }
        }
    }
}
