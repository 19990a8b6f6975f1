//! Numerical health: when a value stops being finite, the message names where — the parameter
//! tensor, the layer of the forward pass, or the gradient's tensor — and the epoch.

use gradflow::activation::Activation;
use gradflow::data::Dataset;
use gradflow::error::Error;
use gradflow::init::{init_params, InitScheme};
use gradflow::loss::LossKind;
use gradflow::presets;
use gradflow::train::{gradient_descent, Control, GdOptions};

#[test]
fn a_nan_parameter_is_named_by_its_tensor() {
    let model = presets::dnn(3, &[4, 4], 2, &Activation::leaky_relu());
    let data = Dataset::ball(5, 3, 2, 0);
    let mut theta = init_params(&model.param_specs(), &InitScheme::Torch, 0);
    // `2.weight` starts after 0.weight (4×3) and 0.bias (4).
    theta[16 + 5] = f64::NAN;
    let grad = vec![0.0; theta.len()];
    let d = model.diagnose_non_finite(&theta, &data.x, &grad).unwrap();
    assert!(d.contains("`2.weight`"), "{d}");
}

#[test]
fn a_forward_overflow_is_named_by_its_layer() {
    let model = presets::resnet(3, 2, 2, &Activation::leaky_relu());
    // Positive inputs, and block 1's weight and bias (after block 0's 3×3 + 3) at f64::MAX:
    // its pre-activations overflow to +∞ while block 0 stays finite.
    let x = vec![0.5; 5 * 3];
    let y = vec![0.0; 5 * 2];
    let p = std::path::Path::new("<test>");
    let data = Dataset::from_rows(x, (5, 3), y, (5, 2), p, p).unwrap();
    let mut theta = init_params(&model.param_specs(), &InitScheme::Torch, 0);
    for v in &mut theta[12..24] {
        *v = f64::MAX;
    }
    let grad = vec![0.0; theta.len()];
    let d = model.diagnose_non_finite(&theta, &data.x, &grad).unwrap();
    assert!(
        d.contains("layer `1.fn.0`") && d.contains("dense 3 → 3"),
        "{d}"
    );
    // All finite: nothing to report.
    let theta = init_params(&model.param_specs(), &InitScheme::Torch, 0);
    assert_eq!(model.diagnose_non_finite(&theta, &data.x, &grad), None);
}

#[test]
fn divergence_names_the_epoch_and_where() {
    let model = presets::resnet(3, 3, 2, &Activation::leaky_relu());
    let data = Dataset::ball(10, 3, 2, 1);
    let mut theta = init_params(&model.param_specs(), &InitScheme::Torch, 1);
    let opts = GdOptions {
        lr: 1e30,
        epochs: 50,
        loss: LossKind::Mse,
        track_kinks: true,
        precision: gradflow::train::Precision::F64,
    };
    let err =
        gradient_descent(&model, &data, &mut theta, &opts, |_, _| Control::Continue).unwrap_err();
    let Error::Diverged(msg) = err else {
        panic!("expected divergence, got {err}")
    };
    assert!(msg.contains("epoch 1"), "{msg}");
    assert!(
        msg.contains(".weight`") || msg.contains(".bias`") || msg.contains("layer `"),
        "{msg}"
    );
    assert!(msg.contains("train.lr"), "{msg}");
}
