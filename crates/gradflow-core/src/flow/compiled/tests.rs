//! The compiled route's factorisation against the general one: G formed from the rows expanded
//! to parameter vectors and factorised by [`BorderedGram::factor`] in the same order (which
//! forms L_CA and the Schur complement by products), and the projection against the scalar
//! Cholesky route of `gram.rs` in the pinned order; and the first layer's kept parts against
//! fresh ones, at a new θ, across the drop threshold and along random pin/release sequences.

use super::first_layer::{FirstLayer, Shape};
use super::{Compiled, PinSlot};
use crate::activation::Activation;
use crate::engine::Plan;
use crate::flow::gram::tests_support::{dot, scalar_route};
use crate::flow::gram_bordered::BorderedGram;
use crate::loss::LossKind;
use faer::Par;
use rand::{RngExt, SeedableRng};

/// A compiled dnn d → [w1, w2] → 2 on n random samples, its θ and pieces, with `pinned` set.
fn system(
    d: usize,
    widths: [usize; 2],
    n: usize,
    pinned: &[usize],
    seed: u64,
) -> (Compiled, Vec<f64>, Vec<u16>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let act = Activation::leaky_relu();
    let plan = Plan::dnn(d, &widths, 2, &act);
    let x: Vec<f64> = (0..n * d).map(|_| rng.random::<f64>() - 0.5).collect();
    let y: Vec<f64> = (0..n * 2).map(|_| rng.random::<f64>() - 0.5).collect();
    let theta: Vec<f64> = (0..plan.num_params())
        .map(|_| rng.random::<f64>() - 0.5)
        .collect();
    let mut c = Compiled::new(plan, act, &x, &y, n, LossKind::Mse, None).expect("compiled");
    let pieces: Vec<u16> = (0..c.entries()).map(|_| rng.random_range(0..2)).collect();
    let slots: Vec<PinSlot> = (0..pinned.len())
        .map(|_| PinSlot {
            knot: 0.0,
            left_piece: 0,
            slope: 0.05 + 0.9 * rng.random::<f64>(),
        })
        .collect();
    c.set_pins(pinned, slots.into_iter());
    (c, theta, pieces)
}

/// Gradient, rows and factorisation at θ; returns w = G⁻¹ (R g) and the speeds' scales
/// 1/‖∇z_j‖² (∞ where dropped), in pinned order.
fn solve_at(c: &mut Compiled, theta: &[f64], pieces: &[u16], pinned: &[usize]) -> [Vec<f64>; 3] {
    let p = theta.len();
    let (mut grad, mut z, mut cot) = (vec![0.0; p], vec![0.0; c.entries()], Vec::new());
    c.gradient(theta, pieces, pinned, &mut grad, &mut z, &mut cot);
    c.rows(theta, pieces, pinned);
    c.factor(Par::Seq);
    let (mut rg, mut w, mut diag) = (Vec::new(), Vec::new(), Vec::new());
    c.rows_dot(&grad, &mut rg);
    c.solve(&rg, &mut w, Par::Seq);
    c.inverse_row_norms(&mut diag);
    [grad, w, diag]
}

/// The stored rows as parameter vectors, in pinned order (row j = Rᵀ e_j).
fn expanded_rows(c: &mut Compiled, k: usize, p: usize) -> Vec<Vec<f64>> {
    (0..k)
        .map(|j| {
            let mut e = vec![0.0; k];
            e[j] = 1.0;
            let mut row = vec![0.0; p];
            c.add_rows_t(&e, &mut row);
            row
        })
        .collect()
}

/// Pinned sets with (a) a few entries of every layer, (b) unit 0 of the first layer pinned on
/// every sample (more samples than d + 1: its block is rank-deficient and drops directions)
/// plus second-layer entries on the same samples.
fn pinned_sets(d: usize, w1: usize, w2: usize, n: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let first = n * w1;
    let mut a: Vec<usize> = (0..first + n * w2)
        .filter(|_| rng.random::<f64>() < 0.12)
        .collect();
    a.dedup();
    let mut b: Vec<usize> = (0..n).map(|i| i * w1).collect();
    b.extend((0..n).step_by(3).map(|i| first + i * w2 + i % w2));
    b.extend((0..n).step_by(5).map(|i| i * w1 + 1 + i % (w1 - 1)));
    b.sort_unstable();
    b.dedup();
    assert!(n > d + 1);
    vec![a, b]
}

