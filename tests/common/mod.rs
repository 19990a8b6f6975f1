//! Shared helpers for the integration tests: a deterministic RNG, random batches, fresh temporary
//! directories, a shrunken DNN sweep with its `reproduce` options, and the generic finite-difference checker of the `Layer` contract (forward / vjp
//! / jvp).
//!
//! Everything here is an *independent* computation: finite differences of `forward`, plain loops
//! for inner products — never the library's own derivative code.
#![allow(dead_code)]

pub mod cli;

use gradflow::config::{Architecture, DataConfig, ModelSpec, Precision, Solver};
use gradflow::experiment::{ablation, Ablation, ReproduceOptions, Scale};
use gradflow::layers::{Layer, PreActivation};
use gradflow::Batch;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// Central-difference step.
pub const H: f64 = 1e-6;
/// Minimum distance of every pre-activation from every kink of its activation.
pub const KINK_MARGIN: f64 = 1e-3;
/// Relative tolerance of finite-difference comparisons.
pub const FD_REL: f64 = 1e-6;
/// Absolute floor of finite-difference comparisons, relative to the scale of the function.
pub const FD_ABS: f64 = 1e-7;

/// Held by tests that change faer's global parallelism in-process (`reproduce` packs small runs
/// one per core by setting it to sequential) and by tests that compare two in-process runs bit
/// for bit: the parallelism fixes the order of faer's sums, so such a run must not overlap a
/// change of it in another test thread.
pub static GLOBAL_PARALLELISM: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The [`GLOBAL_PARALLELISM`] lock (a panicking holder does not poison it for the others).
pub fn parallelism_lock() -> std::sync::MutexGuard<'static, ()> {
    GLOBAL_PARALLELISM.lock().unwrap_or_else(|e| e.into_inner())
}

/// A new empty directory under the system's temp dir, unique to this process and moment:
/// `gradflow-<suite>-<tag>-<pid>-<nanos>`.
pub fn fresh_dir(suite: &str, tag: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let d = std::env::temp_dir().join(format!(
        "gradflow-{suite}-{tag}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The quick DNN sweep cut to one run per width, each shrunk to hidden [w, w] on n balls in
/// d = 3 with m = 2 outputs and `epochs` GD epochs at `lr` (NTK and skip settings left to the
/// caller).
pub fn tiny_dnn_sweep(widths: &[usize], n: usize, epochs: usize, lr: f64) -> Ablation {
    let mut ab = ablation("dnn", Scale::Quick, 1).unwrap();
    ab.runs.truncate(widths.len());
    for (r, &w) in ab.runs.iter_mut().zip(widths) {
        r.value = w;
        r.label = format!("w={w}-seed0");
        let c = &mut r.config;
        c.data = DataConfig::Ball { n, d: 3, m: 2 };
        c.model.arch = Architecture::Preset(ModelSpec::Dnn { hidden: vec![w, w] });
        c.train.epochs = epochs;
        c.train.lr = lr;
    }
    ab
}

/// `reproduce` options for the dnn sweep alone into `out` (one seed, f64, no progress bar).
pub fn dnn_sweep_options(
    out: std::path::PathBuf,
    solver: Solver,
    no_ntk: bool,
) -> ReproduceOptions {
    ReproduceOptions {
        scale: Scale::Quick,
        only: vec!["dnn".into()],
        seeds: 1,
        out,
        shard: None,
        progress: false,
        precision: Precision::F64,
        solver,
        ntk_every: None,
        no_ntk,
        threshold_seeds: 2,
    }
}

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

pub fn uniform_vec(rng: &mut StdRng, len: usize, lo: f64, hi: f64) -> Vec<f64> {
    (0..len).map(|_| rng.random_range(lo..hi)).collect()
}

/// A (features × n) batch with entries uniform in [−1, 1).
pub fn random_batch(rng: &mut StdRng, features: usize, n: usize) -> Batch {
    Batch::from_vec(features, n, uniform_vec(rng, features * n, -1.0, 1.0))
}

/// Plain inner product of two slices (independent of `Batch::dot`).
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "dot: length mismatch");
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Σ |a_i b_i|: the scale against which rounding in ⟨a, b⟩ is judged.
pub fn abs_dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x * y).abs()).sum()
}

pub fn max_abs(a: &[f64]) -> f64 {
    a.iter().fold(0.0_f64, |m, v| m.max(v.abs()))
}

/// x + s·v for batches of equal shape.
pub fn axpy_batch(x: &Batch, s: f64, v: &Batch) -> Batch {
    assert_eq!((x.features(), x.n()), (v.features(), v.n()));
    let data = x
        .as_slice()
        .iter()
        .zip(v.as_slice())
        .map(|(a, b)| a + s * b)
        .collect();
    Batch::from_vec(x.features(), x.n(), data)
}

pub fn axpy(x: &[f64], s: f64, v: &[f64]) -> Vec<f64> {
    x.iter().zip(v).map(|(a, b)| a + s * b).collect()
}

