//! Releasing a pinned entry without a new evaluation (`KinkSystem::release_exactly`) against
//! the independent route: a fresh system with the entry unpinned on its new piece, evaluated.
//! Field, normal speeds and effective slopes of the remaining pinned entries must agree, on the
//! compiled route and on the layer path, for releases up and down; where pinned entries of an
//! earlier layer share the released entry's sample, their cotangents (hence speeds) run through
//! it and must be marked stale instead. Where pinned entries of a later layer share it, their
//! rows run through it: the compiled route moves them (their chain factors from the stored rows;
//! it refuses a release that the moved rows turn back), the layer path evaluates.

use gradflow::activation::Activation;
use gradflow::data::Dataset;
use gradflow::flow::system::KinkSystem;
use gradflow::flow::{gradient_flow, FlowOptions};
use gradflow::init::{init_params, InitScheme};
use gradflow::loss::LossKind;
use gradflow::model::Model;
use gradflow::presets;
use gradflow::train::Control;

/// θ at the first output time of a flow solve with at least `min_pinned` entries sliding, and
/// those entries (the pre-activations nearest their kink at 0).
fn sliding_state(model: &Model, data: &Dataset, min_pinned: usize) -> (Vec<f64>, Vec<usize>) {
    let mut theta = init_params(&model.param_specs(), &InitScheme::Torch, 0);
    let opts = FlowOptions::new(20.0, 1e-10, 1e-12, 400, LossKind::Mse);
    let mut k = 0;
    gradient_flow(model, data, &mut theta, &opts, |r, _| {
        k = r.pinned;
        if r.pinned >= min_pinned {
            Control::Stop
        } else {
            Control::Continue
        }
    })
    .expect("flow solve");
    assert!(
        k >= min_pinned,
        "no output time with {min_pinned} entries sliding"
    );
    let sys = KinkSystem::new(model, data, LossKind::Mse, &theta, false).expect("system");
    let z = &sys.last.z;
    let mut order: Vec<usize> = (0..z.len()).collect();
    order.sort_by(|&a, &b| z[a].abs().total_cmp(&z[b].abs()));
    let mut pinned = order[..k].to_vec();
    pinned.sort();
    assert!(z[pinned[k - 1]].abs() < 1e-7 && z[order[k]].abs() > 1e-5);
    (theta, pinned)
}

/// A system at θ with `pinned` held on their knots (θ projected onto them) and evaluated, its
/// other entries on the pieces θ puts them after the projection.
fn held<'a>(
    model: &'a Model,
    data: &'a Dataset,
    theta: &mut [f64],
    pinned: &[usize],
    compiled: bool,
    field: &mut [f64],
) -> KinkSystem<'a> {
    let pin = |theta: &[f64]| {
        let mut sys = KinkSystem::new(model, data, LossKind::Mse, theta, compiled).expect("system");
        assert_eq!(sys.is_compiled(), compiled);
        for &e in pinned {
            sys.pieces[e] = 0;
        }
        sys.pinned = pinned.to_vec();
        sys.refresh();
        sys
    };
    // Gauss–Newton projections until the pinned entries sit on their knots.
    let mut sys = pin(theta);
    for _ in 0..8 {
        sys.evaluate(theta, field).expect("evaluate");
        sys.project_onto_knots(theta);
    }
    drop(sys);
    let mut sys = pin(theta);
    sys.evaluate(theta, field).expect("evaluate");
    sys.project_onto_knots(theta);
    sys.evaluate(theta, field).expect("evaluate");
    let off = pinned
        .iter()
        .map(|&e| sys.last.z[e].abs())
        .fold(0.0, f64::max);
    assert!(off < 1e-12, "pinned entries off their knots by {off:e}");
    sys
}

/// Per sample 0..4, the entry nearest its kink in each of the two activation layers (so that
/// pinned entries of both layers share a sample: the coupled releases).
fn coupled_set(model: &Model, data: &Dataset, theta: &[f64]) -> Vec<usize> {
    let sys = KinkSystem::new(model, data, LossKind::Mse, theta, false).expect("system");
    let z = &sys.last.z;
    let mut out = Vec::new();
    for i in 0..4 {
        for layer in 0..2 {
            let start = layer * 80 + i * 8;
            let best = (start..start + 8)
                .min_by(|&a, &b| z[a].abs().total_cmp(&z[b].abs()))
                .expect("units");
            out.push(best);
        }
    }
    out.sort();
    out
}

fn max_abs(v: impl Iterator<Item = f64>) -> f64 {
    v.fold(0.0, |m, x| m.max(x.abs()))
}

