//! `bench_flow`: the gradient-flow benchmarks of BENCHMARKS.md (not a test).
//!
//! (a) sigmoid DNN 8 → [32, 32] → 3, n = 40: the flow time of 10,000 GD epochs at η = 1e-3
//!     (t = 10) by the adaptive solve, its gradient evaluations, and the largest gap between
//!     the loss curves (GD vs GF) at the GD epochs;
//! (b) the same network with leaky ReLU on t ∈ [0, 20] (the case where a classic adaptive
//!     Runge–Kutta solve needed 657,254 evaluations): the kink-aware solve's evaluations and
//!     events, and its loss against the η → 0 limit of GD by Richardson extrapolation.
//!
//! (q) the quick sweep's dnn w = 48 (20 → [48, 48] → 5, n = 100, leaky ReLU) to t = T: the
//!     kink-aware solve by the compiled route and (T ≤ 30) by the layer path, GD at η = 0.1 to
//!     the same time, in the same run; allocations per field evaluation at a fixed pinned state
//!     (the steady state) and over the whole solve, counted by a counting allocator.
//!
//! (qs) the (q) problem's compiled solve to t = T traced step by step: per window between the 20
//!     output times, accepted steps, steps ended by an event, rejections (after an event-cut
//!     step or not), the lengths of uncut steps, gradients in steps vs in event handling, and
//!     λ_max of ∇²L on the frozen pattern (power iteration on finite differences of the
//!     field) at the window's start: DOPRI5's real stability interval is hλ ≤ 3.3, GD's ηλ ≤ 2.
//!     `qs [T] [rtol] [width]` runs the same network at another hidden width (the sweep's 96).
//!
//! (k) the (q) network's field evaluation at a fixed pinned set (default 120 first-layer and 60
//!     second-layer entries, about the late quick run's), as a ratio to the plain compiled
//!     gradient timed in the same run: a DOPRI stage evaluation (no normal speeds) and a full one
//!     (with diag(G⁻¹)). `k [first] [second] [reps]`.
//!
//! Usage: `cargo run --release --bin bench_flow -- [a|b|bl|br|plain|q|qs|k] [T] [rtol]` — `bl` runs (b)
//! by the general layer path (the route before the compiled one), `br` adds the
//! GD runs for the Richardson extrapolation (η = 2e-3 … 6.25e-5: a few minutes); `plain` runs the
//! classic adaptive solve on the discontinuous field (no kink handling) for comparison.

use gradflow::activation::Activation;
use gradflow::data::Dataset;
use gradflow::flow::{gradient_flow, FlowOptions};
use gradflow::init::{init_params, InitScheme};
use gradflow::loss::LossKind;
use gradflow::presets;
use gradflow::train::{gradient_descent, Control, GdOptions};
use gradflow_bench::CountingAllocator;
use std::time::Instant;

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn allocs() -> u64 {
    gradflow_bench::allocations()
}

/// Flow options with the step pairs chosen by `BENCH_FLOW_PAIRS` (`dopri`: Dormand–Prince
/// throughout; `cheap`: Bogacki–Shampine steps where events set the step length; unset: the
/// library's default).
fn flow_options(t_end: f64, rtol: f64, outputs: usize) -> FlowOptions {
    let mut opts = FlowOptions::new(t_end, rtol, rtol * 1e-2, outputs, LossKind::Mse);
    match std::env::var("BENCH_FLOW_PAIRS").as_deref() {
        Ok("dopri") => opts.cheap_steps = false,
        Ok("cheap") => opts.cheap_steps = true,
        Ok(other) => panic!("BENCH_FLOW_PAIRS: `dopri` or `cheap`, not `{other}`"),
        Err(_) => {}
    }
    opts
}

