//! `bench`: performance measurements (not tests). Each measurement is reported next to the
//! machine's own matrix-product peak measured in the same process, so numbers compare across
//! machines. Results go to stdout as Markdown table rows for BENCHMARKS.md.
//!
//! Usage: `cargo run --release --bin bench -- [ntk|ntk-paper|peak|all]`; for profiling also
//! `phases [block_top block_min [n]]` (the dense λ route phase by phase, n = 500 and 1000 by
//! default; `CHOLESKY_BLOCK=…` overrides the Cholesky column block), `gram [n]` (the structured
//! Gram's parts) and `lmax` (λ_max of the paper-scale ResNets). `graph [n …]` compares the
//! structured graph Gram route with the Jacobian route on the GCN 100 → [200, 200] → 10
//! (kNN k = 10; n = 100, 200, 500 by default), each route in a child process
//! (`graph-case n route`) so that its peak RSS is its own; `graph-only` among the arguments
//! skips the Jacobian route.

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat};
use gradflow::activation::Activation;
use gradflow::data::Dataset;
use gradflow::init::{init_params, InitScheme};
use gradflow::layers::{GraphStructure, Structure};
use gradflow::ntk::{self, NtkOptions};
use gradflow::presets;
use std::time::Instant;

/// GFLOP/s of an f64 square matrix product of size `n` (best of 3; the peak `reproduce`
/// reports too).
fn matmul_peak(n: usize) -> f64 {
    gradflow::experiment::timing::matmul_peak_gflops(gradflow::config::Precision::F64, n)
}

fn peak_rss_mb() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn ntk_case(n: usize, d: usize, hidden: &[usize], m: usize, budget_gb: f64, max_iter: usize) {
    let data = Dataset::ball(n, d, m, 0);
    let model = presets::dnn(d, hidden, m, &Activation::leaky_relu());
    let theta = init_params(&model.param_specs(), &InitScheme::Torch, 0);
    let t0 = Instant::now();
    let opts = NtkOptions {
        memory_budget_bytes: (budget_gb * (1u64 << 30) as f64) as u64,
        max_iter,
        ..Default::default()
    };
    let route = if ntk::gram_bytes(&model, n) <= opts.memory_budget_bytes {
        "dense"
    } else {
        "matrix-free"
    };
    let mut gram_s = f64::NAN;
    if route == "dense" {
        let t = Instant::now();
        let _ = ntk::gram(&model, &theta, &data.x);
        gram_s = t.elapsed().as_secs_f64();
    }
    let t1 = Instant::now();
    let s = ntk::ntk_spectrum(&model, &theta, &data.x, &opts).expect("NTK spectrum");
    let total = t1.elapsed().as_secs_f64();
    let estimate = s
        .lambda_min_error_estimate
        .map_or(String::new(), |e| format!(" (est. error {e:.1e})"));
    let products = s
        .products
        .map_or(String::new(), |p| format!(", {p} products"));
    println!(
        "| dnn d={d} {hidden:?} m={m}, n={n} | {} | {} | {:.2} | {:.2} | {:.10e} ± {:.1e}{estimate} | {:.6e} | {} ({}{products}) | {:.0} |",
        n * m,
        model.p(),
        gram_s,
        total,
        s.lambda_min,
        s.lambda_min_accuracy,
        s.lambda_max,
        s.route,
        s.method,
        peak_rss_mb()
    );
    let _ = t0;
}