/// Smallest |z − b| over every pre-activation z the layer reports and every kink b of its
/// activation (∞ when there is none).
pub fn min_kink_distance(layer: &dyn Layer, theta: &[f64], x: &Batch) -> f64 {
    let (_, tape) = layer.forward(theta, x);
    let mut min = f64::INFINITY;
    layer.visit_pre_activations(x, &tape, &mut |pa: PreActivation<'_>| {
        let kinks = pa.activation.kinks();
        for &z in pa.z.as_slice() {
            for &b in &kinks {
                min = min.min((z - b).abs());
            }
        }
    });
    min
}

/// `a` ≈ `b` with relative tolerance `rel` and absolute floor `abs`.
pub fn close(a: f64, b: f64, rel: f64, abs: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()) + abs
}

/// What `check_layer` measured (for printing in failing tests).
#[derive(Debug, Default)]
pub struct CheckReport {
    pub checked_inputs: usize,
    pub checked_params: usize,
    pub max_vjp_err: f64,
    pub max_jvp_err: f64,
    pub adjoint_err: f64,
    pub attempts: u64,
}

/// Draws θ (uniform ±1) and x (uniform ±1, in_dim × n) from `seed`, redrawing until every
/// pre-activation is at least `KINK_MARGIN` away from every kink.
pub fn draw_point(layer: &dyn Layer, n: usize, seed: u64) -> (Vec<f64>, Batch, u64) {
    let p = layer.num_params();
    for attempt in 0..2000u64 {
        let mut r = rng(seed.wrapping_add(attempt.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
        let theta = uniform_vec(&mut r, p, -1.0, 1.0);
        let x = random_batch(&mut r, layer.in_dim(), n);
        if min_kink_distance(layer, &theta, &x) >= KINK_MARGIN {
            return (theta, x, attempt + 1);
        }
    }
    panic!(
        "could not draw a point away from the kinks for `{}`",
        layer.describe()
    );
}

/// The generic layer checker. With random θ (±1), x (in_dim × n), ȳ, ẋ, θ̇ from `seed`:
/// (a) vjp against central differences of ⟨ȳ, forward(θ, x)⟩ in every input entry and every
///     parameter;
/// (b) jvp against (forward(θ+hθ̇, x+hẋ) − forward(θ−hθ̇, x−hẋ)) / 2h, entry by entry;
/// (c) adjointness ⟨jvp(ẋ, θ̇), ȳ⟩ = ⟨ẋ, x̄⟩ + ⟨θ̇, θ̄⟩;
/// (d) vjp adds into θ̄ (pre-filled with ones) and returns the same x̄;
/// (e) shapes, and for a layer that says it does not mix samples, column independence.
pub fn check_layer(layer: &dyn Layer, n: usize, seed: u64) -> CheckReport {
    let name = layer.describe();
    let p = layer.num_params();
    let (din, dout) = (layer.in_dim(), layer.out_dim());
    let (theta, x, attempts) = draw_point(layer, n, seed);
    let mut r = rng(seed ^ 0x5DEE_CE66_D1CE_4E5B);
    let y_bar = random_batch(&mut r, dout, n);
    let x_dot = random_batch(&mut r, din, n);
    let theta_dot = uniform_vec(&mut r, p, -1.0, 1.0);
    let mut report = CheckReport {
        attempts,
        ..Default::default()
    };

    // (e) shapes and the parameter-spec bookkeeping.
    let (y, tape) = layer.forward(&theta, &x);
    assert_eq!(
        (y.features(), y.n()),
        (dout, n),
        "{name}: forward output shape"
    );
    let spec_len: usize = layer.param_specs().iter().map(|s| s.len()).sum();
    assert_eq!(spec_len, p, "{name}: param_specs lengths must add up to p");
    assert!(y.as_slice().iter().all(|v| v.is_finite()));

    let phi = |th: &[f64], xx: &Batch| dot(layer.forward(th, xx).0.as_slice(), y_bar.as_slice());
    let scale = 1.0 + abs_dot(y.as_slice(), y_bar.as_slice());

    let mut theta_bar = vec![0.0; p];
    let x_bar = layer.vjp(&theta, &x, &tape, &y_bar, &mut theta_bar);
    assert_eq!((x_bar.features(), x_bar.n()), (din, n), "{name}: x̄ shape");

    // (a) inputs.
    for j in 0..din * n {
        let mut xp = x.clone();
        let mut xm = x.clone();
        xp.as_mut_slice()[j] += H;
        xm.as_mut_slice()[j] -= H;
        let fd = (phi(&theta, &xp) - phi(&theta, &xm)) / (2.0 * H);
        let got = x_bar.as_slice()[j];
        let err = (fd - got).abs();
        report.max_vjp_err = report.max_vjp_err.max(err);
        assert!(
            close(got, fd, FD_REL, FD_ABS * scale),
            "{name}: x̄[{j}] (feature {}, sample {}) = {got}, finite difference {fd}",
            j % din,
            j / din
        );
        report.checked_inputs += 1;
    }
    // (a) parameters.
    for k in 0..p {
        let mut tp = theta.clone();
        let mut tm = theta.clone();
        tp[k] += H;
        tm[k] -= H;
        let fd = (phi(&tp, &x) - phi(&tm, &x)) / (2.0 * H);
        let got = theta_bar[k];
        report.max_vjp_err = report.max_vjp_err.max((fd - got).abs());
        assert!(
            close(got, fd, FD_REL, FD_ABS * scale),
            "{name}: θ̄[{k}] = {got}, finite difference {fd}"
        );
        report.checked_params += 1;
    }

    // (b) jvp.
    let y_dot = layer.jvp(&theta, &x, &tape, &x_dot, &theta_dot);
    assert_eq!((y_dot.features(), y_dot.n()), (dout, n), "{name}: ẏ shape");
    let yp = layer
        .forward(&axpy(&theta, H, &theta_dot), &axpy_batch(&x, H, &x_dot))
        .0;
    let ym = layer
        .forward(&axpy(&theta, -H, &theta_dot), &axpy_batch(&x, -H, &x_dot))
        .0;
    let yscale = 1.0 + max_abs(y.as_slice());
    for j in 0..dout * n {
        let fd = (yp.as_slice()[j] - ym.as_slice()[j]) / (2.0 * H);
        let got = y_dot.as_slice()[j];
        report.max_jvp_err = report.max_jvp_err.max((fd - got).abs());
        assert!(
            close(got, fd, FD_REL, FD_ABS * yscale),
            "{name}: ẏ[{j}] (feature {}, sample {}) = {got}, finite difference {fd}",
            j % dout,
            j / dout
        );
    }

    // (c) adjointness.
    let lhs = dot(y_dot.as_slice(), y_bar.as_slice());
    let rhs = dot(x_dot.as_slice(), x_bar.as_slice()) + dot(&theta_dot, &theta_bar);
    let adj_scale = abs_dot(y_dot.as_slice(), y_bar.as_slice())
        + abs_dot(x_dot.as_slice(), x_bar.as_slice())
        + abs_dot(&theta_dot, &theta_bar)
        + 1e-300;
    report.adjoint_err = (lhs - rhs).abs() / adj_scale;
    assert!(
        report.adjoint_err <= 1e-10,
        "{name}: ⟨jvp, ȳ⟩ = {lhs} but ⟨ẋ, x̄⟩ + ⟨θ̇, θ̄⟩ = {rhs}"
    );

    // (d) accumulation into θ̄.
    let mut acc = vec![1.0; p];
    let x_bar2 = layer.vjp(&theta, &x, &tape, &y_bar, &mut acc);
    for k in 0..p {
        assert!(
            (acc[k] - 1.0 - theta_bar[k]).abs() <= 1e-12 * (1.0 + theta_bar[k].abs()),
            "{name}: vjp must add into θ̄: θ̄[{k}] started at 1, became {}, expected 1 + {}",
            acc[k],
            theta_bar[k]
        );
    }
    for (a, b) in x_bar2.as_slice().iter().zip(x_bar.as_slice()) {
        assert!(
            (a - b).abs() <= 1e-12 * (1.0 + b.abs()),
            "{name}: x̄ changed between calls"
        );
    }
    // A second call on the same buffer adds again: 1 + 2θ̄.
    layer.vjp(&theta, &x, &tape, &y_bar, &mut acc);
    for k in 0..p {
        assert!(
            (acc[k] - 1.0 - 2.0 * theta_bar[k]).abs() <= 1e-12 * (1.0 + theta_bar[k].abs()),
            "{name}: second vjp call must add again at θ̄[{k}]"
        );
    }

    // (e) column independence for layers that do not mix samples.
    if !layer.mixes_samples() && n > 1 {
        let mut x2 = x.clone();
        for v in x2.col_mut(0) {
            *v += 0.37;
        }
        let y2 = layer.forward(&theta, &x2).0;
        for i in 1..n {
            assert_eq!(
                y2.col(i),
                y.col(i),
                "{name}: says it does not mix samples, but changing sample 0 changed sample {i}"
            );
        }
    }
    report
}

/// J = ∂u/∂θ (nm × p, row i·m + a) by central differences of the model's outputs: the reference
/// every NTK route is compared with (J Jᵀ), independent of the library's derivative code.
pub fn jacobian_fd(model: &gradflow::model::Model, theta: &[f64], x: &Batch) -> faer::Mat<f64> {
    let nm = x.n() * model.out_dim();
    let mut j = faer::Mat::<f64>::zeros(nm, theta.len());
    let mut t = theta.to_vec();
    for k in 0..theta.len() {
        t[k] = theta[k] + H;
        let up = model.outputs(&t, x);
        t[k] = theta[k] - H;
        let down = model.outputs(&t, x);
        t[k] = theta[k];
        for r in 0..nm {
            j[(r, k)] = (up.as_slice()[r] - down.as_slice()[r]) / (2.0 * H);
        }
    }
    j
}