/// (q): see the module docs.
fn quick_dnn(t_end: f64, rtol: f64) {
    use gradflow::flow::system::KinkSystem;
    let model = presets::dnn(20, &[48, 48], 5, &Activation::leaky_relu());
    let data = Dataset::ball(100, 20, 5, 0);
    let theta0 = init_params(&model.param_specs(), &InitScheme::Torch, 0);
    let epochs = (t_end / 0.1).round() as usize;
    let t0 = Instant::now();
    let gd = gd_losses(&model, &data, &theta0, 0.1, epochs);
    let gd_s = t0.elapsed().as_secs_f64();
    println!(
        "(q) GD η = 0.1, {epochs} epochs: {gd_s:.3} s, L = {:.10e}",
        gd[epochs]
    );
    // GD's η → 0 limit by Richardson extrapolation (first order, then second) from η = 0.1/2^k.
    let mut ls = vec![gd[epochs]];
    for k in 1..4 {
        let eta = 0.1 / (1 << k) as f64;
        let e = (t_end / eta).round() as usize;
        ls.push(gd_losses(&model, &data, &theta0, eta, e)[e]);
    }
    let r1: Vec<f64> = ls.windows(2).map(|w| 2.0 * w[1] - w[0]).collect();
    let r2: Vec<f64> = r1.windows(2).map(|w| (4.0 * w[1] - w[0]) / 3.0).collect();
    let show = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.10e}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "(q) GD L(T) at η = 0.1 … 0.0125: {}; Richardson 1st {}; 2nd {}",
        show(&ls),
        show(&r1),
        show(&r2)
    );
    let routes: &[bool] = if t_end <= 30.0 {
        &[true, false]
    } else {
        &[true]
    };
    for &compiled in routes {
        let mut opts = flow_options(t_end, rtol, 20);
        opts.compiled = compiled;
        let mut th = theta0.clone();
        let (a0, t0) = (allocs(), Instant::now());
        let out = gradient_flow(&model, &data, &mut th, &opts, |_, _| Control::Continue).unwrap();
        let (secs, a1) = (t0.elapsed().as_secs_f64(), allocs());
        println!(
            "(q) flow ({}{}): {secs:.3} s = {:.1}× GD; {} gradients ({:.0} equivalents, {:.2} per unit t; GD {:.0}; {} in steps), {} steps ({} rejected; {} by BS3), max pinned {}, {} crossings, {} slides, {} releases; {:.2} allocations per gradient; L(T) = {:.10e}",
            if compiled { "compiled" } else { "layers" },
            if opts.cheap_steps { ", cheap steps" } else { "" },
            secs / gd_s,
            out.counts.gradients,
            out.gradient_equivalents,
            out.gradient_equivalents / t_end,
            10.0,
            out.step_evaluations,
            out.steps_accepted,
            out.steps_rejected,
            out.steps_low_order,
            out.events.max_pinned,
            out.events.crossings,
            out.events.slides,
            out.events.releases,
            (a1 - a0) as f64 / out.counts.gradients as f64,
            out.final_loss
        );
        let limit = *r2.last().unwrap();
        println!(
            "(q)   L(T) − GD η → 0 limit = {:.2e} (spread of the last two extrapolations {:.1e}); mean step {:.4}",
            out.final_loss - limit,
            (r2[1] - r2[0]).abs(),
            t_end / out.steps_accepted as f64
        );
    }
    // The steady state: field evaluations at a fixed pinned set (every 97th entry pinned).
    let mut sys = KinkSystem::new(&model, &data, LossKind::Mse, &theta0, true).unwrap();
    let pinned: Vec<usize> = (0..sys.entries()).step_by(97).collect();
    for &e in &pinned {
        sys.pieces[e] = 0;
    }
    sys.pinned = pinned.clone();
    sys.refresh();
    let mut f = vec![0.0; theta0.len()];
    for _ in 0..3 {
        sys.evaluate(&theta0, &mut f).unwrap();
    }
    let reps = 200;
    let (a0, t0) = (allocs(), Instant::now());
    for _ in 0..reps {
        sys.evaluate(&theta0, &mut f).unwrap();
    }
    let (secs, a1) = (t0.elapsed().as_secs_f64(), allocs());
    let mut g = vec![0.0; theta0.len()];
    let t1 = Instant::now();
    for _ in 0..reps {
        model.loss_and_grad(&theta0, &data.x, &data.y, LossKind::Mse, &mut g);
    }
    let layer_s = t1.elapsed().as_secs_f64();
    println!(
        "(q) steady state, {} pinned: {:.3} ms per field evaluation (layer-path plain gradient {:.3} ms), {} allocations in {reps} evaluations",
        pinned.len(),
        1e3 * secs / reps as f64,
        1e3 * layer_s / reps as f64,
        a1 - a0
    );
}