fn main() {
    let what = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    let peak = matmul_peak(2048);
    println!(
        "f64 matmul peak (2048², best of 3): {peak:.1} GFLOP/s, threads: {}",
        rayon::current_num_threads()
    );
    if what == "peak" {
        return;
    }
    if what == "lmax" {
        lmax_resnet_paper();
        return;
    }
    if what == "eig" {
        let n: usize = std::env::args()
            .nth(2)
            .and_then(|a| a.parse().ok())
            .unwrap_or(500);
        let data = Dataset::ball(n, 100, 10, 0);
        let model = presets::dnn(100, &[200, 200], 10, &Activation::leaky_relu());
        let theta = init_params(&model.param_specs(), &InitScheme::Torch, 0);
        let (h, _) = ntk::gram(&model, &theta, &data.x);
        let t = Instant::now();
        let e = ntk::full_spectrum(&h);
        println!("eig {:.1}s", t.elapsed().as_secs_f64());
        println!("bottom {:?}", &e[..60]);
        println!("top {:?}", &e[e.len() - 20..]);
        return;
    }
    if what == "chol-ab" {
        let n = std::env::args()
            .nth(2)
            .and_then(|a| a.parse().ok())
            .unwrap_or(1000);
        cholesky_ab(n);
        return;
    }
    if what == "gram" {
        let n = std::env::args()
            .nth(2)
            .and_then(|a| a.parse().ok())
            .unwrap_or(1000);
        gram_phases(n);
        return;
    }
    if what == "graph" {
        let ns: Vec<usize> = std::env::args()
            .skip(2)
            .filter_map(|a| a.parse().ok())
            .collect();
        graph_bench(if ns.is_empty() { &[100, 200, 500] } else { &ns }, peak);
        return;
    }
    if what == "graph-case" {
        let arg = |i: usize| std::env::args().nth(i).unwrap_or_default();
        graph_case(arg(2).parse().unwrap_or(100), &arg(3));
        return;
    }
    if what == "phases" {
        let n = std::env::args().nth(4).and_then(|a| a.parse().ok());
        for n in n.map_or(vec![500, 1000], |n| vec![n]) {
            phases(n);
        }
        return;
    }
    println!("| case | nm | p | Gram s | Gram+λ s | λ_min | λ_max | route | peak RSS MB |");
    println!("|---|---|---|---|---|---|---|---|---|");
    if what == "ntk" || what == "all" {
        ntk_case(500, 100, &[200, 200], 10, 8.0, 500);
        ntk_case(1000, 100, &[200, 200], 10, 8.0, 500);
    }
    if what == "ntk-paper" || what == "all" {
        // Matrix-free (the dense H would be 20 GB): preconditioned Davidson for λ_min, Lanczos
        // (at most 500 steps) for λ_max.
        ntk_case(1000, 500, &[250, 250], 50, 8.0, 500);
    }
}

/// Phase timings of the dense λ route as `ntk_spectrum` runs it (for profiling): Gram, λ_max by
/// block Krylov on H, Cholesky in place, λ_min by block Krylov on H⁻¹, the residual check.
/// Optional block sizes: `bench phases [block_top] [block_min]`.
pub fn phases(n: usize) {
    use faer::{MatMut, MatRef};
    let arg = |i: usize, d: usize| {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(d)
    };
    let (b_top, b_min) = (arg(2, 16), arg(3, 8));
    let data = Dataset::ball(n, 100, 10, 0);
    let model = presets::dnn(100, &[200, 200], 10, &Activation::leaky_relu());
    let theta = init_params(&model.param_specs(), &InitScheme::Torch, 0);
    let t_all = Instant::now();
    let t = Instant::now();
    let (mut h, _) = ntk::gram(&model, &theta, &data.x);
    let dim = h.nrows();
    let gram_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut apply_h = |v: MatRef<'_, f64>, out: MatMut<'_, f64>| {
        matmul(
            out,
            Accum::Replace,
            h.as_ref(),
            v,
            1.0,
            gradflow::batch::par(),
        )
    };
    let top =
        gradflow::ntk::block_krylov::block_krylov_top(dim, &mut apply_h, b_top, 100, 1e-10, 11);
    let top_s = t.elapsed().as_secs_f64();
    let diag: Vec<f64> = (0..dim).map(|i| h[(i, i)]).collect();
    let t = Instant::now();
    let chol_block = std::env::var("CHOLESKY_BLOCK")
        .ok()
        .and_then(|b| b.parse().ok());
    assert!(match chol_block {
        Some(b) => ntk::spectrum::cholesky_lower_in_place_blocked(h.as_mut(), b),
        None => ntk::spectrum::cholesky_lower_in_place(h.as_mut()),
    });
    let chol_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut in_solve = 0.0;
    let mut apply_inv = |v: MatRef<'_, f64>, out: MatMut<'_, f64>| {
        let t = Instant::now();
        ntk::spectrum::cholesky_solve(h.as_ref(), v, out);
        in_solve += t.elapsed().as_secs_f64();
    };
    let r = gradflow::ntk::block_krylov::block_krylov_bottom_via_inverse(
        dim,
        &mut apply_inv,
        b_min,
        100,
        1e-5,
        12,
    );
    let min_s = t.elapsed().as_secs_f64();
    println!("  (λ_min: {in_solve:.2}s in the solves)");
    // Residual on the true H: the strict upper triangle still holds H, plus the saved diagonal.
    let t = Instant::now();
    let y = Mat::<f64>::from_fn(dim, 1, |i, _| r.vector[i]);
    let mut hy = Mat::<f64>::zeros(dim, 1);
    ntk::spectrum::product(h.as_ref(), Some(&diag), y.as_ref(), hy.as_mut());
    let rq = (y.transpose() * &hy)[(0, 0)];
    let res = (&hy - &y * faer::Scale(rq)).norm_l2();
    let check_s = t.elapsed().as_secs_f64();
    let total = t_all.elapsed().as_secs_f64();
    println!(
        "nm={dim}: gram {gram_s:.2}s | lambda_max {top_s:.2}s ({} passes of {b_top}, {:.6e} ± {:.1e}) | cholesky {chol_s:.2}s | lambda_min {min_s:.2}s ({} passes of {b_min}, {rq:.10e} ± {res:.2e}) | check {check_s:.2}s | total {total:.2}s, H + λ_min {:.2}s | peak RSS {:.0} MB",
        top.passes,
        top.value,
        top.residual,
        r.passes,
        total - top_s,
        peak_rss_mb()
    );
}