#[test]
fn release_without_evaluation_equals_a_fresh_evaluation() {
    let model = presets::dnn(4, &[8, 8], 2, &Activation::leaky_relu());
    let data = Dataset::ball(10, 4, 2, 0);
    let (theta0, sliding) = sliding_state(&model, &data, 3);
    let coupled = coupled_set(&model, &data, &theta0);
    let p = theta0.len();
    // Entries: layer-major, then sample-major i·8 + unit (n = 10, width 8).
    let place = |e: usize| (e / 80, (e % 80) / 8);
    for (pinned, compiled) in [
        (&sliding, true),
        (&sliding, false),
        (&coupled, true),
        (&coupled, false),
    ] {
        let (mut released, mut refused, mut stale_checked, mut rows_moved) = (0, 0, 0, 0);
        for &e in pinned {
            for up in [false, true] {
                let mut theta = theta0.clone();
                let mut f = vec![0.0; p];
                let mut sys = held(&model, &data, &mut theta, pinned, compiled, &mut f);
                let evaluations = sys.counts.gradients;
                // As the solver does before a release (and must not disturb what it reads).
                sys.project_onto_knots(&mut theta);
                // The slopes the evaluation used (cotangents of coupled entries depend on them).
                let slopes: Vec<(usize, f64)> = pinned
                    .iter()
                    .copied()
                    .zip(sys.last.evaluated_slopes.iter().copied())
                    .collect();
                if !sys.release_exactly(e, up, &mut f) {
                    refused += 1;
                    continue;
                }
                released += 1;
                assert_eq!(sys.counts.gradients, evaluations, "no evaluation");
                let rest: Vec<usize> = pinned.iter().copied().filter(|&q| q != e).collect();
                assert_eq!(sys.pinned, rest);
                assert_eq!(sys.pieces[e], up as u16);

                let mut fresh =
                    KinkSystem::new(&model, &data, LossKind::Mse, &theta, compiled).unwrap();
                for &q in &rest {
                    fresh.pieces[q] = 0;
                }
                fresh.pieces[e] = up as u16;
                fresh.pinned = rest.clone();
                for &(q, s) in slopes.iter().filter(|(q, _)| *q != e) {
                    fresh.pin_slopes.insert(q, s);
                }
                fresh.refresh();
                let mut f2 = vec![0.0; p];
                fresh.evaluate(&theta, &mut f2).unwrap();

                let scale = max_abs(f2.iter().copied());
                let gap = max_abs(f.iter().zip(&f2).map(|(a, b)| a - b));
                assert!(
                    gap <= 1e-10 * scale,
                    "field (entry {e} at {:?}, up {up}, pinned {pinned:?}): {gap:e} of {scale:e}",
                    place(e)
                );
                let (a, b) = (&sys.last, &fresh.last);
                // Pinned entries of an earlier layer in e's sample: stale, and marked so.
                let (le, se) = place(e);
                if rest.iter().any(|&q| place(q).1 == se && place(q).0 > le) {
                    rows_moved += 1;
                }
                let exact: Vec<bool> = rest
                    .iter()
                    .map(|&q| !(place(q).1 == se && place(q).0 < le))
                    .collect();
                if exact.iter().any(|x| !x) {
                    assert!(a.slopes_updated, "stale speeds not marked (entry {e})");
                    stale_checked += 1;
                }
                let kept = |v: &[f64]| -> Vec<f64> {
                    v.iter()
                        .zip(&exact)
                        .filter(|(_, &x)| x)
                        .map(|(y, _)| *y)
                        .collect()
                };
                let (al, ar, bl, br) = (
                    kept(&a.zdot_left),
                    kept(&a.zdot_right),
                    kept(&b.zdot_left),
                    kept(&b.zdot_right),
                );
                let speeds = max_abs(bl.iter().chain(&br).copied());
                let speed_gap = max_abs(
                    al.iter()
                        .zip(&bl)
                        .chain(ar.iter().zip(&br))
                        .map(|(x, y)| x - y),
                );
                assert!(
                    speed_gap <= 1e-9 * speeds,
                    "normal speeds (compiled {compiled}, entry {e}, up {up}): {speed_gap:e} of \
                     {speeds:e}: {:?} / {:?} vs {:?} / {:?}",
                    al,
                    ar,
                    bl,
                    br
                );
                let (sa, sb) = (kept(&a.slopes), kept(&b.slopes));
                let slope_gap = max_abs(sa.iter().zip(&sb).map(|(x, y)| x - y));
                assert!(slope_gap <= 1e-8, "effective slopes: {slope_gap:e}");
                assert!((a.field_norm - b.field_norm).abs() <= 1e-10 * b.field_norm);
            }
        }
        println!(
            "compiled {compiled}: {} pinned, {released} releases checked ({stale_checked} with \
             stale cotangents, {rows_moved} with moved rows), {refused} refused",
            pinned.len()
        );
        assert!(released >= 2, "too few releases exercised");
        if pinned == &coupled {
            assert!(stale_checked >= 2, "stale cotangents not exercised");
            if compiled {
                assert!(rows_moved >= 2, "moved rows not exercised");
            } else {
                assert!(refused >= 2, "the layer path must refuse moved rows");
            }
        }
    }
}