/// λ_max of the Hessian of L on the activation pattern frozen at θ (the Jacobian of the field a
/// DOPRI step integrates, before projection) by power iteration on central differences of the
/// frozen-pattern field (60 iterations, or until the Rayleigh quotient settles to 1e-6). The
/// plain gradient would not do: pinned entries sit on kinks, where it jumps.
fn lambda_max(model: &gradflow::model::Model, data: &Dataset, theta: &[f64]) -> f64 {
    use gradflow::flow::system::KinkSystem;
    let mut sys = KinkSystem::new(model, data, LossKind::Mse, theta, true).unwrap();
    let p = theta.len();
    let mut v: Vec<f64> = (0..p).map(|i| ((i * 7919) % 101) as f64 - 50.0).collect();
    let (mut fp, mut fm) = (vec![0.0; p], vec![0.0; p]);
    let mut lam = 0.0;
    for _ in 0..60 {
        let nv = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        v.iter_mut().for_each(|x| *x /= nv);
        let eps = 1e-6 * (1.0 + theta.iter().map(|x| x * x).sum::<f64>().sqrt());
        let tp: Vec<f64> = theta.iter().zip(&v).map(|(t, d)| t + eps * d).collect();
        let tm: Vec<f64> = theta.iter().zip(&v).map(|(t, d)| t - eps * d).collect();
        sys.evaluate(&tp, &mut fp).unwrap();
        sys.evaluate(&tm, &mut fm).unwrap();
        // The field is −∇L: H v = −(f(θ + εv) − f(θ − εv)) / 2ε.
        let hv: Vec<f64> = fp
            .iter()
            .zip(&fm)
            .map(|(a, b)| (b - a) / (2.0 * eps))
            .collect();
        let new = hv.iter().zip(&v).map(|(a, b)| a * b).sum::<f64>();
        v = hv;
        if (new - lam).abs() <= 1e-6 * new.abs() {
            return new;
        }
        lam = new;
    }
    lam
}

