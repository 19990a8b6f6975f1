//! `bench_flow`: the gradient-flow benchmarks of BENCHMARKS.md (not a test).
//!
//! (a) sigmoid DNN 8 → [32, 32] → 3, n = 40: the flow time of 10,000 GD epochs at η = 1e-3
//!     (t = 10) by the adaptive solve, its gradient evaluations, and the largest gap between
//!     the loss curves (GD vs GF) at the GD epochs;
//! (b) the same network with leaky ReLU on t ∈ [0, 20] (the case where a classic adaptive
//!     Runge–Kutta solve needed 657,254 evaluations): the kink-aware solve's evaluations and
//!     events, and its loss against the η → 0 limit of GD by Richardson extrapolation.
//!
//! Usage: `cargo run --release --bin bench_flow -- [a|b|br|plain] [T] [rtol]` — `br` adds the
//! GD runs for the Richardson extrapolation (η = 2e-3 … 6.25e-5: a few minutes); `plain` runs the
//! classic adaptive solve on the discontinuous field (no kink handling) for comparison.

use gradflow::activation::Activation;
use gradflow::data::Dataset;
use gradflow::flow::{gradient_flow, FlowOptions};
use gradflow::init::{init_params, InitScheme};
use gradflow::loss::LossKind;
use gradflow::presets;
use gradflow::train::{gradient_descent, Control, GdOptions};
use std::time::Instant;

fn gd_losses(
    model: &gradflow::model::Model,
    data: &Dataset,
    theta0: &[f64],
    lr: f64,
    epochs: usize,
) -> Vec<f64> {
    let mut th = theta0.to_vec();
    let mut out = Vec::with_capacity(epochs + 1);
    let opts = GdOptions {
        lr,
        epochs,
        loss: LossKind::Mse,
        track_kinks: false,
        precision: gradflow::config::Precision::F64,
    };
    gradient_descent(model, data, &mut th, &opts, |r, _| {
        out.push(r.loss);
        Control::Continue
    })
    .unwrap();
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let which = args.get(1).map(String::as_str).unwrap_or("ab");
    let t_end: f64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(20.0);
    let rtol: f64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1e-8);
    let data = Dataset::ball(40, 8, 3, 0);
    if which.contains('a') {
        let model = presets::dnn(8, &[32, 32], 3, &Activation::Sigmoid);
        let theta0 = init_params(&model.param_specs(), &InitScheme::Torch, 0);
        let t0 = Instant::now();
        let gd = gd_losses(&model, &data, &theta0, 1e-3, 10_000);
        let gd_s = t0.elapsed().as_secs_f64();
        let mut opts = FlowOptions::new(10.0, rtol, rtol * 1e-2, 10_000, LossKind::Mse);
        opts.max_gradient_evaluations = 2_000_000;
        let mut th = theta0.clone();
        let mut gf = Vec::new();
        let t0 = Instant::now();
        let out = gradient_flow(&model, &data, &mut th, &opts, |r, _| {
            gf.push(r.loss);
            Control::Continue
        })
        .unwrap();
        let gf_s = t0.elapsed().as_secs_f64();
        let gap = gd
            .iter()
            .zip(&gf)
            .map(|(a, b)| (a - b).abs() / b.abs())
            .fold(0.0, f64::max);
        println!("(a) sigmoid: GD 10,000 epochs {gd_s:.2} s; GF {} gradient evals ({} steps, {} rejected) {gf_s:.2} s; max relative loss gap {gap:.2e}; L(10) GD {:.6e} GF {:.6e}", out.counts.gradients, out.steps_accepted, out.steps_rejected, gd[10_000], gf[10_000]);
    }
    if which.contains('b') || which.contains("plain") {
        let model = presets::dnn(8, &[32, 32], 3, &Activation::leaky_relu());
        let theta0 = init_params(&model.param_specs(), &InitScheme::Torch, 0);
        let mut opts = FlowOptions::new(t_end, rtol, rtol * 1e-2, 20, LossKind::Mse);
        opts.kink_aware = !which.contains("plain");
        opts.max_gradient_evaluations = 700_000;
        let mut th = theta0.clone();
        let t0 = Instant::now();
        let out = gradient_flow(&model, &data, &mut th, &opts, |r, _| {
            println!("  t {:>6.2} loss {:.10e} pinned {:>3} crossings {:>5} slides {:>4} releases {:>4} grads {}", r.t, r.loss, r.pinned, r.crossings, r.slides, r.releases, r.gradient_evaluations);
            Control::Continue
        });
        let secs = t0.elapsed().as_secs_f64();
        match out {
            Ok(out) => println!("(b) leaky: {secs:.2} s; counts {:?}; equivalents {:.0}; steps {} rej {}; events: crossings {} slides {} releases {} touches {} max pinned {} sliding time {:.3} longest {:.3}; L(T) {:.12e}",
                out.counts, out.gradient_equivalents, out.steps_accepted, out.steps_rejected, out.events.crossings, out.events.slides, out.events.releases, out.events.touches, out.events.max_pinned, out.events.sliding_time, out.events.longest_slide, out.final_loss),
            Err(e) => println!("(b) failed after {secs:.2} s: {e}"),
        }
        if which.contains('r') {
            let etas = [2e-3, 1e-3, 5e-4, 2.5e-4, 1.25e-4, 6.25e-5];
            let mut ls = Vec::new();
            for &eta in &etas {
                let e = (t_end / eta).round() as usize;
                let l = gd_losses(&model, &data, &theta0, eta, e)[e];
                println!("  GD η = {eta:e}: L(T) = {l:.12e}");
                ls.push(l);
            }
            for w in ls.windows(2) {
                println!("  Richardson (first order): {:.12e}", 2.0 * w[1] - w[0]);
            }
            for w in ls.windows(3) {
                let r1 = 2.0 * w[1] - w[0];
                let r2 = 2.0 * w[2] - w[1];
                println!(
                    "  Richardson (second order): {:.12e}",
                    (4.0 * r2 - r1) / 3.0
                );
            }
        }
    }
}
