//! Parameter initialisation: PyTorch's default (U(±1/√fan_in) for weights and biases), Kaiming
//! normal, the PReLU constant, and reproducibility — fan-ins taken from the tensor shapes here,
//! not from the library's own bookkeeping.

use gradflow::activation::Activation;
use gradflow::init::{init_params, InitScheme};
use gradflow::layers::ParamRole;
use gradflow::presets;

/// (name, offset, length, fan_in) of every weight and bias of a model whose weights are
/// (out × in) matrices, each followed by its bias — fan_in read from the weight's shape.
fn dense_tensors(specs: &[gradflow::layers::ParamSpec]) -> Vec<(String, usize, usize, usize)> {
    let mut out = Vec::new();
    let mut offset = 0;
    let mut fan_in = None;
    for s in specs {
        if s.name.ends_with("weight") && s.shape.len() == 2 {
            fan_in = Some(s.shape[1]);
            out.push((s.name.clone(), offset, s.len(), s.shape[1]));
        } else if s.name.ends_with("bias") {
            out.push((
                s.name.clone(),
                offset,
                s.len(),
                fan_in.expect("bias after weight"),
            ));
        }
        offset += s.len();
    }
    out
}

fn mean_var(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    (
        m,
        v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0),
    )
}

#[test]
fn torch_init_respects_each_layers_bound() {
    let model = presets::dnn(4, &[64, 32], 3, &Activation::leaky_relu());
    let specs = model.param_specs();
    let theta = init_params(&specs, &InitScheme::Torch, 1);
    assert_eq!(theta.len(), model.p());
    let tensors = dense_tensors(&specs);
    assert_eq!(tensors.len(), 6);
    for (name, off, len, fan_in) in tensors {
        let bound = 1.0 / (fan_in as f64).sqrt();
        let t = &theta[off..off + len];
        let max = t.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
        assert!(max <= bound, "{name}: |θ| up to {max} > 1/√{fan_in}");
        // Uses the whole range: with ≥ 3 draws, max |θ| > bound/4 is all but certain, and for
        // the big tensors max |θ| > 0.9 bound (P(fail) = 0.9^len).
        assert!(max > 0.25 * bound, "{name}: max {max} ≪ bound {bound}");
        if len >= 100 {
            assert!(max > 0.9 * bound, "{name}: max {max}, bound {bound}");
        }
        assert!(t.iter().any(|v| *v < 0.0) && t.iter().any(|v| *v > 0.0));
    }
}

#[test]
fn torch_init_moments_on_a_big_layer() {
    let model = presets::dnn(400, &[], 300, &Activation::leaky_relu());
    let theta = init_params(&model.param_specs(), &InitScheme::Torch, 9);
    let w = &theta[..400 * 300];
    let b = &theta[400 * 300..];
    let bound2 = 1.0 / 400.0;
    let (m, v) = mean_var(w);
    // sd of the mean: bound/√(3N) ≈ 8e-5; sd of the variance ≈ 0.26% of bound²/3.
    assert!(
        m.abs() < 5.0 * (bound2 / 3.0 / w.len() as f64).sqrt(),
        "mean {m}"
    );
    assert!(
        (v / (bound2 / 3.0) - 1.0).abs() < 0.02,
        "variance {v}, expected {}",
        bound2 / 3.0
    );
    let (mb, vb) = mean_var(b);
    assert!(
        mb.abs() < 5.0 * (bound2 / 3.0 / 300.0).sqrt(),
        "bias mean {mb}"
    );
    assert!(
        (vb / (bound2 / 3.0) - 1.0).abs() < 0.35,
        "bias variance {vb}"
    );
    assert!(b.iter().all(|x| x.abs() <= 0.05));
}

