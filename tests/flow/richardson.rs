//! The check both GD-limit tests share: GD's final losses at halving steps, their first-order
//! Richardson extrapolations, and the flow's L(T) against the spread of the finest three.

/// Asserts that the flow's L(T) `lf` lies within the scatter of the three finest Richardson
/// extrapolations 2·L(η/2) − L(η) of GD's losses `gd` (at the steps `etas`, halving), that the
/// scatter is below `spread_rel`·lf, that GD's error shrinks with η, and that the flow's own
/// tolerance error `flow_gap` is far below the scatter.
pub fn assert_flow_is_gd_limit(lf: f64, flow_gap: f64, etas: &[f64], gd: &[f64], spread_rel: f64) {
    for (eta, l) in etas.iter().zip(gd) {
        println!("GD η = {eta:e}: L(T) = {l:.12e} (− flow: {:+.3e})", l - lf);
    }
    let rich: Vec<f64> = gd.windows(2).map(|w| 2.0 * w[1] - w[0]).collect();
    for r in &rich {
        println!("Richardson: {r:.12e} (− flow: {:+.3e})", r - lf);
    }
    let fine = &rich[rich.len() - 3..];
    let (lo, hi) = fine
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &r| {
            (a.min(r), b.max(r))
        });
    let spread = hi - lo;
    let outside = (lo - lf).max(lf - hi).max(0.0);
    println!(
        "spread of the finest extrapolations {spread:.3e} ({:.2e} relative); flow outside their \
         range by {outside:.3e}; |L(rtol 1e-8) − L(rtol 1e-10)| = {flow_gap:.3e}",
        spread / lf
    );
    // The extrapolations pin the limit down ...
    assert!(
        spread < spread_rel * lf,
        "extrapolations scatter by {spread:.3e}"
    );
    // ... and the flow lies within that scatter of them.
    assert!(
        outside <= spread,
        "flow L(T) {lf:.12e} is {outside:.3e} outside [{lo:.12e}, {hi:.12e}]"
    );
    // GD itself converges to the flow: the error at the finest η is far below the coarsest.
    let (e0, e1) = ((gd[0] - lf).abs(), (gd[gd.len() - 1] - lf).abs());
    assert!(e1 < e0 / 4.0, "GD errors {e0:.3e} → {e1:.3e}");
    // The flow's own tolerance error is negligible against the GD-based check.
    assert!(
        flow_gap < spread / 100.0,
        "rtol 1e-8 vs 1e-10: {flow_gap:.3e} (spread {spread:.3e})"
    );
}
