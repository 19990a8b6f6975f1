//! The paper-scale parts of `bench_epochs`: the training loop itself on the widest paper run of
//! each ablation (`--loop`), and an estimate of the paper-scale `reproduce`'s training time from
//! a few timed epochs of every run (`--reproduce-paper`).

use crate::{load, peak, time_engine, Workload};
use gradflow::engine::Real;
use gradflow::init::{init_params, InitScheme};
use gradflow::loss::LossKind;
use gradflow::train::{Control, GdOptions, GdState};
use std::time::Instant;

/// The training loop on the widest paper-scale run of each ablation: ms per epoch with kink
/// tracking on and off, share of the same-process peak, and the mean piece changes per epoch.
pub fn training_loop<T: Real>(epochs: usize, only: Option<&str>, rounds: usize) {
    use gradflow::experiment::{ablation, Scale, ABLATIONS};
    use gradflow::train::gradient_descent_from;
    let precision = T::PRECISION;
    println!(
        "\n### Training loop, {} ({epochs} epochs of the widest paper-scale run of each ablation; load {})\n",
        T::PRECISION.name(),
        load()
    );
    println!("| run | p | tracking | ms/epoch | share of peak | crossings/epoch | chattering/epoch | peak GFLOP/s |");
    println!("|---|---|---|---|---|---|---|---|");
    for name in ABLATIONS.iter().filter(|n| only.is_none_or(|o| o == **n)) {
        let a = ablation(name, Scale::Paper, 1).unwrap();
        let spec = a.runs.last().unwrap();
        let prep = gradflow::run::prepare(&spec.config).unwrap();
        let flops = 6.0 * prep.data.n() as f64 * prep.model.p() as f64;
        for track in [true, false].repeat(rounds) {
            let mut theta = init_params(&prep.model.param_specs(), &InitScheme::Torch, 0);
            let opts = GdOptions {
                lr: spec.config.train.lr,
                epochs,
                loss: LossKind::Mse,
                track_kinks: track,
                precision,
            };
            let before = peak::<T>(2048);
            let (mut crossings, mut chattering) = (0usize, 0usize);
            let t = Instant::now();
            gradient_descent_from(
                &prep.model,
                &prep.data,
                &mut theta,
                &opts,
                &mut GdState::default(),
                |r, _| {
                    crossings += r.kinks.crossings;
                    chattering += r.kinks.chattering;
                    Control::Continue
                },
            )
            .unwrap();
            let per = t.elapsed().as_secs_f64() / (epochs + 1) as f64;
            let pk = before.max(peak::<T>(2048));
            println!(
                "| {name}/{} | {} | {} | {:.2} | {:.0}% | {:.0} | {:.0} | {:.0} |",
                spec.label,
                prep.model.p(),
                if track { "on" } else { "off" },
                per * 1e3,
                100.0 * flops / per / 1e9 / pk,
                crossings as f64 / (epochs + 1) as f64,
                chattering as f64 / (epochs + 1) as f64,
                pk
            );
        }
    }
}

/// The paper-scale `reproduce` (dnn, resnet, gcn ablations): exact training work, training time
/// measured on every run's own network for a few epochs and extrapolated to all its epochs.
pub fn reproduce_paper<T: Real>() {
    use gradflow::experiment::{ablation, Scale, ABLATIONS};
    println!(
        "\n### Paper-scale reproduce, training in {} (load {})\n",
        T::PRECISION.name(),
        load()
    );
    println!("| run | p | epochs | work (TFLOP) | measured s/epoch | share of peak | est. training time | NTK checkpoints |");
    println!("|---|---|---|---|---|---|---|---|");
    let (mut work, mut time, mut ideal, mut ntk) = (0.0, 0.0, 0.0, 0usize);
    for name in ABLATIONS {
        let a = ablation(name, Scale::Paper, 1).unwrap();
        for spec in &a.runs {
            let prep = gradflow::run::prepare(&spec.config).unwrap();
            let w = Workload {
                name: "",
                model: prep.model,
                data: prep.data,
            };
            let epochs = spec.config.train.epochs + 1;
            let every = spec.config.ntk.every;
            let checkpoints = spec
                .config
                .train
                .epochs
                .checked_div(every)
                .map_or(2, |k| k + 1);
            let flops = 6.0 * w.data.n() as f64 * w.model.p() as f64;
            let before = peak::<T>(2048);
            let (t, _) = time_engine::<T>(&w, 20, false);
            let pk = before.max(peak::<T>(2048));
            let total = t.per_epoch * epochs as f64;
            work += flops * epochs as f64;
            time += total;
            ideal += flops * epochs as f64 / (pk * 1e9);
            ntk += checkpoints;
            println!(
                "| {name}/{} | {} | {} | {:.2} | {:.2} ms | {:.0}% | {:.0} s | {} |",
                spec.label,
                w.model.p(),
                epochs,
                flops * epochs as f64 / 1e12,
                t.per_epoch * 1e3,
                100.0 * flops / t.per_epoch / 1e9 / pk,
                total,
                checkpoints
            );
        }
    }
    println!(
        "\nTraining work {:.1} TFLOP; work ÷ peak (peaks as measured next to each run) {:.0} s; estimated training time {:.0} s = {:.2}× work ÷ peak; {} NTK checkpoints (f64, not timed here).",
        work / 1e12,
        ideal,
        time,
        time / ideal,
        ntk
    );
}
