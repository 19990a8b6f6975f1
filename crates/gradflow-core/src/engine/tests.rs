//! The engine against the general path: loss and gradient for the three presets and every kind
//! of σ (f64 to ~1e-12, f32 to ~1e-4), GD trajectories and kink counts, the fallbacks, results
//! independent of the thread count for a given cut into parts, and the cut following the pool.

use super::*;
use crate::activation::PiecewisePolynomial;
use crate::data::Dataset;
use crate::graph::Graph;
use crate::init::{init_params, InitScheme};
use crate::model::Model;
use crate::presets;
use crate::train::{
    gradient_descent, gradient_descent_general, Control, GdOptions, GdState, Precision,
};
use std::sync::Arc;

fn activations() -> Vec<Activation> {
    vec![
        Activation::leaky_relu(),
        Activation::Prelu { init: 0.25 },
        Activation::Relu,
        Activation::Sigmoid,
        Activation::Piecewise(
            PiecewisePolynomial::new(
                vec![-1.0, 0.5],
                vec![vec![-0.5, 0.3], vec![0.0, 0.8], vec![0.2, 0.4]],
            )
            .unwrap(),
        ),
    ]
}

/// (model, data) for preset `which` with shape variant `v`.
fn case(which: &str, v: usize, act: &Activation) -> (Model, Dataset) {
    let (n, d, m) = [(13, 5, 3), (20, 7, 2), (9, 4, 4)][v];
    let mut data = Dataset::ball(n, d, m, v as u64 + 1);
    let hidden: Vec<usize> = [vec![6, 11], vec![12, 4, 9], vec![3]][v].clone();
    let model = match which {
        "dnn" => presets::dnn(d, &hidden, m, act),
        "resnet" => presets::resnet(d, v + 1, m, act),
        _ => {
            let g = Graph::knn(&data.x, 3).unwrap();
            let a = Arc::new(g.normalized_adjacency());
            data.graph = Some(g);
            presets::gcn(a, d, &hidden, m, act)
        }
    };
    (model, data)
}

fn theta_for(model: &Model, seed: u64) -> Vec<f64> {
    let mut th = init_params(&model.param_specs(), &InitScheme::Torch, seed);
    if matches!(model.activation, Activation::Prelu { .. }) {
        // Move PReLU's slopes (and everything else) off the initial values.
        th.iter_mut().for_each(|v| *v *= 1.7);
    }
    th
}

fn rel(a: &[f64], b: &[f64]) -> f64 {
    let d: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>();
    let nb: f64 = b.iter().map(|y| y * y).sum::<f64>();
    (d / nb).sqrt()
}

#[test]
fn plans_are_recognised_with_the_right_parameter_count() {
    let act = Activation::leaky_relu();
    for which in ["dnn", "resnet", "gcn"] {
        for v in 0..3 {
            let (model, _) = case(which, v, &act);
            let plan = Plan::from_model(&model).unwrap_or_else(|| panic!("{which} {v}"));
            assert_eq!(plan.num_params(), model.p());
        }
    }
    let cnn = presets::cnn(crate::layers::ImageShape::new(1, 4, 4), &[2], 3, 2, &act);
    assert!(Plan::from_model(&cnn).is_none());
    let mut dnn = presets::dnn(3, &[4], 2, &act);
    dnn.preset = None;
    assert!(Plan::from_model(&dnn).is_none());
}