/// The compiled factorisation equals the general bordered one on G formed from the expanded
/// rows (same drops and solves to rounding; the speeds' scales 1/‖row‖² of the expanded rows,
/// ∞ exactly where it drops), projects g onto the rows' complement
/// like the scalar Cholesky route in the pinned order, and gives the same bits at a second θ
/// (kept first-layer parts) as a fresh system there.
#[test]
fn compiled_factor_equals_general_route() {
    let (d, w1, w2, n) = (4, 6, 5, 24);
    let sets = pinned_sets(d, w1, w2, n, 3);
    for (case, pinned) in sets.iter().enumerate() {
        let (mut c, theta, pieces) = system(d, [w1, w2], n, pinned, 11);
        let (k, p) = (pinned.len(), theta.len());
        let [grad, w, diag] = solve_at(&mut c, &theta, &pieces, pinned);
        let rows = expanded_rows(&mut c, k, p);
        let b: Vec<f64> = rows.iter().map(|r| dot(r, &grad)).collect();
        // The general route in the same internal order.
        let r = &c.r;
        let kc = r.kt[1];
        let mut general = BorderedGram::default();
        let parts = general.parts_mut(kc, &r.block_sizes);
        let row = |q: usize| &rows[r.inv[q]];
        for cc in 0..kc {
            for a in cc..kc {
                parts.corner[cc * kc + a] = dot(row(a), row(cc));
            }
        }
        let (mut start, mut store) = (kc, 0);
        for &m in &r.block_sizes {
            for cc in 0..m {
                for a in cc..m {
                    parts.diagonal[store + cc * m + a] = dot(row(start + a), row(start + cc));
                }
            }
            start += m;
            store += m * m;
        }
        for a in 0..k - kc {
            for cc in 0..kc {
                parts.border[a * kc + cc] = dot(row(cc), row(kc + a));
            }
        }
        general.factor(Par::Seq);
        let mut y: Vec<f64> = (0..k).map(|q| b[r.inv[q]]).collect();
        general.solve_in_place(&mut y, Par::Seq);
        let mut dropped = Vec::new();
        general.dropped_directions(&mut dropped);
        let drops = dropped.iter().filter(|&&d| d).count();
        if case == 1 {
            assert!(drops >= n - d - 1, "case {case}: {drops} dropped");
        }
        let wn = dot(&w, &w).sqrt();
        for q in 0..k {
            let j = r.inv[q];
            assert!((w[j] - y[q]).abs() <= 1e-9 * wn, "case {case}: w[{j}]");
            let a = diag[j];
            let ok = if dropped[q] {
                a.is_infinite()
            } else {
                let e = 1.0 / dot(&rows[j], &rows[j]);
                (a - e).abs() <= 1e-12 * e
            };
            assert!(ok, "case {case}: scale[{j}] {a}");
        }
        // The projection against the scalar route in the pinned order (other drops, same Rᵀw).
        let g: Vec<f64> = (0..k * k)
            .map(|ij| dot(&rows[ij / k], &rows[ij % k]))
            .collect();
        let (_, ws, _) = scalar_route(&g, k, &b);
        let proj = |w: &[f64]| {
            let mut f = grad.clone();
            for (row, wj) in rows.iter().zip(w) {
                for (fv, rv) in f.iter_mut().zip(row) {
                    *fv -= wj * rv;
                }
            }
            f
        };
        let (f, fs) = (proj(&w), proj(&ws));
        let gn = dot(&grad, &grad).sqrt();
        for (a, e) in f.iter().zip(&fs) {
            assert!(
                (a - e).abs() <= 1e-8 * gn,
                "case {case}: projection {a} vs {e}"
            );
        }
        for row in &rows {
            assert!(dot(row, &f).abs() <= 1e-8 * gn * dot(row, row).sqrt());
        }
        // A second θ with the same pinned set (kept first-layer parts) against a fresh system.
        let theta2: Vec<f64> = theta
            .iter()
            .enumerate()
            .map(|(i, t)| t * (1.0 + 0.3 * (i as f64).sin()))
            .collect();
        let [_, w_kept, diag_kept] = solve_at(&mut c, &theta2, &pieces, pinned);
        let (mut fresh, _, _) = system(d, [w1, w2], n, pinned, 11);
        let [_, w_fresh, diag_fresh] = solve_at(&mut fresh, &theta2, &pieces, pinned);
        assert_eq!(w_kept, w_fresh, "case {case}");
        assert_eq!(diag_kept, diag_fresh, "case {case}");
    }
}

/// The kept blocks follow the drop threshold: a block with a pivot ≈ 1e-10 of its diagonal
/// keeps the direction below a threshold and drops it above; every answer equals a fresh
/// factorisation's, bit for bit.
#[test]
fn first_layer_parts_follow_the_drop_threshold() {
    let (inp, n) = (3, 5);
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut x: Vec<f64> = (0..n * inp).map(|_| rng.random::<f64>() - 0.5).collect();
    // Sample 1 is sample 0 moved by 1e-5: their block's second pivot is ≈ 1e-10.
    for f in 0..inp {
        x[inp + f] = x[f] + if f == 0 { 1e-5 } else { 0.0 };
    }
    // Dense entries on samples 4, 2, 4; unit 1 pinned on samples 0, 1, 3; unit 2 on 2.
    let places = [(4, 0), (2, 0), (4, 0), (0, 1), (1, 1), (3, 1), (2, 2)];
    let shape = Shape {
        kc: 3,
        k: places.len(),
        inp,
        x: &x,
        block_sizes: &[3, 1],
    };
    let build = |tops: &[f64]| {
        let mut f = FirstLayer::default();
        f.shape(&[7], &shape, |q| places[q]);
        for &t in tops {
            f.prepare(t);
        }
        let d = f.dropped.clone();
        (d, f.factor.clone(), f.v.clone())
    };
    let low = build(&[1.0]);
    let high = build(&[1e4]);
    assert_eq!(low.0, vec![false; 4]);
    assert_eq!(high.0, vec![false, true, false, false]);
    assert_eq!(build(&[1.0, 1e4]), high);
    assert_eq!(build(&[1e4, 1.0]), low);
    assert_eq!(build(&[1.0, 2.0, 1.0]), low);
}

