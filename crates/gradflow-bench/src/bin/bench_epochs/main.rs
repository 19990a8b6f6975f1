//! `bench_epochs`: seconds per full-batch GD epoch on the paper's Section 4 workloads (n = 1000),
//! in f64 and f32, on the training engine ([`gradflow::engine`]), each reported as a share of the
//! matrix-product peak of the same precision measured in the same process just before (a large
//! faer product; 6·n·p flops per epoch: forward, input and weight cotangents). Also: heap
//! allocations per steady-state epoch (a counting allocator), cores kept busy (process CPU time ÷
//! wall time), two small runs packed one per core, a per-phase profile, the general path for
//! comparison, an estimate of the paper-scale `reproduce`, and (`--shapes`) single-threaded faer
//! rates on the engine's per-part product shapes. Not a test.
//!
//! Usage: `cargo run --release --bin bench_epochs -- [--precision f64|f32|both] [--reps R]
//! [--general] [--profile] [--packed] [--reproduce-paper] [--shapes] [--seq] [--loop E]
//! [--layout features|samples] [--layouts] [--only NAME]` (`--only`: the workloads whose name
//! contains NAME)
//!
//! `--layouts [--only NAME]`: DNN and ResNet epochs in both activation layouts, timed back to back in each
//! repetition (a paired comparison, robust to the machine's drifting speed).
//!
//! `--loop E`: the training loop itself (`gradient_descent_from`, as `train` and `reproduce` run
//! it: ‖∇L‖, the step, the observer, kink tracking) on the widest paper-scale run of each
//! ablation with its own step, E epochs with kink tracking on and then off (`--rounds R` times;
//! `--only dnn|resnet|gcn`).

use faer::linalg::matmul::matmul;
use faer::Accum;
use gradflow::activation::Activation;
use gradflow::data::Dataset;
use gradflow::engine::{convert, engine_for, Engine, Layout as ActLayout, Real, PHASES};
use gradflow::graph::Graph;
use gradflow::init::{init_params, InitScheme};
use gradflow::loss::LossKind;
use gradflow::model::Model;
use gradflow::presets;
use gradflow::train::{gradient_descent_general, Control, GdOptions, GdState, Precision};
use gradflow_bench::CountingAllocator;
use std::sync::Arc;
use std::time::Instant;

mod layouts;
mod paper;
use paper::{reproduce_paper, training_loop};

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Process CPU seconds (user + system) from /proc/self/stat (0 when unavailable).
fn cpu_seconds() -> f64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let f: Vec<&str> = s
        .rsplit_once(')')
        .map_or(vec![], |(_, r)| r.split_whitespace().collect());
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) / 100.0
}

pub(crate) fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// GFLOP/s of the best of 3 n×n products in precision T (the peak `reproduce` reports too).
pub(crate) fn peak<T: Real>(n: usize) -> f64 {
    gradflow::experiment::timing::matmul_peak_gflops(T::PRECISION, n)
}