#[test]
fn engine_gradient_matches_the_general_path() {
    for which in ["dnn", "resnet", "gcn"] {
        for act in activations() {
            for v in 0..3 {
                for loss in [LossKind::Mse, LossKind::HalfSse] {
                    let (model, data) = case(which, v, &act);
                    let theta = theta_for(&model, v as u64);
                    let mut g_ref = vec![0.0; model.p()];
                    let (l_ref, _) =
                        model.loss_and_grad(&theta, &data.x, &data.y, loss, &mut g_ref);
                    let tag = format!("{which} v{v} {act} {loss:?}");

                    let mut e64 = engine_for::<f64>(&model, &data, loss, &theta).expect(&tag);
                    let mut g = vec![0.0; model.p()];
                    let l = e64.loss_and_grad(&theta, &mut g);
                    assert!(
                        (l - l_ref).abs() <= 1e-12 * l_ref.abs(),
                        "{tag}: {l} vs {l_ref}"
                    );
                    assert!(rel(&g, &g_ref) <= 1e-12, "{tag}: {}", rel(&g, &g_ref));
                    // Twice: the buffers are reused.
                    let l2 = e64.loss_and_grad(&theta, &mut g);
                    assert_eq!(l, l2, "{tag}");
                    assert!(rel(&g, &g_ref) <= 1e-12, "{tag}");

                    let mut e32 = engine_for::<f32>(&model, &data, loss, &theta).expect(&tag);
                    let th32: Vec<f32> = convert(&theta);
                    let mut g32 = vec![0.0f32; model.p()];
                    let l32 = e32.loss_and_grad(&th32, &mut g32);
                    let g32: Vec<f64> = g32.iter().map(|&v| v as f64).collect();
                    assert!((l32 - l_ref).abs() <= 1e-4 * l_ref.abs(), "{tag}: {l32}");
                    assert!(rel(&g32, &g_ref) <= 1e-4, "{tag}: {}", rel(&g32, &g_ref));
                }
            }
        }
    }
}

/// A rayon pool of `threads` threads.
fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let _lock = crate::parallelism_lock();
    // One cut (4 parts), its parts run one after another (Seq), on a one-thread pool, and on two
    // threads: bitwise equal.
    let act = Activation::Prelu { init: 0.25 };
    for which in ["dnn", "resnet", "gcn"] {
        let (model, data) = case(which, 1, &act);
        let theta = theta_for(&model, 3);
        let run = |par: faer::Par, threads: usize| {
            pool(threads).install(|| {
                let old = faer::get_global_parallelism();
                faer::set_global_parallelism(par);
                let mut e =
                    engine_in_parts::<f64>(&model, &data, LossKind::Mse, &theta, Parts::new(4))
                        .unwrap();
                let mut g = vec![0.0; model.p()];
                let l = e.loss_and_grad(&theta, &mut g);
                faer::set_global_parallelism(old);
                (l, g)
            })
        };
        let seq = run(faer::Par::Seq, 1);
        assert_eq!(seq, run(faer::Par::rayon(1), 1), "{which}");
        assert_eq!(seq, run(faer::Par::rayon(2), 2), "{which}");
    }
}

#[test]
fn the_cut_follows_the_pool_and_every_cut_gives_the_same_gradient() {
    let act = Activation::leaky_relu();
    for which in ["dnn", "resnet", "gcn"] {
        let (model, data) = case(which, 1, &act);
        let theta = theta_for(&model, 3);
        let evaluate = |e: &mut Engine<f64>| {
            let mut g = vec![0.0; model.p()];
            let l = e.loss_and_grad(&theta, &mut g);
            (e.parts.len(), l, g)
        };
        let in_pool = |threads: usize| {
            pool(threads).install(|| {
                evaluate(&mut engine_for::<f64>(&model, &data, LossKind::Mse, &theta).unwrap())
            })
        };
        // Two parts per thread of the pool the engine is built in.
        let two = in_pool(2);
        assert_eq!(two.0, 4, "{which}");
        assert_eq!(in_pool(1).0, 2, "{which}");
        assert_eq!(in_pool(3).0, 6, "{which}");
        // Deterministic for a given pool, and on 2 threads the explicit 4-part cut.
        assert_eq!(two, in_pool(2), "{which}");
        let four = engine_in_parts::<f64>(&model, &data, LossKind::Mse, &theta, Parts::new(4));
        assert_eq!(two, evaluate(&mut four.unwrap()), "{which}");
        // Any cut, down to one part and up to more parts than samples (the last ones empty),
        // computes the general path's loss and gradient.
        let mut g_ref = vec![0.0; model.p()];
        let (l_ref, _) = model.loss_and_grad(&theta, &data.x, &data.y, LossKind::Mse, &mut g_ref);
        for count in [1, 3, 7, 40] {
            let e = engine_in_parts::<f64>(&model, &data, LossKind::Mse, &theta, Parts::new(count));
            let (parts, l, g) = evaluate(&mut e.unwrap());
            assert_eq!(parts, count, "{which}");
            assert!((l - l_ref).abs() <= 1e-12 * l_ref, "{which} {count} parts");
            assert!(rel(&g, &g_ref) <= 1e-12, "{which} {count} parts");
        }
    }
}