/// Times the factorisation with kept first-layer parts against one that rebuilds them (a new
/// pinned set), at the bench's shape (not a test: `--ignored --nocapture`).
#[test]
#[ignore]
fn time_first_layer_rebuild() {
    let (d, w, n) = (20, 48, 100);
    for (first, second) in [(120usize, 60usize), (300, 165)] {
        let per = n * w;
        let mut pinned: Vec<usize> = (0..first)
            .map(|i| (i * per / first + 7 * i) % per)
            .collect();
        pinned.extend((0..second).map(|i| per + (i * per / second + 11 * i) % per));
        pinned.sort_unstable();
        pinned.dedup();
        let (mut c, theta, pieces) = system(d, [w, w], n, &pinned, 1);
        solve_at(&mut c, &theta, &pieces, &pinned);
        let reps = 100;
        let mut best = [f64::INFINITY; 2];
        for _ in 0..reps {
            for (slot, fresh) in [(0, false), (1, true)] {
                if fresh {
                    c.r.first.forget();
                }
                let t0 = std::time::Instant::now();
                c.factor(Par::Seq);
                best[slot] = best[slot].min(t0.elapsed().as_secs_f64());
            }
        }
        println!(
            "K = {}: factor with kept first-layer parts {:.3} ms, building them (a new set) {:.3} ms",
            pinned.len(),
            1e3 * best[0],
            1e3 * best[1]
        );
    }
}

/// A long random sequence of pins and releases (one entry at a time, as events change the
/// pinned set) with θ moving between them, on one kept system: at every step its answers (w and
/// the speeds' scales) equal a fresh system's at the same set and θ, bit for bit, so nothing the
/// system keeps across sets or θ (the first layer's parts, the row buffers) goes stale.
#[test]
fn kept_system_equals_a_fresh_one_along_random_pin_release_sequences() {
    let (d, w1, w2, n) = (4, 6, 5, 24);
    let entries = n * (w1 + w2);
    let slots = |pinned: &[usize]| -> Vec<PinSlot> {
        pinned
            .iter()
            .map(|&e| PinSlot {
                knot: 0.0,
                left_piece: 0,
                slope: 0.05 + 0.9 * ((e * 7919) % 101) as f64 / 101.0,
            })
            .collect()
    };
    let (mut kept, mut theta, pieces) = system(d, [w1, w2], n, &[], 11);
    let mut rng = rand::rngs::StdRng::seed_from_u64(29);
    let mut pinned: Vec<usize> = Vec::new();
    let (mut pins, mut releases, mut largest, mut kept_sets) = (0, 0, 0, 0);
    for step in 0..180 {
        // Mostly pins while few are pinned, then as many releases; a few first-layer units
        // pinned on many samples so their blocks drop directions.
        // One step in five keeps the set (θ still moves: the kept parts are reused).
        let keep = rng.random::<f64>() < 0.2;
        let pin = pinned.len() < 8 || (pinned.len() < 60 && rng.random::<f64>() < 0.62);
        if keep && !pinned.is_empty() {
            kept_sets += 1;
        } else if pin {
            let e = if rng.random::<f64>() < 0.3 {
                rng.random_range(0..n) * w1
            } else {
                rng.random_range(0..entries)
            };
            if let Err(at) = pinned.binary_search(&e) {
                pinned.insert(at, e);
                pins += 1;
            }
        } else {
            pinned.remove(rng.random_range(0..pinned.len()));
            releases += 1;
        }
        largest = largest.max(pinned.len());
        for t in theta.iter_mut() {
            *t += 1e-3 * (rng.random::<f64>() - 0.5);
        }
        kept.set_pins(&pinned, slots(&pinned).into_iter());
        let [_, w_kept, scale_kept] = solve_at(&mut kept, &theta, &pieces, &pinned);
        let (mut fresh, _, _) = system(d, [w1, w2], n, &[], 11);
        fresh.set_pins(&pinned, slots(&pinned).into_iter());
        let [_, w_fresh, scale_fresh] = solve_at(&mut fresh, &theta, &pieces, &pinned);
        assert_eq!(w_kept, w_fresh, "step {step}, {} pinned", pinned.len());
        assert_eq!(scale_kept, scale_fresh, "step {step}");
    }
    assert!(
        pins > 60 && releases > 40 && largest >= 25 && kept_sets > 20,
        "{pins} {releases} {largest} {kept_sets}"
    );
}