/// (qs): see the module docs.
fn stiffness_trace(t_end: f64, rtol: f64, width: usize) {
    let model = presets::dnn(20, &[width, width], 5, &Activation::leaky_relu());
    let data = Dataset::ball(100, 20, 5, 0);
    let theta0 = init_params(&model.param_specs(), &InitScheme::Torch, 0);
    let windows = 20;
    let opts = flow_options(t_end, rtol, windows);
    let mut th = theta0.clone();
    let mut thetas: Vec<Vec<f64>> = Vec::new();
    let mut steps: Vec<gradflow::flow::FlowProgress> = Vec::new();
    let t0 = Instant::now();
    let out = gradflow::flow::gradient_flow_with_progress(
        &model,
        &data,
        &mut th,
        &opts,
        |_, th| {
            thetas.push(th.to_vec());
            Control::Continue
        },
        &mut |p| steps.push(*p),
    )
    .unwrap();
    let secs = t0.elapsed().as_secs_f64();
    let in_steps = out.step_evaluations;
    println!(
        "(qs) T = {t_end}: {secs:.2} s; {} gradients ({} in RK stages, {} in event location and switching), {} forwards; {} steps accepted ({} by BS3), {} ended at an event, {} rejected; L(T) = {:.10e}",
        out.counts.gradients,
        in_steps,
        out.counts.gradients - in_steps,
        out.counts.forwards,
        out.steps_accepted,
        out.steps_low_order,
        steps.iter().filter(|s| s.event).count(),
        out.steps_rejected,
        out.final_loss
    );
    println!("(qs) window       λmax  2/λmax  steps  cut  rej(after cut/other)  uncut h mean/max  h·λ max  grads/unit t  pinned max");
    let w = t_end / windows as f64;
    let (mut prev_rej, mut prev_cut, mut prev_grads) = (0u64, false, 0u64);
    for (k, theta) in thetas.iter().take(windows).enumerate() {
        let lam = lambda_max(&model, &data, theta);
        let (a, b) = (k as f64 * w, (k + 1) as f64 * w);
        let (mut n, mut cut, mut rej_cut, mut rej_other, mut hs, mut hmax, mut pmax) =
            (0, 0, 0u64, 0u64, 0.0, 0.0f64, 0);
        let mut uncut = 0;
        let g0 = prev_grads;
        for s in steps.iter().filter(|s| s.t > a && s.t <= b) {
            n += 1;
            let r = s.steps_rejected - prev_rej;
            if prev_cut {
                rej_cut += r;
            } else {
                rej_other += r;
            }
            prev_rej = s.steps_rejected;
            prev_cut = s.event;
            prev_grads = s.gradient_evaluations;
            pmax = pmax.max(s.pinned);
            if s.event {
                cut += 1;
            } else {
                uncut += 1;
                hs += s.step;
                hmax = hmax.max(s.step);
            }
        }
        println!(
            "(qs) {a:>5.0}–{b:<5.0} {lam:>7.3} {:>7.4} {n:>6} {cut:>4} {rej_cut:>6}/{rej_other:<6} {:>14.4}/{hmax:<8.4} {:>7.2} {:>12.1} {pmax:>6}",
            2.0 / lam,
            if uncut > 0 { hs / uncut as f64 } else { 0.0 },
            hmax * lam,
            (prev_grads - g0) as f64 / w
        );
    }
}

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