fn opts(precision: Precision, track_kinks: bool) -> GdOptions {
    GdOptions {
        lr: 0.05,
        epochs: 25,
        loss: LossKind::Mse,
        track_kinks,
        precision,
    }
}

/// (θ after GD, loss and ‖∇L‖ series interleaved, kink summary) on the engine (`general` false)
/// or the general path.
fn trajectory(
    model: &Model,
    data: &Dataset,
    o: &GdOptions,
    general: bool,
) -> (Vec<f64>, Vec<f64>, crate::kinks::KinkSummary) {
    let mut theta = theta_for(model, 3);
    let mut losses = Vec::new();
    let obs = |r: &crate::train::EpochRecord, _: &crate::train::ThetaView<'_>| {
        losses.push(r.loss);
        losses.push(r.grad_norm);
        Control::Continue
    };
    let out = if general {
        gradient_descent_general(model, data, &mut theta, o, &mut GdState::default(), obs)
    } else {
        gradient_descent(model, data, &mut theta, o, obs)
    }
    .unwrap();
    (theta, losses, out.kinks)
}

#[test]
fn gd_trajectories_match_the_general_path() {
    for which in ["dnn", "resnet", "gcn"] {
        for act in [Activation::leaky_relu(), Activation::Prelu { init: 0.25 }] {
            let (model, data) = case(which, 1, &act);
            let o = opts(Precision::F64, true);
            let (t_ref, l_ref, k_ref) = trajectory(&model, &data, &o, true);
            let (t, l, k) = trajectory(&model, &data, &o, false);
            assert!(
                rel(&t, &t_ref) <= 1e-11,
                "{which} {act}: {}",
                rel(&t, &t_ref)
            );
            assert!(rel(&l, &l_ref) <= 1e-11, "{which} {act}");
            assert_eq!(k, k_ref, "{which} {act}");
            // The engine follows the pieces as bits recorded in its forward pass, the general
            // path as piece indices: the comparison means something only if pieces change.
            assert!(k.total_crossings > 0, "{which} {act}: no crossings");
            assert!(l.last() < l.first(), "{which}: the loss decreases");
            let (t32, l32, _) = trajectory(&model, &data, &opts(Precision::F32, true), false);
            assert!(
                rel(&t32, &t_ref) <= 1e-4,
                "{which} {act}: {}",
                rel(&t32, &t_ref)
            );
            assert!(rel(&l32, &l_ref) <= 1e-4, "{which} {act}");
        }
    }
}

#[test]
fn f32_pause_and_resume_is_bit_identical() {
    let (model, data) = case("dnn", 0, &Activation::leaky_relu());
    let o = opts(Precision::F32, true);
    let (t_ref, l_ref, _) = trajectory(&model, &data, &o, false);
    let mut theta = theta_for(&model, 3);
    let mut state = GdState::default();
    let mut losses = Vec::new();
    let first =
        crate::train::gradient_descent_from(&model, &data, &mut theta, &o, &mut state, |r, _| {
            losses.extend([r.loss, r.grad_norm]);
            if r.epoch == 10 {
                Control::Pause
            } else {
                Control::Continue
            }
        })
        .unwrap();
    assert!(first.paused);
    let mut seen = Vec::new();
    crate::train::gradient_descent_from(&model, &data, &mut theta, &o, &mut state, |r, th| {
        losses.extend([r.loss, r.grad_norm]);
        seen = th.to_vec();
        Control::Continue
    })
    .unwrap();
    assert_eq!(theta, t_ref);
    // The observer saw θ_E itself (converted from the f32 θ when read).
    assert_eq!(seen, theta);
    assert_eq!(losses, l_ref);
    // A view read on some epochs only is θ at that epoch, never a stale conversion: stop at
    // epoch 7 after reading the views of epochs 2 and 7.
    let mut theta = theta_for(&model, 3);
    let mut views = Vec::new();
    crate::train::gradient_descent_from(
        &model,
        &data,
        &mut theta,
        &o,
        &mut GdState::default(),
        |r, th| {
            if r.epoch == 2 || r.epoch == 7 {
                views.push(th.to_vec());
            }
            if r.epoch == 7 {
                Control::Stop
            } else {
                Control::Continue
            }
        },
    )
    .unwrap();
    assert_eq!(views.len(), 2);
    assert_ne!(views[0], views[1]);
    assert_eq!(views[1], theta);
}