#[test]
fn same_seed_same_theta_different_seed_different_theta() {
    let model = presets::resnet(5, 3, 2, &Activation::leaky_relu());
    let specs = model.param_specs();
    for scheme in [
        InitScheme::Torch,
        InitScheme::KaimingNormal,
        InitScheme::Normal { std: 0.3 },
    ] {
        let a = init_params(&specs, &scheme, 123);
        let b = init_params(&specs, &scheme, 123);
        let c = init_params(&specs, &scheme, 124);
        assert_eq!(a.len(), model.p());
        assert!(
            a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{}: same seed must give bit-identical θ",
            scheme.name()
        );
        let differ = a.iter().zip(&c).filter(|(x, y)| x != y).count();
        // Every random entry should differ (Kaiming biases are zero in both).
        let random_entries = match scheme {
            InitScheme::KaimingNormal => 3 * 25 + 2 * 5,
            _ => model.p(),
        };
        assert_eq!(differ, random_entries, "{}", scheme.name());
    }
}

#[test]
fn kaiming_normal_variance_and_zero_biases() {
    let model = presets::dnn(300, &[400], 2, &Activation::leaky_relu());
    let specs = model.param_specs();
    let theta = init_params(&specs, &InitScheme::KaimingNormal, 5);
    let tensors = dense_tensors(&specs);
    for (name, off, len, fan_in) in &tensors {
        let t = &theta[*off..off + len];
        if name.ends_with("bias") {
            assert!(t.iter().all(|v| *v == 0.0), "{name} must be zero");
        }
        if name == "0.weight" {
            assert_eq!(*len, 400 * 300);
            let (m, v) = mean_var(t);
            let want = 2.0 / *fan_in as f64;
            // N = 120,000: relative sd of the variance √(2/N) ≈ 0.4%.
            assert!(
                (v / want - 1.0).abs() < 0.03,
                "{name}: variance {v}, expected {want}"
            );
            assert!(
                m.abs() < 5.0 * (want / *len as f64).sqrt(),
                "{name}: mean {m}"
            );
            // Normal, not uniform: a fraction ≈ 4.55% lies beyond 2 sd.
            let beyond = t.iter().filter(|x| x.abs() > 2.0 * want.sqrt()).count() as f64;
            let frac = beyond / *len as f64;
            assert!((frac - 0.0455).abs() < 0.004, "fraction beyond 2 sd {frac}");
        }
        if name == "2.weight" {
            // fan_in 400: variance 0.005 over 800 draws, loose.
            let (_, v) = mean_var(t);
            assert!(
                (v / (2.0 / 400.0) - 1.0).abs() < 0.25,
                "{name}: variance {v}"
            );
        }
    }
}

#[test]
fn normal_scheme_uses_the_given_std_everywhere() {
    let model = presets::dnn(200, &[], 200, &Activation::leaky_relu());
    let theta = init_params(&model.param_specs(), &InitScheme::Normal { std: 0.3 }, 2);
    let (m, v) = mean_var(&theta);
    assert!(m.abs() < 0.01);
    assert!((v / 0.09 - 1.0).abs() < 0.03, "variance {v}");
    let biases = &theta[200 * 200..];
    assert!(biases.iter().any(|b| *b != 0.0));
}

#[test]
fn prelu_slope_is_initialised_to_a_quarter() {
    let act = Activation::Prelu { init: 0.25 };
    let model = presets::dnn(3, &[4, 5], 2, &act);
    let specs = model.param_specs();
    // Sequential(Linear, PReLU, Linear, PReLU, Linear): slopes at 1.weight and 3.weight.
    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "0.weight", "0.bias", "1.weight", "2.weight", "2.bias", "3.weight", "4.weight",
            "4.bias"
        ]
    );
    for scheme in [
        InitScheme::Torch,
        InitScheme::KaimingNormal,
        InitScheme::Normal { std: 1.0 },
    ] {
        let theta = init_params(&specs, &scheme, 17);
        let mut off = 0;
        for s in &specs {
            if s.name == "1.weight" || s.name == "3.weight" {
                assert_eq!(s.shape, vec![1]);
                assert_eq!(s.role, ParamRole::Constant { value: 0.25 });
                assert_eq!(theta[off], 0.25, "{} under {}", s.name, scheme.name());
            }
            off += s.len();
        }
        assert_eq!(off, model.p());
    }
}
