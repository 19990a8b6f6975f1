//! The pinned entries' classification after an evaluation: their normal speeds on both sides
//! of the kink (Schur complement, see the parent module's docs), their effective slopes, and
//! the re-installation of slopes that moved.

use super::*;

impl KinkSystem<'_> {
    /// The pinned entries' normal speeds on both sides and effective slopes from the
    /// multipliers μ, the cotangents c at σ(z_j) and `scale`, re-installing changed slopes.
    /// The speed −(μ_j + (s − s₀) c_j) / (G⁻¹)_jj is kept with (G⁻¹)_jj replaced by `scale`_j
    /// = 1/‖∇z_j‖² (∞ for a dependent row: speed 0), a positive factor, so every decision
    /// (signs, the ratio of the two sides) is the exact one; magnitudes only order the
    /// departures of one event and pace the event location's secant.
    pub(super) fn classify(&mut self, c: &[f64], mu: &[f64], scale: &[f64]) {
        self.last.zdot_left.clear();
        self.last.zdot_right.clear();
        self.last.slopes.clear();
        self.last.evaluated_slopes.clear();
        let mut changed = false;
        let mut upstream_affected = false;
        // The first (most upstream) activation layer holding a pinned entry, per sample; over
        // all samples when the network mixes them (a slope then reaches pinned entries of
        // other samples upstream of it, through the propagations).
        let mixes = self.model.net.mixes_samples();
        let mut first_layer = std::mem::take(&mut self.first_layer);
        first_layer.clear();
        first_layer.resize(if mixes { 1 } else { self.data.n() }, usize::MAX);
        for &e in &self.pinned {
            let (l, i) = self.entry_place(e);
            let i = if mixes { 0 } else { i };
            first_layer[i] = first_layer[i].min(l);
        }
        for (j, &e) in self.pinned.iter().enumerate() {
            let (dl, dr) = self.one_sided_slopes(e);
            let s0 = self.pin_slopes.get(&e).copied().unwrap_or(0.5 * (dl + dr));
            self.last.evaluated_slopes.push(s0);
            // NaN (not computed at a step's inner stage) stays NaN.
            let gjj = if scale[j].is_nan() {
                f64::NAN
            } else {
                scale[j].max(f64::MIN_POSITIVE)
            };
            // ż_j as a function of its own slope s, the other pinned entries held.
            let zdot = |s: f64| -(mu[j] + (s - s0) * c[j]) / gjj;
            self.last.zdot_left.push(zdot(dl));
            self.last.zdot_right.push(zdot(dr));
            let slope = if c[j] != 0.0 {
                s0 - mu[j] / c[j]
            } else {
                f64::NAN
            };
            self.last.slopes.push(slope);
            if slope.is_finite() {
                // Re-install only for a material change: the slope enters the cotangents c of
                // other pinned entries (their classification), never the field itself.
                let clamped = slope.clamp(dl.min(dr), dl.max(dr));
                if (clamped - s0).abs() > 1e-6 * (dr - dl).abs().max(f64::MIN_POSITIVE) {
                    self.pin_slopes.insert(e, clamped);
                    changed = true;
                    // Only pinned entries upstream of e (in the same sample, unless the
                    // network mixes samples) see its slope.
                    let (le, se) = self.entry_place(e);
                    upstream_affected |= first_layer[if mixes { 0 } else { se }] < le;
                }
            }
        }
        self.first_layer = first_layer;
        self.last.slopes_updated = upstream_affected;
        if changed {
            self.install();
        }
    }

    /// σ'(b⁻) and σ'(b⁺) at the knot of pinned entry e.
    pub(super) fn one_sided_slopes(&self, e: usize) -> (f64, f64) {
        let l = &self.layers[self.layer_of(e)];
        let k = self.pieces[e] as usize;
        let b = l.knots[k];
        let a = match &self.compiled {
            Some(c) => c.slope_of_entry(e),
            None => l.layer.control.lock().as_ref().map_or(0.0, |s| s.slope),
        };
        (
            l.layer.activation.piece_derivative(k, b, a),
            l.layer.activation.piece_derivative(k + 1, b, a),
        )
    }
}
