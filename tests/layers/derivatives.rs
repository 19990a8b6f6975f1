//! The `Layer` contract (forward / vjp / jvp, accumulation into θ̄) checked by central finite
//! differences for every layer kind, every activation, the composites, and the whole presets.

use crate::common;

use common::{check_layer, random_batch, rng};
use gradflow::activation::{Activation, PiecewisePolynomial};
use gradflow::graph::{Graph, SparseMatrix};
use gradflow::layers::{ActivationLayer, Dense, Layer, Propagate, Residual, Serial};
use gradflow::presets;
use std::sync::Arc;

/// A continuous, non-zero piecewise polynomial with 3 pieces of degree ≤ 3:
/// −0.1 + 0.1 z on (−∞, −1], 0.1 + z + 0.5 z² − 0.2 z³ on (−1, 1], −0.9 + 2.6 z − 0.3 z² on (1, ∞).
fn cubic_piecewise() -> PiecewisePolynomial {
    PiecewisePolynomial::new(
        vec![-1.0, 1.0],
        vec![
            vec![-0.1, 0.1],
            vec![0.1, 1.0, 0.5, -0.2],
            vec![-0.9, 2.6, -0.3],
        ],
    )
    .expect("continuous by construction")
}

fn all_activations() -> Vec<Activation> {
    vec![
        Activation::LeakyRelu { slope: 0.01 },
        Activation::LeakyRelu { slope: 0.2 },
        Activation::Prelu { init: 0.25 },
        Activation::Relu,
        Activation::Sigmoid,
        Activation::Piecewise(cubic_piecewise()),
    ]
}

/// Â of a kNN graph on `n` random points in R^2.
fn random_a_hat(n: usize, k: usize, seed: u64) -> Arc<SparseMatrix> {
    let pts = random_batch(&mut rng(seed), 2, n);
    Arc::new(Graph::knn(&pts, k).unwrap().normalized_adjacency())
}

#[test]
fn dense_layers_of_several_shapes() {
    for (seed, &(inp, out, n)) in [(1, 1, 1), (1, 1, 3), (3, 2, 4), (2, 5, 3), (4, 4, 2)]
        .iter()
        .enumerate()
    {
        let layer = Dense::new(inp, out);
        assert_eq!(layer.num_params(), out * inp + out);
        let r = check_layer(&layer, n, 100 + seed as u64);
        assert_eq!(r.checked_params, out * inp + out);
        assert_eq!(r.checked_inputs, inp * n);
    }
}

/// `Linear(bias=False)`: the contract by finite differences, θ = W only, and the structured NTK
/// term (no "+ 1" for the missing bias) against the generic per-column route.
#[test]
fn dense_without_bias() {
    for (seed, &(inp, out, n)) in [(1, 1, 2), (3, 2, 4), (2, 5, 3)].iter().enumerate() {
        let layer = Dense::without_bias(inp, out);
        assert_eq!(layer.num_params(), out * inp);
        assert_eq!(layer.param_specs().len(), 1);
        let r = check_layer(&layer, n, 150 + seed as u64);
        assert_eq!(r.checked_params, out * inp);
    }
    // W = [[1, 2, 3], [4, 5, 6]], x = (1, −1, 2): no bias added.
    let layer = Dense::without_bias(3, 2);
    let x = gradflow::Batch::from_vec(3, 1, vec![1.0, -1.0, 2.0]);
    let y = layer.forward(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &x).0;
    assert_eq!(y.as_slice(), &[1.0 - 2.0 + 6.0, 4.0 - 5.0 + 12.0]);
    let (n, reps) = (3, 2);
    let mut r = rng(160);
    let layer = Dense::without_bias(4, 3);
    let theta = common::uniform_vec(&mut r, layer.num_params(), -1.0, 1.0);
    let x = random_batch(&mut r, 4, n);
    let y_bar = random_batch(&mut r, 3, n * reps);
    let (_, tape) = layer.forward(&theta, &x);
    let mut g1 = faer::Mat::<f64>::zeros(n * reps, n * reps);
    let mut g2 = faer::Mat::<f64>::zeros(n * reps, n * reps);
    layer.vjp_gram(&theta, &x, &tape, &y_bar, reps, &mut g1);
    gradflow::layers::generic_vjp_gram(&layer, &theta, &x, &tape, &y_bar, reps, &mut g2);
    for c in 0..n * reps {
        for d in 0..=c {
            assert!((g1[(c, d)] - g2[(c, d)]).abs() <= 1e-13 * (1.0 + g2[(c, d)].abs()));
        }
    }
}