#[test]
fn unsupported_models_fall_back_or_refuse_f32() {
    let act = Activation::leaky_relu();
    // A GCN whose data carry no graph, or another graph: the general path (f64) is used.
    let (model, mut data) = case("gcn", 0, &act);
    let theta = theta_for(&model, 0);
    data.graph = Some(Graph::knn(&data.x, 5).unwrap());
    assert!(engine_for::<f64>(&model, &data, LossKind::Mse, &theta).is_none());
    let (t_ref, _, _) = trajectory(&model, &data, &opts(Precision::F64, false), true);
    let (t, _, _) = trajectory(&model, &data, &opts(Precision::F64, false), false);
    assert_eq!(t, t_ref);
    // f32 on a model the engine does not compile: a clear error.
    let shape = crate::layers::ImageShape::new(1, 4, 4);
    let cnn = presets::cnn(shape, &[2], 3, 2, &act);
    let data = Dataset::images(6, 1, 4, 4, 2, 0);
    let mut theta = init_params(&cnn.param_specs(), &InitScheme::Torch, 0);
    let err = gradient_descent(
        &cnn,
        &data,
        &mut theta,
        &opts(Precision::F32, false),
        |_, _| Control::Continue,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("train.precision") && err.contains("dnn, resnet, gcn"),
        "{err}"
    );
}

/// The engine for `model` on `data` in `layout` (DNN and ResNet only: no Â).
fn engine_in(model: &Model, data: &Dataset, layout: Layout) -> Engine<f64> {
    let plan = Plan::from_model(model).unwrap();
    Engine::with_layout(
        plan,
        &model.activation,
        &data.x,
        &data.y,
        LossKind::Mse,
        None,
        layout,
    )
}