/// Single-threaded faer rates (GFLOP/s, best of 7) on the engine's per-part product shapes (a
/// part is 250 of the n = 1000 columns on 2 threads), operands warm: what one core can reach on each stage.
fn shapes<T: Real>() {
    use faer::{MatMut, MatRef, Par};
    let v = |len: usize| {
        (0..len)
            .map(|i| T::from_f64(((i * 7) % 11) as f64 - 5.0))
            .collect::<Vec<T>>()
    };
    let rate = |f: &mut dyn FnMut(), flops: f64| {
        for _ in 0..5 {
            f();
        }
        let mut best = f64::INFINITY;
        for _ in 0..7 {
            let t = Instant::now();
            for _ in 0..5 {
                f();
            }
            best = best.min(t.elapsed().as_secs_f64() / 5.0);
        }
        flops / best / 1e9
    };
    let cols: usize = std::env::var("SHAPES_COLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(250);
    // An activation buffer (features × cols) stored feature-major (column-major, the layout
    // of graph plans) or sample-major (row-major: faer then tiles the samples).
    fn act<T: Real>(s: &[T], rows: usize, cols: usize, sm: bool) -> MatRef<'_, T> {
        if sm {
            MatRef::from_row_major_slice(s, rows, cols)
        } else {
            MatRef::from_column_major_slice(s, rows, cols)
        }
    }
    fn act_mut<T: Real>(s: &mut [T], rows: usize, cols: usize, sm: bool) -> MatMut<'_, T> {
        if sm {
            MatMut::from_row_major_slice_mut(s, rows, cols)
        } else {
            MatMut::from_column_major_slice_mut(s, rows, cols)
        }
    }
    for (out, inp) in [
        (100, 100),
        (50, 500),
        (50, 50),
        (250, 500),
        (250, 250),
        (50, 250),
        (200, 500),
        (200, 200),
    ] {
        for sm in [false, true] {
            let (w, src, sb) = (v(out * inp), v(inp * cols), v(out * cols));
            let (mut z, mut hb, mut g) = (v(out * cols), v(inp * cols), v(out * inp));
            let fl = 2.0 * (out * inp * cols) as f64;
            let wr = MatRef::from_row_major_slice(&w, out, inp);
            let fwd = rate(
                &mut || {
                    let d = act_mut(&mut z, out, cols, sm);
                    matmul(
                        d,
                        Accum::Replace,
                        wr,
                        act(&src, inp, cols, sm),
                        T::one(),
                        Par::Seq,
                    )
                },
                fl,
            );
            let input = rate(
                &mut || {
                    let d = act_mut(&mut hb, inp, cols, sm);
                    let s = act(&sb, out, cols, sm);
                    matmul(d, Accum::Replace, wr.transpose(), s, T::one(), Par::Seq)
                },
                fl,
            );
            let weight = rate(
                &mut || {
                    let d = MatMut::from_column_major_slice_mut(&mut g, inp, out);
                    let b = act(&sb, out, cols, sm).transpose();
                    matmul(
                        d,
                        Accum::Replace,
                        act(&src, inp, cols, sm),
                        b,
                        T::one(),
                        Par::Seq,
                    )
                },
                fl,
            );
            let layout = if sm { "sample-major" } else { "feature-major" };
            println!(
                "| {} | {out} × {inp} × {cols} | {layout} | {fwd:.0} | {input:.0} | {weight:.0} |",
                T::PRECISION.name()
            );
        }
    }
}

/// `--layout`: the activation layout for DNN and ResNet (default: the engine's preference).
static LAYOUT: std::sync::OnceLock<ActLayout> = std::sync::OnceLock::new();

pub(crate) struct Workload {
    pub(crate) name: &'static str,
    pub(crate) model: Model,
    pub(crate) data: Dataset,
}

pub(crate) fn workloads() -> Vec<Workload> {
    let act = Activation::leaky_relu();
    let d500 = Dataset::ball(1000, 500, 50, 0);
    let d100 = Dataset::ball(1000, 100, 100, 0);
    let g = Graph::knn(&d500.x, 10).unwrap();
    let a_hat = Arc::new(g.normalized_adjacency());
    let mut d500g = d500.clone();
    d500g.graph = Some(g);
    vec![
        Workload {
            name: "DNN d500 [250,250] m50",
            model: presets::dnn(500, &[250, 250], 50, &act),
            data: d500.clone(),
        },
        Workload {
            name: "DNN d500 [50,50] m50",
            model: presets::dnn(500, &[50, 50], 50, &act),
            data: d500,
        },
        Workload {
            name: "ResNet d100 depth 16",
            model: presets::resnet(100, 16, 100, &act),
            data: d100,
        },
        Workload {
            name: "GCN d500 [200,200] m50, k=10",
            model: presets::gcn(a_hat, 500, &[200, 200], 50, &act),
            data: d500g,
        },
    ]
}

/// One GD epoch as the training loop takes it on the engine (`engine::EngineOracle`): loss and
/// gradient (with ‖∇L‖², summed with the parts' contributions), then the step on the pool's
/// threads.
/// (The loop converts θ to f64 for its observer only on the epochs that read it.)
fn epoch<T: Real>(e: &mut Engine<T>, th: &mut [T], g: &mut [T], lr: T) -> f64 {
    let l = e.loss_and_grad(th, g);
    let norm = e.grad_norm();
    gradflow::engine::step(th, g, lr);
    l + norm * 0.0
}

pub(crate) struct Timing {
    pub(crate) per_epoch: f64,
    allocs_per_epoch: f64,
    cores_busy: f64,
}

fn time_engine<T: Real>(w: &Workload, epochs: usize, profile: bool) -> (Timing, Engine<T>) {
    time_engine_in(w, epochs, profile, LAYOUT.get().copied())
}

