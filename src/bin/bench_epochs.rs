//! `bench_epochs`: seconds per full-batch GD epoch (f64) on the paper's Section 4 workloads
//! (n = 1000), reported as a share of the machine's f64 matrix-product peak measured in the same
//! process (6·n·p flops per epoch: forward, input and weight cotangents). Not a test.
//!
//! Usage: `cargo run --release --bin bench_epochs`

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat};
use gradflow::activation::Activation;
use gradflow::data::Dataset;
use gradflow::graph::Graph;
use gradflow::init::{init_params, InitScheme};
use gradflow::loss::LossKind;
use gradflow::model::Model;
use gradflow::presets;
use gradflow::train::{gradient_descent, Control, GdOptions};
use std::sync::Arc;
use std::time::Instant;

fn peak_gflops(n: usize) -> f64 {
    let a = Mat::<f64>::from_fn(n, n, |i, j| ((i * 7 + j * 3) % 11) as f64 - 5.0);
    let b = Mat::<f64>::from_fn(n, n, |i, j| ((i * 5 + j * 2) % 13) as f64 - 6.0);
    let mut c = Mat::<f64>::zeros(n, n);
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        matmul(
            c.as_mut(),
            Accum::Replace,
            a.as_ref(),
            b.as_ref(),
            1.0,
            gradflow::batch::par(),
        );
        best = best.min(t.elapsed().as_secs_f64());
    }
    2.0 * (n as f64).powi(3) / best / 1e9
}

fn time_epochs(name: &str, model: &Model, data: &Dataset, peak: f64) {
    let mut theta = init_params(&model.param_specs(), &InitScheme::Torch, 0);
    let epochs = 30;
    let opts = GdOptions {
        lr: 1e-3,
        epochs,
        loss: LossKind::Mse,
        track_kinks: false,
        precision: gradflow::train::Precision::F64,
    };
    gradient_descent(
        model,
        data,
        &mut theta.clone(),
        &GdOptions { epochs: 3, ..opts },
        |_, _| Control::Continue,
    )
    .unwrap();
    let t = Instant::now();
    gradient_descent(model, data, &mut theta, &opts, |_, _| Control::Continue).unwrap();
    let per_epoch = t.elapsed().as_secs_f64() / (epochs + 1) as f64;
    let flops = 6.0 * data.n() as f64 * model.p() as f64;
    println!(
        "| {name} | {} | {:.2} ms | {:.0}% |",
        model.p(),
        per_epoch * 1e3,
        100.0 * flops / per_epoch / 1e9 / peak
    );
}

fn main() {
    let peak = peak_gflops(2048);
    println!(
        "f64 matmul peak (2048², best of 5): {peak:.1} GFLOP/s, threads: {}",
        rayon::current_num_threads()
    );
    println!("| workload (n = 1000, f64) | p | s/epoch | share of peak |");
    println!("|---|---|---|---|");
    let act = Activation::leaky_relu();
    let d500 = Dataset::ball(1000, 500, 50, 0);
    time_epochs(
        "DNN d500 [250,250] m50",
        &presets::dnn(500, &[250, 250], 50, &act),
        &d500,
        peak,
    );
    time_epochs(
        "DNN d500 [50,50] m50",
        &presets::dnn(500, &[50, 50], 50, &act),
        &d500,
        peak,
    );
    let d100 = Dataset::ball(1000, 100, 100, 0);
    time_epochs(
        "ResNet d100 depth 16",
        &presets::resnet(100, 16, 100, &act),
        &d100,
        peak,
    );
    let a_hat = Arc::new(Graph::knn(&d500.x, 10).unwrap().normalized_adjacency());
    time_epochs(
        "GCN d500 [200,200] m50, k=10",
        &presets::gcn(a_hat, 500, &[200, 200], 50, &act),
        &d500,
        peak,
    );
}