#[test]
fn dense_forward_is_row_major_weight_then_bias() {
    // W = [[1, 2, 3], [4, 5, 6]], b = [10, 20]; x = (1, −1, 2).
    let layer = Dense::new(3, 2);
    let theta = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 10.0, 20.0];
    let x = gradflow::Batch::from_vec(3, 1, vec![1.0, -1.0, 2.0]);
    let y = layer.forward(&theta, &x).0;
    assert_eq!(
        y.as_slice(),
        &[1.0 - 2.0 + 6.0 + 10.0, 4.0 - 5.0 + 12.0 + 20.0]
    );
}

#[test]
fn activation_layer_every_activation() {
    for (i, act) in all_activations().into_iter().enumerate() {
        let layer = ActivationLayer::new(act.clone(), 3);
        let expected_p = usize::from(matches!(act, Activation::Prelu { .. }));
        assert_eq!(layer.num_params(), expected_p, "{act}");
        let r = check_layer(&layer, 4, 200 + i as u64);
        assert_eq!(r.checked_params, expected_p, "{act}");
    }
}

#[test]
fn prelu_slope_gradient_is_sum_of_negative_parts() {
    // ∂/∂a Σ ȳ·σ_a(z) = Σ_{z ≤ 0} ȳ z, by hand on a 2 × 2 batch.
    let layer = ActivationLayer::new(Activation::Prelu { init: 0.25 }, 2);
    let x = gradflow::Batch::from_vec(2, 2, vec![-2.0, 3.0, 0.5, -0.25]);
    let y_bar = gradflow::Batch::from_vec(2, 2, vec![1.5, -1.0, 2.0, 4.0]);
    let theta = [0.3];
    let (y, tape) = layer.forward(&theta, &x);
    assert_eq!(y.as_slice(), &[-0.6, 3.0, 0.5, -0.075]);
    let mut tb = [0.0];
    let xb = layer.vjp(&theta, &x, &tape, &y_bar, &mut tb);
    assert!((tb[0] - (1.5 * -2.0 + 4.0 * -0.25)).abs() < 1e-15);
    assert_eq!(xb.as_slice(), &[1.5 * 0.3, -1.0, 2.0, 4.0 * 0.3]);
}

#[test]
fn serial_dense_act_dense() {
    for (i, act) in all_activations().into_iter().enumerate() {
        let net = Serial::new(vec![
            Box::new(Dense::new(3, 5)),
            Box::new(ActivationLayer::new(act.clone(), 5)),
            Box::new(Dense::new(5, 2)),
        ]);
        assert_eq!(net.num_params(), 20 + act.num_params() + 12);
        check_layer(&net, 4, 300 + i as u64);
    }
}

#[test]
fn residual_of_dense_and_activation() {
    for (i, act) in all_activations().into_iter().enumerate() {
        let branch = Serial::new(vec![
            Box::new(Dense::new(3, 3)),
            Box::new(ActivationLayer::new(act, 3)),
        ]);
        let block = Residual::new(Box::new(branch));
        check_layer(&block, 3, 400 + i as u64);
    }
}

#[test]
fn residual_adds_the_identity() {
    // With W = 0, b = 0 and leaky ReLU, g(x) = 0, so y = x exactly.
    let block = Residual::new(Box::new(Serial::new(vec![
        Box::new(Dense::new(2, 2)),
        Box::new(ActivationLayer::new(Activation::leaky_relu(), 2)),
    ])));
    let x = gradflow::Batch::from_vec(2, 2, vec![0.3, -0.7, 1.1, 2.0]);
    let y = block.forward(&[0.0; 6], &x).0;
    assert_eq!(y.as_slice(), x.as_slice());
}

#[test]
fn propagate_on_knn_graph() {
    let n = 7;
    let a_hat = random_a_hat(n, 2, 11);
    let layer = Propagate::new(a_hat.clone(), 3);
    assert!(layer.mixes_samples());
    check_layer(&layer, n, 500);

    // Forward is Y = X Âᵀ in the (features × n) layout, i.e. y_i = Σ_j Â_ij x_j.
    let dense = a_hat.to_dense();
    let x = random_batch(&mut rng(12), 3, n);
    let y = layer.forward(&[], &x).0;
    for i in 0..n {
        for a in 0..3 {
            let want: f64 = (0..n).map(|j| dense[i * n + j] * x.col(j)[a]).sum();
            assert!((y.col(i)[a] - want).abs() < 1e-14);
        }
    }
}