/// [`time_engine`] in a given activation layout (DNN and ResNet; None: the engine's choice).
pub(crate) fn time_engine_in<T: Real>(
    w: &Workload,
    epochs: usize,
    profile: bool,
    layout: Option<ActLayout>,
) -> (Timing, Engine<T>) {
    let theta = init_params(&w.model.param_specs(), &InitScheme::Torch, 0);
    let mut e = engine_for::<T>(&w.model, &w.data, LossKind::Mse, &theta).expect("engine");
    if let Some(layout) = layout {
        if ActLayout::preferred(e.plan()) == ActLayout::Samples && e.layout() != layout {
            let (m, d) = (&w.model, &w.data);
            let plan = e.plan().clone();
            e = Engine::with_layout(plan, &m.activation, &d.x, &d.y, LossKind::Mse, None, layout);
        }
    }
    let mut th: Vec<T> = convert(&theta);
    let mut g = vec![T::default(); th.len()];
    let lr = T::from_f64(1e-4);
    for _ in 0..3 {
        epoch(&mut e, &mut th, &mut g, lr);
    }
    if profile {
        e.enable_profile();
    }
    let c0 = cpu_seconds();
    let (a0, t) = (gradflow_bench::allocations(), Instant::now());
    for _ in 0..epochs {
        epoch(&mut e, &mut th, &mut g, lr);
    }
    let (wall, a1) = (t.elapsed().as_secs_f64(), gradflow_bench::allocations());
    let c1 = cpu_seconds();
    (
        Timing {
            per_epoch: wall / epochs as f64,
            allocs_per_epoch: (a1 - a0) as f64 / epochs as f64,
            cores_busy: (c1 - c0) / wall,
        },
        e,
    )
}