/// λ_max(H(0)) of the widest paper-scale ResNet (depth 16, d = m = 100, n = 1000) by Lanczos, to
/// set that sweep's step well inside GD's stability limit nm/λ_max.
fn lmax_resnet_paper() {
    let data = Dataset::ball(1000, 100, 100, 0);
    for depth in [8, 16] {
        let model = presets::resnet(100, depth, 100, &Activation::leaky_relu());
        let theta = init_params(&model.param_specs(), &InitScheme::Torch, 0);
        let t = Instant::now();
        let mut op = ntk::NtkOperator::new(&model, &theta, &data.x);
        let dim = op.dim();
        let r =
            gradflow::ntk::lanczos::lanczos(dim, &mut |v, o| op.apply(v, o), true, 200, 1e-8, 1);
        println!(
            "resnet depth {depth}: λ_max(H(0)) = {:.4e} ± {:.1e} ({} products, {:.1} s); nm/λ_max = {:.4}",
            r.value,
            r.residual,
            r.iterations,
            t.elapsed().as_secs_f64(),
            dim as f64 / r.value
        );
    }
}

/// Where the structured Gram's time goes: evaluation, allocation, the layers' reverse pass, the
/// mirror of the lower triangle.
fn gram_phases(n: usize) {
    let data = Dataset::ball(n, 100, 10, 0);
    let model = presets::dnn(100, &[200, 200], 10, &Activation::leaky_relu());
    let theta = init_params(&model.param_specs(), &InitScheme::Torch, 0);
    let m = 10;
    let t = Instant::now();
    let ev = model.evaluate(&theta, &data.x);
    let mut y_bar = gradflow::Batch::zeros(m, n * m);
    for i in 0..n {
        for a in 0..m {
            y_bar.col_mut(i * m + a)[a] = 1.0;
        }
    }
    let t_eval = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut h = ntk::gram::zeros_parallel(n * m);
    let t_alloc = t.elapsed().as_secs_f64();
    let t = Instant::now();
    model.vjp_gram(&theta, &data.x, &ev, &y_bar, m, &mut h);
    let t_vjp = t.elapsed().as_secs_f64();
    let t = Instant::now();
    ntk::gram::mirror_lower(&mut h);
    let t_mirror = t.elapsed().as_secs_f64();
    println!("gram nm={}: eval {t_eval:.3}s alloc {t_alloc:.3}s vjp_gram {t_vjp:.3}s mirror {t_mirror:.3}s", n * m);
}

/// A/B in one process: faer's own in-place Cholesky (block 256, clobbers the upper triangle)
/// against [`ntk::spectrum::cholesky_lower_in_place`] (keeps it), alternated on copies of H.
fn cholesky_ab(n: usize) {
    use faer::dyn_stack::{MemBuffer, MemStack};
    use faer::linalg::cholesky::llt::factor::{self, LltParams, LltRegularization};
    let data = Dataset::ball(n, 100, 10, 0);
    let model = presets::dnn(100, &[200, 200], 10, &Activation::leaky_relu());
    let theta = init_params(&model.param_specs(), &InitScheme::Torch, 0);
    let (h, _) = ntk::gram(&model, &theta, &data.x);
    let dim = h.nrows();
    let mut w = h.clone();
    for round in 0..2 {
        w.copy_from(&h);
        let par = gradflow::batch::par();
        let params = LltParams {
            block_size: 256,
            ..faer::Auto::<f64>::auto()
        };
        let mut mem = MemBuffer::new(factor::cholesky_in_place_scratch::<f64>(
            dim,
            par,
            params.into(),
        ));
        let t = Instant::now();
        let ok = factor::cholesky_in_place(
            w.as_mut(),
            LltRegularization::default(),
            par,
            MemStack::new(&mut mem),
            params.into(),
        )
        .is_ok();
        let faer_s = t.elapsed().as_secs_f64();
        w.copy_from(&h);
        let t = Instant::now();
        let ok2 = ntk::spectrum::cholesky_lower_in_place(w.as_mut());
        let ours_s = t.elapsed().as_secs_f64();
        println!("round {round}: faer in place {faer_s:.2}s ({ok}), ours {ours_s:.2}s ({ok2})");
    }
}