#[test]
fn both_layouts_agree_with_the_general_path_and_report_pieces_in_its_order() {
    let two_kinks = activations().pop().unwrap();
    let acts = [
        Activation::leaky_relu(),
        Activation::Prelu { init: 0.25 },
        two_kinks,
    ];
    for which in ["dnn", "resnet"] {
        for act in &acts {
            // The small cases, and one whose parts hold full 8 × 8 blocks of (features,
            // samples) and words spanning two samples.
            let mut cases: Vec<(Model, Dataset)> = (0..3).map(|v| case(which, v, act)).collect();
            let big = Dataset::ball(70, 17, 3, 9);
            cases.push(match which {
                "dnn" => (presets::dnn(17, &[19, 9], 3, act), big),
                _ => (presets::resnet(17, 2, 3, act), big),
            });
            // Parts of 76 samples: chunks of 38 (vector lanes) and rows spanning two words.
            let long = Dataset::ball(300, 17, 3, 11);
            cases.push(match which {
                "dnn" => (presets::dnn(17, &[19, 9], 3, act), long),
                _ => (presets::resnet(17, 2, 3, act), long),
            });
            for (v, (model, data)) in cases.iter().enumerate() {
                let tag = format!("{which} case {v} {act}");
                let theta = theta_for(model, v as u64 + 5);
                let mut g_ref = vec![0.0; model.p()];
                let (l_ref, _) =
                    model.loss_and_grad(&theta, &data.x, &data.y, LossKind::Mse, &mut g_ref);
                let u_ref = model.outputs(&theta, &data.x);
                let mut seen: Vec<(Vec<u16>, Vec<u64>)> = Vec::new();
                for layout in [Layout::Features, Layout::Samples] {
                    let mut e = engine_in(model, data, layout);
                    assert_eq!(e.layout(), layout);
                    let mut g = vec![0.0; model.p()];
                    e.set_record_pieces(true);
                    let l = e.loss_and_grad(&theta, &mut g);
                    assert!((l - l_ref).abs() <= 1e-12 * l_ref, "{tag} {layout:?}");
                    assert!(rel(&g, &g_ref) <= 1e-12, "{tag} {layout:?}");
                    let u: Vec<f64> = e.outputs().collect();
                    assert!(rel(&u, u_ref.as_slice()) <= 1e-12, "{tag} {layout:?}");
                    let mut pieces = Vec::new();
                    e.pieces(&mut pieces);
                    assert_eq!(pieces.len(), e.tracked(), "{tag}");
                    let mut bits = Vec::new();
                    if e.single_kink().is_some() {
                        let bl = crate::kinks::BitLayout::new(&e.piece_segments());
                        // Recorded in the forward pass, and computed from z afterwards.
                        let mut recorded = vec![u64::MAX; bl.words()];
                        e.piece_bits(&bl, &mut recorded);
                        e.set_record_pieces(false);
                        bits = vec![u64::MAX; bl.words()];
                        e.piece_bits(&bl, &mut bits);
                        assert_eq!(recorded, bits, "{tag} {layout:?}");
                        for (k, &p) in pieces.iter().enumerate() {
                            assert_eq!(bl.get(&bits, k), p == 1, "{tag} {layout:?} entry {k}");
                        }
                    }
                    seen.push((pieces, bits));
                }
                assert_eq!(seen[0], seen[1], "{tag}: pieces differ between layouts");
                // The entry order is the general path's: sample by sample, features fastest.
                let mut tracker = crate::kinks::KinkTracker::new();
                let ev = model.evaluate(&theta, &data.x);
                tracker.observe(model, &data.x, &ev);
                let mut again = crate::kinks::KinkTracker::new();
                again.observe_pieces(|out| out.extend_from_slice(&seen[1].0));
                assert_eq!(
                    serde_json::to_string(&tracker).unwrap(),
                    serde_json::to_string(&again).unwrap(),
                    "{tag}: the engine's pieces are not in the general path's order"
                );
            }
        }
    }
}

#[test]
fn f32_sample_major_at_the_benchmark_width_matches_the_general_path() {
    // Width 100 (faer tiles the samples, 40 of them in parts of 10, not the 100 features).
    let act = Activation::leaky_relu();
    let data = Dataset::ball(40, 100, 3, 5);
    for model in [
        presets::resnet(100, 2, 3, &act),
        presets::dnn(100, &[100], 3, &act),
    ] {
        let theta = theta_for(&model, 4);
        let mut g_ref = vec![0.0; model.p()];
        let (l_ref, _) = model.loss_and_grad(&theta, &data.x, &data.y, LossKind::Mse, &mut g_ref);
        let mut e = engine_for::<f32>(&model, &data, LossKind::Mse, &theta).unwrap();
        assert_eq!(e.layout(), Layout::Samples);
        let mut g = vec![0.0f32; model.p()];
        let l = e.loss_and_grad(&convert(&theta), &mut g);
        let g: Vec<f64> = g.iter().map(|&v| v as f64).collect();
        assert!((l - l_ref).abs() <= 1e-4 * l_ref, "{}", model.preset_name());
        assert!(
            rel(&g, &g_ref) <= 1e-4,
            "{}: {}",
            model.preset_name(),
            rel(&g, &g_ref)
        );
    }
}

