//! Releasing one pinned entry without a new evaluation.
//!
//! A kink crossing is decided by pinning the arriving entry e tentatively: the evaluation with
//! e pinned gives its normal speeds on both sides, and when both push it through, e leaves. The
//! field after it leaves, −P⊥_P ∇L(θ; s_e = d) with the other pinned set P held and e on its new
//! piece (slope d), follows from that same evaluation. With M = G⁻¹ of the rows of P ∪ {e},
//! m = M e_e and u = P⊥_P ∇z_e (so u/‖u‖² = Rᵀ m and ‖u‖² = 1/m_e):
//!
//! - the field: f' = f + ż_e · Rᵀ m, where ż_e is e's normal speed on the new side (∇L changes
//!   with e's slope only along ∇z_e, which the projection onto P ∪ {e} removes);
//! - the multipliers of P: μ'_j = μ_j + ż_e m_j (the coefficient on ∇z_e vanishes);
//! - the diagonal of P's own inverse Gram matrix: (G_P⁻¹)_jj = M_jj − m_j² / m_e.
//!
//! With the cotangents of P unchanged these give P's normal speeds and effective slopes as a
//! fresh evaluation would. The cotangents and the rows of P do not depend on e's slope when no
//! pinned entry of another activation layer shares e's sample and the network does not mix
//! samples; elsewhere (or when the Gram matrix dropped a direction, or the update cancels) the
//! caller evaluates afresh.

use super::*;

/// Below this share of M_jj, the downdated (G_P⁻¹)_jj has lost too many digits to cancellation.
const CANCELLATION: f64 = 1e-8;

impl KinkSystem<'_> {
    /// True when pinned entry e's slope can reach other pinned rows or cotangents: the network
    /// mixes samples, or a pinned entry of another activation layer shares e's sample.
    fn slope_reaches_other_pins(&self, e: usize) -> bool {
        if self.model.net.mixes_samples() {
            return true;
        }
        let (layer, sample) = self.entry_place(e);
        self.pinned.iter().any(|&q| {
            let (lq, sq) = self.entry_place(q);
            q != e && sq == sample && lq != layer
        })
    }

    /// Releases pinned entry e onto the piece above (`up`) or below its knot, given `field`, the
    /// projected field of the last evaluation (at which e was pinned): `field` becomes the
    /// field with e released and `last` holds the other pinned entries' normal speeds and
    /// slopes (see the module docs). Returns false, changing nothing, where the update does
    /// not apply; the caller then releases e and evaluates.
    pub fn release_exactly(&mut self, e: usize, up: bool, field: &mut [f64]) -> bool {
        let Ok(je) = self.pinned.binary_search(&e) else {
            return false;
        };
        let k = self.pinned.len();
        let evaluated_here = self.mu.len() == k
            && self.cot.len() == k
            && self.gdiag.len() == k
            && self.last.zdot_left.len() == k
            && self.last.evaluated_slopes.len() == k
            && match self.compiled.as_ref().filter(|c| !c.mixes_samples()) {
                Some(c) => c.rows_match(&self.pinned),
                None => self.last.rows.len() == k && self.last.g_inv.len() == k * k,
            };
        if !evaluated_here
            || self.gdiag.iter().any(|g| !(g.is_finite() && *g > 0.0))
            || self.slope_reaches_other_pins(e)
        {
            return false;
        }
        let zdot = if up {
            self.last.zdot_right[je]
        } else {
            self.last.zdot_left[je]
        };
        // m = M e_e.
        let mut m = vec![0.0; k];
        match self.compiled.as_mut().filter(|c| !c.mixes_samples()) {
            Some(c) => {
                let mut unit = vec![0.0; k];
                unit[je] = 1.0;
                c.solve(&unit, &mut m, crate::batch::par());
            }
            None => m.copy_from_slice(&self.last.g_inv[je * k..(je + 1) * k]),
        }
        let me = m[je];
        if !(zdot.is_finite() && me.is_finite() && me > 0.0) {
            return false;
        }
        let mut mu = Vec::with_capacity(k - 1);
        let mut gdiag = Vec::with_capacity(k - 1);
        let mut cot = Vec::with_capacity(k - 1);
        for j in (0..k).filter(|&j| j != je) {
            let g = self.gdiag[j] - m[j] * m[j] / me;
            if g.is_nan() || g <= CANCELLATION * self.gdiag[j] {
                return false;
            }
            gdiag.push(g);
            mu.push(self.mu[j] + zdot * m[j]);
            cot.push(self.cot[j]);
        }
        // f' = f + ż_e Rᵀ m.
        let w: Vec<f64> = m.iter().map(|v| zdot * v).collect();
        match self.compiled.as_mut().filter(|c| !c.mixes_samples()) {
            Some(c) => c.add_rows_t(&w, field),
            None => {
                for (row, &wj) in self.last.rows.iter().zip(&w) {
                    for (o, r) in field.iter_mut().zip(row) {
                        *o += wj * r;
                    }
                }
            }
        }
        // Classify with the slopes the multipliers and cotangents were evaluated with (the
        // evaluation's own classification may have moved them since).
        for (j, &q) in self.pinned.iter().enumerate() {
            self.pin_slopes.insert(q, self.last.evaluated_slopes[j]);
        }
        self.pinned.remove(je);
        self.pin_slopes.remove(&e);
        if up {
            self.pieces[e] += 1;
        }
        self.last.rows.clear();
        self.last.g_inv.clear();
        self.last.field_norm = norm(field);
        self.classify(&cot, &mu, &gdiag);
        self.install();
        (self.cot, self.mu, self.gdiag) = (cot, mu, gdiag);
        true
    }
}