#[test]
fn propagate_with_non_symmetric_matrix() {
    // A non-symmetric matrix exposes a vjp that forgot to transpose.
    let m =
        SparseMatrix::from_triplets(3, vec![(0, 1, 2.0), (1, 2, -1.0), (2, 0, 0.5), (2, 2, 3.0)]);
    let layer = Propagate::new(Arc::new(m), 2);
    check_layer(&layer, 3, 501);
}

#[test]
fn preset_dnn_as_layer() {
    for (i, act) in all_activations().into_iter().enumerate() {
        let model = presets::dnn(3, &[5, 4], 2, &act);
        check_layer(model.net.as_ref(), 4, 600 + i as u64);
    }
}

#[test]
fn preset_resnet_as_layer() {
    for (i, act) in all_activations().into_iter().enumerate() {
        let model = presets::resnet(3, 3, 2, &act);
        check_layer(model.net.as_ref(), 3, 700 + i as u64);
    }
}

#[test]
fn preset_gcn_as_layer() {
    let n = 6;
    for (i, act) in all_activations().into_iter().enumerate() {
        let a_hat = random_a_hat(n, 2, 800 + i as u64);
        let model = presets::gcn(a_hat, 3, &[4, 3], 2, &act);
        assert!(model.net.mixes_samples());
        check_layer(model.net.as_ref(), n, 800 + i as u64);
    }
}

#[test]
fn preset_dnn_without_hidden_layers_is_affine() {
    let model = presets::dnn(3, &[], 2, &Activation::leaky_relu());
    assert_eq!(model.p(), 8);
    check_layer(model.net.as_ref(), 5, 900);
}

// ---- The checker itself must catch broken layers (so that a pass means something). ----

use gradflow::layers::Tape;
use gradflow::Batch;

#[derive(Debug)]
enum Fault {
    /// vjp overwrites θ̄ instead of adding into it.
    Overwrites,
    /// jvp ignores θ̇.
    JvpIgnoresTheta,
    /// vjp scales x̄ by 1.001.
    InputCotangentOff,
    /// vjp's bias cotangent is off by 1e-4 relative.
    BiasSlightlyOff,
}

#[derive(Debug)]
struct Broken {
    inner: Dense,
    fault: Fault,
}

impl Layer for Broken {
    fn describe(&self) -> String {
        format!("broken dense ({:?})", self.fault)
    }
    fn in_dim(&self) -> usize {
        self.inner.in_dim()
    }
    fn out_dim(&self) -> usize {
        self.inner.out_dim()
    }
    fn param_specs(&self) -> Vec<gradflow::layers::ParamSpec> {
        self.inner.param_specs()
    }
    fn forward(&self, theta: &[f64], x: &Batch) -> (Batch, Tape) {
        self.inner.forward(theta, x)
    }
    fn vjp(&self, theta: &[f64], x: &Batch, tape: &Tape, y_bar: &Batch, tb: &mut [f64]) -> Batch {
        if let Fault::Overwrites = self.fault {
            tb.iter_mut().for_each(|v| *v = 0.0);
        }
        let mut xb = self.inner.vjp(theta, x, tape, y_bar, tb);
        match self.fault {
            Fault::InputCotangentOff => xb.as_mut_slice().iter_mut().for_each(|v| *v *= 1.001),
            Fault::BiasSlightlyOff => {
                let k = tb.len() - 1;
                tb[k] *= 1.0 + 1e-4;
            }
            _ => {}
        }
        xb
    }
    fn jvp(&self, theta: &[f64], x: &Batch, tape: &Tape, xd: &Batch, td: &[f64]) -> Batch {
        match self.fault {
            Fault::JvpIgnoresTheta => {
                self.inner
                    .jvp(theta, x, tape, xd, &vec![0.0; self.inner.num_params()])
            }
            _ => self.inner.jvp(theta, x, tape, xd, td),
        }
    }
}

fn broken(fault: Fault) -> Broken {
    Broken {
        inner: Dense::new(3, 2),
        fault,
    }
}

#[test]
#[should_panic(expected = "must add into")]
fn checker_catches_overwriting_vjp() {
    check_layer(&broken(Fault::Overwrites), 3, 1);
}

#[test]
#[should_panic(expected = "finite difference")]
fn checker_catches_jvp_without_parameter_tangent() {
    check_layer(&broken(Fault::JvpIgnoresTheta), 3, 1);
}

#[test]
#[should_panic(expected = "x̄[")]
fn checker_catches_wrong_input_cotangent() {
    check_layer(&broken(Fault::InputCotangentOff), 3, 1);
}

#[test]
#[should_panic(expected = "θ̄[")]
fn checker_catches_small_parameter_cotangent_error() {
    check_layer(&broken(Fault::BiasSlightlyOff), 3, 1);
}