/// The GCN of the graph benchmark on n points of the ball in R¹⁰⁰, kNN graph k = 10.
fn graph_model(n: usize) -> (gradflow::model::Model, Dataset) {
    let data = Dataset::ball(n, 100, 10, 0);
    let g = gradflow::graph::Graph::knn(&data.x, 10).expect("kNN graph");
    let a_hat = std::sync::Arc::new(g.normalized_adjacency());
    let model = presets::gcn(a_hat, 100, &[200, 200], 10, &Activation::leaky_relu());
    (model, data)
}

/// One route of the graph benchmark in this process: `graph` (structured graph route) or
/// `jacobian`. Prints seconds, a checksum of H (Σ H_ij, Σ H_ii) and the peak RSS.
fn graph_case(n: usize, route: &str) {
    let (model, data) = graph_model(n);
    let theta = init_params(&model.param_specs(), &InitScheme::Torch, 0);
    let t = Instant::now();
    let h = match route {
        "graph" => ntk::graph_gram::graph_gram(&model, &theta, &data.x).expect("graph route"),
        _ => {
            let j = ntk::jacobian(&model, &theta, &data.x);
            let mut h = Mat::<f64>::zeros(j.nrows(), j.nrows());
            matmul(
                h.as_mut(),
                Accum::Replace,
                j.as_ref(),
                j.transpose(),
                1.0,
                gradflow::batch::par(),
            );
            h
        }
    };
    let secs = t.elapsed().as_secs_f64();
    let (mut sum, mut tr) = (0.0, 0.0);
    for c in 0..h.ncols() {
        tr += h[(c, c)];
        for r in 0..h.nrows() {
            sum += h[(r, c)];
        }
    }
    println!("{secs:.3} {sum:.12e} {tr:.12e} {:.0}", peak_rss_mb());
}

/// The structured graph route against the Jacobian route (see `graph_case`), one Markdown row
/// per n: nm, p, mean supports, seconds, estimated and measured peak memory.
fn graph_bench(ns: &[usize], peak: f64) {
    let exe = std::env::current_exe().expect("bench executable");
    let run = |n: usize, route: &str| -> Option<Vec<f64>> {
        let out = std::process::Command::new(&exe)
            .args(["graph-case", &n.to_string(), route])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().last()?;
        let v: Vec<f64> = line
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        (v.len() == 4).then_some(v)
    };
    println!("| n | nm | p | mean 1-hop / 2-hop support | route | seconds | estimated MB | peak RSS MB | Σ H_ij (checksum) |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for &n in ns {
        let (model, _) = graph_model(n);
        let nm = (n * 10) as u64;
        let p = model.p() as u64;
        let graph_mb = ntk::gram_bytes(&model, n) as f64 / 1048576.0;
        let jac_mb = (nm * nm * 8 + nm * p * 8) as f64 / 1048576.0;
        let a_hat = match model.net.children()[0].structure() {
            Structure::Graph(GraphStructure::Propagate(a)) => a,
            _ => unreachable!("gcn starts with a propagation"),
        };
        let s1 = ntk::sparse_cot::Supports::singletons(n).expand(&a_hat);
        let s2 = s1.expand(&a_hat);
        let hops = format!(
            "{:.1} / {:.1}",
            s1.total() as f64 / n as f64,
            s2.total() as f64 / n as f64
        );
        let only_graph = std::env::args().any(|a| a == "graph-only");
        for (route, est) in [("graph", graph_mb), ("jacobian", jac_mb)] {
            if only_graph && route == "jacobian" {
                continue;
            }
            match run(n, route) {
                Some(v) => println!(
                    "| {n} | {nm} | {p} | {hops} | {} | {:.2} | {est:.0} | {:.0} | {:.10e} |",
                    if route == "graph" {
                        "structured-graph"
                    } else {
                        "jacobian"
                    },
                    v[0],
                    v[3],
                    v[1]
                ),
                None => println!("| {n} | {nm} | {p} | {hops} | {route} | failed | {est:.0} | | |"),
            }
        }
    }
    println!("matmul peak in this process: {peak:.1} GFLOP/s");
}