/// (smallest, largest) of non-negative values.
pub(crate) fn range(v: &[f64]) -> (f64, f64) {
    (
        v.iter().copied().fold(f64::INFINITY, f64::min),
        v.iter().copied().fold(0.0, f64::max),
    )
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn bench_precision<T: Real>(ws: &[Workload], reps: usize, profile: bool) {
    println!(
        "\n### {} (n = 1000; {} repetitions, each: three 2048² products before and three after the workload; load {})\n",
        T::PRECISION.name(),
        reps,
        load()
    );
    println!("Share of peak: against the fastest of the repetition's six products (the conservative figure: a burst); paired: against their median (the products' typical speed in the same seconds as the workload).\n");
    println!("| workload | p | s/epoch (median) | share of peak: median (range) | paired: median (range) | peak seen (GFLOP/s) | allocations/epoch | cores busy |");
    println!("|---|---|---|---|---|---|---|---|");
    let rates = || gradflow::experiment::timing::matmul_rates(T::PRECISION, 2048, 3);
    for w in ws {
        let flops = 6.0 * w.data.n() as f64 * w.model.p() as f64;
        let epochs = ((3e10 / flops) as usize).clamp(20, 200);
        let (mut times, mut shares, mut paired, mut peaks) = (vec![], vec![], vec![], vec![]);
        let mut last = None;
        for _ in 0..reps {
            let mut samples = rates();
            let (t, _) = time_engine::<T>(w, epochs, false);
            samples.extend(rates());
            let rate = flops / t.per_epoch / 1e9;
            let pk = samples.iter().copied().fold(0.0, f64::max);
            shares.push(100.0 * rate / pk);
            paired.push(100.0 * rate / median(samples));
            times.push(t.per_epoch);
            peaks.push(pk);
            last = Some(t);
        }
        let t = last.unwrap();
        let (lo, hi) = range(&shares);
        let (plo, phi) = range(&paired);
        println!(
            "| {} | {} | {:.2} ms | {:.0}% ({:.0}–{:.0}%) | {:.0}% ({:.0}–{:.0}%) | {:.0} | {:.1} | {:.2} |",
            w.name,
            w.model.p(),
            median(times) * 1e3,
            median(shares),
            lo,
            hi,
            median(paired),
            plo,
            phi,
            median(peaks),
            t.allocs_per_epoch,
            t.cores_busy
        );
    }
    if profile {
        println!("\nProfile ({}): time per epoch by phase (share of the epoch); matmul phases also as GFLOP/s.\n", T::PRECISION.name());
        print!("| phase |");
        for w in ws {
            print!(" {} |", w.name);
        }
        println!();
        println!("|---|{}", "---|".repeat(ws.len()));
        let mut cols = Vec::new();
        let mut kink_times = Vec::new();
        for w in ws {
            let flops = 6.0 * w.data.n() as f64 * w.model.p() as f64;
            let epochs = ((3e10 / flops) as usize).clamp(20, 200);
            let (t, e) = time_engine::<T>(w, epochs, true);
            let prof = e.profile().unwrap();
            let plan = e.plan();
            let n = w.data.n() as f64;
            let mm: f64 = plan
                .stages
                .iter()
                .map(|s| 2.0 * n * (s.inp * s.out) as f64)
                .sum();
            let first = 2.0 * n * (plan.stages[0].inp * plan.stages[0].out) as f64;
            let phase_flops = [mm, 0.0, 0.0, 0.0, mm, mm - first, 0.0, 0.0, 0.0];
            // Kink tracking (on in `train`/`reproduce` for activations with kinks), per epoch:
            // recording the pieces' bits in the forward pass (forward passes with and without)
            // plus the tracker's step on them.
            let theta = init_params(&w.model.param_specs(), &InitScheme::Torch, 0);
            let th: Vec<T> = convert(&theta);
            let mut e = e;
            let mut forwards = |record: bool| {
                e.set_record_pieces(record);
                let t = Instant::now();
                for _ in 0..epochs {
                    e.forward(&th);
                }
                t.elapsed().as_secs_f64() / epochs as f64
            };
            let (off, on) = (forwards(false), forwards(true));
            let (off2, on2) = (forwards(false), forwards(true));
            let record = ((on - off) + (on2 - off2)) / 2.0;
            let segs = e.piece_segments();
            let mut tracker = gradflow::kinks::KinkTracker::new();
            tracker.observe_bits(&segs, |l, words| e.piece_bits(l, words));
            let tk = Instant::now();
            for _ in 0..epochs {
                tracker.observe_bits(&segs, |l, words| e.piece_bits(l, words));
            }
            kink_times.push(tk.elapsed().as_secs_f64() / epochs as f64 + record);
            cols.push((t.per_epoch, epochs as f64, prof, phase_flops));
        }
        for (k, name) in PHASES.iter().enumerate() {
            print!("| {name} |");
            for (per_epoch, epochs, prof, fl) in &cols {
                let s = prof[k] / epochs;
                if fl[k] > 0.0 {
                    print!(
                        " {:.2} ms ({:.0}%, {:.0} GFLOP/s) |",
                        s * 1e3,
                        100.0 * s / per_epoch,
                        fl[k] / s / 1e9
                    );
                } else {
                    print!(" {:.2} ms ({:.0}%) |", s * 1e3, 100.0 * s / per_epoch);
                }
            }
            println!();
        }
        print!("| rest (norm, step, timer gaps) |");
        for (per_epoch, epochs, prof, _) in &cols {
            let r = per_epoch - prof.iter().sum::<f64>() / epochs;
            print!(" {:.2} ms ({:.0}%) |", r * 1e3, 100.0 * r / per_epoch);
        }
        println!();
        print!("| (not in the epochs above) kink tracking, when on |");
        for ((per_epoch, ..), k) in cols.iter().zip(&kink_times) {
            print!(" {:.2} ms (+{:.0}%) |", k * 1e3, 100.0 * k / per_epoch);
        }
        println!();
    }
}

/// Two copies of a small run at once, one per thread (faer and the engine single-threaded), as
/// `reproduce` packs small sweeps on 2 threads; compared with one run at a time on the pool.
fn packed<T: Real>(w: &Workload) {
    let flops = 6.0 * w.data.n() as f64 * w.model.p() as f64;
    let epochs = 100;
    let pk = peak::<T>(2048);
    let (t, _) = time_engine::<T>(w, epochs, false);
    let old = faer::get_global_parallelism();
    faer::set_global_parallelism(faer::Par::Seq);
    let t0 = Instant::now();
    rayon::join(
        || time_engine::<T>(w, epochs, false),
        || time_engine::<T>(w, epochs, false),
    );
    let wall = t0.elapsed().as_secs_f64();
    faer::set_global_parallelism(old);
    // The warm-up epochs of each copy ran too: count them.
    let per_run_epoch = wall / (epochs + 3) as f64 / 2.0;
    println!(
        "| {} {} | one run on {} threads: {:.2} ms ({:.0}%) | 2 runs packed, 1 thread each: {:.2} ms per run-epoch ({:.0}%) | peak {:.0} |",
        w.name,
        T::PRECISION.name(),
        rayon::current_num_threads(),
        t.per_epoch * 1e3,
        100.0 * flops / t.per_epoch / 1e9 / pk,
        per_run_epoch * 1e3,
        100.0 * flops / per_run_epoch / 1e9 / pk,
        pk
    );
}

fn general(ws: &[Workload]) {
    println!(
        "\n### General path (Model::loss_and_grad), f64, for comparison (load {})\n",
        load()
    );
    println!("| workload | s/epoch | share of peak | peak seen |");
    println!("|---|---|---|---|");
    for w in ws {
        let pk = peak::<f64>(2048);
        let mut theta = init_params(&w.model.param_specs(), &InitScheme::Torch, 0);
        let opts = GdOptions {
            lr: 1e-4,
            epochs: 6,
            loss: LossKind::Mse,
            track_kinks: false,
            precision: Precision::F64,
        };
        let mut marks = Vec::new();
        gradient_descent_general(
            &w.model,
            &w.data,
            &mut theta,
            &opts,
            &mut GdState::default(),
            |_, _| {
                marks.push(Instant::now());
                Control::Continue
            },
        )
        .unwrap();
        let per = (marks[6] - marks[1]).as_secs_f64() / 5.0;
        let flops = 6.0 * w.data.n() as f64 * w.model.p() as f64;
        println!(
            "| {} | {:.2} ms | {:.0}% | {:.0} |",
            w.name,
            per * 1e3,
            100.0 * flops / per / 1e9 / pk,
            pk
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let has = |f: &str| args.iter().any(|a| a == f);
    let value = |f: &str| {
        args.iter()
            .position(|a| a == f)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let precision = value("--precision").unwrap_or_else(|| "both".into());
    let reps: usize = value("--reps").and_then(|v| v.parse().ok()).unwrap_or(3);
    let (f64s, f32s) = (precision != "f32", precision != "f64");
    match value("--layout").as_deref() {
        Some("features") => LAYOUT.set(ActLayout::Features).unwrap(),
        Some("samples") => LAYOUT.set(ActLayout::Samples).unwrap(),
        Some(other) => panic!("--layout features|samples, not {other}"),
        None => {}
    }
    if has("--seq") {
        faer::set_global_parallelism(faer::Par::Seq);
    }
    println!("threads: {}, load {}", rayon::current_num_threads(), load());
    if has("--reproduce-paper") {
        if f32s {
            reproduce_paper::<f32>();
        }
        if f64s {
            reproduce_paper::<f64>();
        }
        return;
    }
    if let Some(e) = value("--loop").and_then(|v| v.parse::<usize>().ok()) {
        let rounds = value("--rounds").and_then(|v| v.parse().ok()).unwrap_or(1);
        if f32s {
            training_loop::<f32>(e, value("--only").as_deref(), rounds);
        }
        if f64s {
            training_loop::<f64>(e, value("--only").as_deref(), rounds);
        }
        return;
    }
    if has("--layouts") {
        let only = value("--only").unwrap_or_default().to_lowercase();
        let ws: Vec<Workload> = workloads()
            .into_iter()
            .take(3)
            .filter(|w| w.name.to_lowercase().contains(&only))
            .collect();
        if f64s {
            layouts::compare::<f64>(&ws, reps);
        }
        if f32s {
            layouts::compare::<f32>(&ws, reps);
        }
        return;
    }
    if has("--shapes") {
        println!(
            "\n### Single-threaded faer products on one part's shapes (GFLOP/s, load {})\n",
            load()
        );
        println!("| precision | out × in × columns | activations | forward W·src | input cotangent Wᵀ·S̄ | weight cotangent (θ layout) |");
        println!("|---|---|---|---|---|---|");
        if f64s {
            shapes::<f64>();
        }
        if f32s {
            shapes::<f32>();
        }
        println!(
            "\nSame-process 2-core peak: f64 {:.0}, f32 {:.0} GFLOP/s",
            peak::<f64>(2048),
            peak::<f32>(2048)
        );
        return;
    }
    let only = value("--only").unwrap_or_default().to_lowercase();
    let ws: Vec<Workload> = workloads()
        .into_iter()
        .filter(|w| w.name.to_lowercase().contains(&only))
        .collect();
    if f64s {
        bench_precision::<f64>(&ws, reps, has("--profile"));
    }
    if f32s {
        bench_precision::<f32>(&ws, reps, has("--profile"));
    }
    if has("--packed") {
        println!("\n### Packing small runs (as `reproduce` does for sweeps of small models)\n");
        if f32s {
            packed::<f32>(&workloads()[1]);
        }
        if f64s {
            packed::<f64>(&workloads()[1]);
        }
    }
    if has("--general") {
        general(&ws);
    }
}