/// (k): see the module docs.
fn pinned_cost(first: usize, second: usize, reps: usize) {
    use gradflow::flow::dopri::Field;
    use gradflow::flow::system::KinkSystem;
    let model = presets::dnn(20, &[48, 48], 5, &Activation::leaky_relu());
    let data = Dataset::ball(100, 20, 5, 0);
    let theta0 = init_params(&model.param_specs(), &InitScheme::Torch, 0);
    let mut sys = KinkSystem::new(&model, &data, LossKind::Mse, &theta0, true).unwrap();
    let mut f = vec![0.0; theta0.len()];
    let time = |sys: &mut KinkSystem, f: &mut [f64], stage: bool| {
        let (a0, t0) = (allocs(), Instant::now());
        for _ in 0..reps {
            if stage {
                sys.eval_stage(&theta0, f).unwrap();
            } else {
                sys.evaluate(&theta0, f).unwrap();
            }
        }
        let secs = t0.elapsed().as_secs_f64() / reps as f64;
        (1e3 * secs, (allocs() - a0) as f64 / reps as f64)
    };
    let (plain, _) = time(&mut sys, &mut f, false);
    // Entries spread over samples and units: layer 1 holds entries 0..4800, layer 2 the rest.
    let per_layer = 100 * 48;
    let mut pinned: Vec<usize> = (0..first)
        .map(|i| (i * per_layer / first.max(1) + 7 * i) % per_layer)
        .collect();
    pinned.extend(
        (0..second).map(|i| per_layer + (i * per_layer / second.max(1) + 11 * i) % per_layer),
    );
    pinned.sort_unstable();
    pinned.dedup();
    for &e in &pinned {
        sys.pieces[e] = 0;
    }
    sys.pinned = pinned.clone();
    sys.refresh();
    for _ in 0..3 {
        sys.evaluate(&theta0, &mut f).unwrap();
    }
    let (stage, stage_allocs) = time(&mut sys, &mut f, true);
    let (full, full_allocs) = time(&mut sys, &mut f, false);
    println!(
        "(k) K = {} ({first} first-layer, {second} second-layer): plain gradient {plain:.3} ms; \
         stage evaluation {stage:.3} ms = {:.2}× plain; with normal speeds {full:.3} ms = {:.2}× plain; \
         allocations per evaluation {stage_allocs:.2} / {full_allocs:.2}",
        pinned.len(),
        stage / plain,
        full / plain
    );
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("k") {
        let arg = |i: usize, d: usize| {
            std::env::args()
                .nth(i)
                .map_or(d, |v| v.parse().expect("k [first] [second] [reps]: counts"))
        };
        pinned_cost(arg(2, 120), arg(3, 60), arg(4, 300));
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    let which = args.get(1).map(String::as_str).unwrap_or("ab");
    let t_end: f64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(20.0);
    let rtol: f64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1e-8);
    if which == "qs" {
        stiffness_trace(
            args.get(2).and_then(|s| s.parse().ok()).unwrap_or(30.0),
            rtol,
            args.get(4).and_then(|s| s.parse().ok()).unwrap_or(48),
        );
        return;
    }
    if which == "q" {
        quick_dnn(
            args.get(2).and_then(|s| s.parse().ok()).unwrap_or(30.0),
            rtol,
        );
        return;
    }
    let data = Dataset::ball(40, 8, 3, 0);
    if which.contains('a') {
        let model = presets::dnn(8, &[32, 32], 3, &Activation::Sigmoid);
        let theta0 = init_params(&model.param_specs(), &InitScheme::Torch, 0);
        let t0 = Instant::now();
        let gd = gd_losses(&model, &data, &theta0, 1e-3, 10_000);
        let gd_s = t0.elapsed().as_secs_f64();
        let mut opts = flow_options(10.0, rtol, 10_000);
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
        println!("(a) sigmoid: GD 10,000 epochs {gd_s:.2} s; GF {} gradient evals ({} steps, {} rejected, {} by BS3) {gf_s:.2} s; max relative loss gap {gap:.2e}; L(10) GD {:.6e} GF {:.6e}", out.counts.gradients, out.steps_accepted, out.steps_rejected, out.steps_low_order, gd[10_000], gf[10_000]);
    }
    if which.contains('b') || which.contains("plain") {
        let model = presets::dnn(8, &[32, 32], 3, &Activation::leaky_relu());
        let theta0 = init_params(&model.param_specs(), &InitScheme::Torch, 0);
        let mut opts = flow_options(t_end, rtol, 20);
        opts.kink_aware = !which.contains("plain");
        // `l`: the general layer path instead of the compiled route (the route before issue 20).
        opts.compiled = !which.contains('l');
        opts.max_gradient_evaluations = 700_000;
        let mut th = theta0.clone();
        let t0 = Instant::now();
        let out = gradient_flow(&model, &data, &mut th, &opts, |r, _| {
            println!("  t {:>6.2} loss {:.10e} pinned {:>3} crossings {:>5} slides {:>4} releases {:>4} grads {}", r.t, r.loss, r.pinned, r.crossings, r.slides, r.releases, r.gradient_evaluations);
            Control::Continue
        });
        let secs = t0.elapsed().as_secs_f64();
        match out {
            Ok(out) => println!("(b) leaky: {secs:.2} s; counts {:?}; equivalents {:.0}; steps {} rej {} (BS3 {}); events: crossings {} slides {} releases {} touches {} max pinned {} sliding time {:.3} longest {:.3}; L(T) {:.12e}",
                out.counts, out.gradient_equivalents, out.steps_accepted, out.steps_rejected, out.steps_low_order, out.events.crossings, out.events.slides, out.events.releases, out.events.touches, out.events.max_pinned, out.events.sliding_time, out.events.longest_slide, out.final_loss),
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