#[test]
fn recorded_bits_follow_z_over_steps_in_both_layouts() {
    // The sample-major layout keeps the tracker's bits up to date by toggling only the entries
    // whose row bits changed: after every recorded forward pass they must equal the pieces
    // read off z, also after passes that did not record. With ReLU and leaky ReLU it keeps no
    // z at all (σ' is read off the bits): its pieces must then equal the feature-major
    // layout's, which are read off z.
    for (which, act) in [
        ("dnn", Activation::leaky_relu()),
        ("resnet", Activation::leaky_relu()),
        ("resnet", Activation::Relu),
    ] {
        let data = Dataset::ball(70, 17, 3, 4);
        let model = match which {
            "dnn" => presets::dnn(17, &[19, 9], 3, &act),
            _ => presets::resnet(17, 2, 3, &act),
        };
        let theta = theta_for(&model, 1);
        let delta = theta_for(&model, 2);
        let mut per_layout = Vec::new();
        for layout in [Layout::Features, Layout::Samples] {
            let mut steps = Vec::new();
            let mut e = engine_in(&model, &data, layout);
            let bl = crate::kinks::BitLayout::new(&e.piece_segments());
            let mut flips = 0;
            let mut last = vec![0u64; bl.words()];
            for k in 0..8 {
                let th: Vec<f64> = theta
                    .iter()
                    .zip(&delta)
                    .map(|(a, b)| a + 0.15 * k as f64 * b)
                    .collect();
                let record = k != 3 && k != 4;
                e.set_record_pieces(record);
                e.forward(&th);
                if !record {
                    continue;
                }
                let mut bits = vec![u64::MAX; bl.words()];
                e.piece_bits(&bl, &mut bits);
                let mut pieces = Vec::new();
                e.pieces(&mut pieces);
                for (i, &p) in pieces.iter().enumerate() {
                    assert_eq!(
                        bl.get(&bits, i),
                        p == 1,
                        "{which} {layout:?} step {k} entry {i}"
                    );
                }
                flips += bits
                    .iter()
                    .zip(&last)
                    .map(|(a, b)| (a ^ b).count_ones())
                    .sum::<u32>();
                last = bits;
                steps.push(pieces);
            }
            assert!(flips > 100, "{which} {act} {layout:?}: only {flips} flips");
            per_layout.push(steps);
        }
        assert_eq!(
            per_layout[0], per_layout[1],
            "{which} {act}: the layouts' pieces differ"
        );
    }
}

#[test]
fn sigma_prime_from_bits_equals_sigma_prime_from_z_bit_for_bit() {
    // ReLU and leaky ReLU in the sample-major layout keep no z: σ' comes from the pieces' bits.
    // The same engine made to keep z (σ' from z) must give the same loss, gradient and pieces,
    // bit for bit, over GD steps that move pre-activations across the kink — with kink
    // recording on and off.
    let data = Dataset::ball(150, 17, 3, 8);
    for act in [Activation::Relu, Activation::leaky_relu()] {
        for model in [
            presets::resnet(17, 3, 3, &act),
            presets::dnn(17, &[19, 9], 3, &act),
        ] {
            let theta = theta_for(&model, 3);
            let mut bits = engine_for::<f32>(&model, &data, LossKind::Mse, &theta).unwrap();
            let mut zs = engine_for::<f32>(&model, &data, LossKind::Mse, &theta).unwrap();
            assert!(bits.sigma_bits, "{act}: σ' should come from the bits");
            zs.keep_z();
            let (mut tb, mut tz) = (convert::<f32>(&theta), convert::<f32>(&theta));
            let (mut gb, mut gz) = (vec![0.0f32; model.p()], vec![0.0f32; model.p()]);
            let mut flips = 0;
            let mut last = Vec::new();
            for k in 0..12 {
                zs.set_record_pieces(k % 3 != 0);
                bits.set_record_pieces(k % 3 != 0);
                let lb = bits.loss_and_grad(&tb, &mut gb);
                let lz = zs.loss_and_grad(&tz, &mut gz);
                assert_eq!(
                    lb.to_bits(),
                    lz.to_bits(),
                    "{act} {} step {k}",
                    model.preset_name()
                );
                assert!(gb.iter().zip(&gz).all(|(a, b)| a.to_bits() == b.to_bits()));
                let (mut p_bar, mut pz) = (Vec::new(), Vec::new());
                bits.pieces(&mut p_bar);
                zs.pieces(&mut pz);
                assert_eq!(p_bar, pz, "{act} {} step {k}: pieces", model.preset_name());
                flips += p_bar.iter().zip(&last).filter(|(a, b)| a != b).count();
                last = p_bar;
                for ((t, &g), (u, &h)) in tb.iter_mut().zip(&gb).zip(tz.iter_mut().zip(&gz)) {
                    *t -= 0.5 * g;
                    *u -= 0.5 * h;
                }
            }
            assert!(
                flips > 20,
                "{act} {}: only {flips} pieces changed",
                model.preset_name()
            );
        }
    }
}
