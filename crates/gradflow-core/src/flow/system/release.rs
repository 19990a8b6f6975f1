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
//! - ż_e itself: −(μ_e + (d − s_e) c_e) / m_e, with s_e the slope e was evaluated with and c_e
//!   its cotangent (the classification's speeds carry another positive scale, see
//!   `classify.rs`).
//!
//! Where pinned entries of later activation layers share e's sample, their rows run through
//! σ'(z_e): leaving onto slope d moves row j to ∇z_j + β_j ∇z_e, β_j = (d − s_e) ∂z_j/∂σ(z_e)
//! (the chain factor, read from j's stored row on the compiled route). The moved rows and ∇z_e
//! span the same space as before, so the same evaluation still answers, in that basis: with
//! v = M (e_e − β), q = (e_e − β)ᵀ v and μ̃ = μ_e + (d − s_e) c_e − βᵀμ, ż_e = −μ̃ / q,
//! f' = f + ż_e Rᵀ v and μ'_j = μ_j + ż_e v_j (β = 0 gives the formulas above). A release
//! whose ż_e points back (the decision was taken at e's evaluated slope) is refused; the layer
//! path, which keeps no chain factors, evaluates; so do networks that mix samples, and any
//! factorisation that dropped a direction. The cotangents of pinned entries of earlier layers in
//! e's sample run through e too: their normal speeds are then stale, like those after an
//! effective slope moves, and the update marks them so (`LastEval::slopes_updated`): no entry
//! leaves on them before an evaluation. The rest is what a fresh evaluation gives (P's scales
//! 1/‖∇z_j‖² included, for moved rows from G's column e).

use super::*;

impl KinkSystem<'_> {
    /// Whether pinned entries of e's sample sit in (earlier, later) activation layers than e:
    /// the cotangents of the earlier and the rows of the later ones run through σ'(z_e).
    fn pinned_around(&self, e: usize) -> (bool, bool) {
        let (layer, sample) = self.entry_place(e);
        let (mut earlier, mut later) = (false, false);
        for &q in &self.pinned {
            let (lq, sq) = self.entry_place(q);
            if sq == sample {
                earlier |= lq < layer;
                later |= lq > layer;
            }
        }
        (earlier, later)
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
            && match self.compiled.as_ref() {
                Some(c) => c.rows_match(&self.pinned),
                None => self.last.rows.len() == k && self.last.g_inv.len() == k * k,
            };
        let (stale_cotangents, rows_move) = self.pinned_around(e);
        if !evaluated_here
            || self.gdiag.iter().any(|g| !(g.is_finite() && *g > 0.0))
            || self.model.net.mixes_samples()
            || (rows_move && self.compiled.is_none())
        {
            return false;
        }
        let (left, right) = self.one_sided_slopes(e);
        let slope_after = if up { right } else { left };
        let slope_e = self.last.evaluated_slopes[je];
        // β_j = (d − s_e) ∂z_j/∂σ(z_e) for pinned j of later layers in e's sample: their rows
        // become ∇z_j + β_j ∇z_e.
        let mut beta = vec![0.0; k];
        if rows_move {
            let (le, se) = self.entry_place(e);
            let c = self.compiled.as_ref().expect("compiled route");
            for (j, &q) in self.pinned.iter().enumerate() {
                let (lq, sq) = self.entry_place(q);
                if sq == se && lq > le {
                    match c.chain_factor(j, je, slope_e) {
                        Some(b) => beta[j] = (slope_after - slope_e) * b,
                        None => return false,
                    }
                }
            }
        }
        // v = M (e_e − β): with it, the released field and multipliers in the basis of P's
        // moved rows (β = 0: v = M e_e).
        let mut rhs = beta.iter().map(|b| -b).collect::<Vec<_>>();
        rhs[je] = 1.0;
        let mut v = vec![0.0; k];
        match self.compiled.as_mut() {
            Some(c) => c.solve(&rhs, &mut v, crate::batch::par()),
            None => v.copy_from_slice(&self.last.g_inv[je * k..(je + 1) * k]),
        }
        let quadratic: f64 = rhs.iter().zip(&v).map(|(a, b)| a * b).sum();
        let numerator = self.mu[je] + (slope_after - slope_e) * self.cot[je]
            - beta.iter().zip(&self.mu).map(|(b, m)| b * m).sum::<f64>();
        let zdot = -numerator / quadratic;
        // With moving rows, ż_e must take e to the side decided (the decision was taken on
        // speeds at e's evaluated slope, which the moving rows change: else evaluate).
        if !(zdot.is_finite() && quadratic.is_finite() && quadratic > 0.0)
            || (rows_move && (up && zdot <= 0.0 || !up && zdot >= 0.0))
        {
            return false;
        }
        // P's scales 1/‖∇z_j‖², for moved rows from ‖∇z_j + β_j ∇z_e‖² (G's column e).
        let mut column = Vec::new();
        if rows_move {
            let c = self.compiled.as_mut().expect("compiled route");
            let mut unit = vec![0.0; k];
            unit[je] = 1.0;
            let mut row_e = vec![0.0; field.len()];
            c.add_rows_t(&unit, &mut row_e);
            c.rows_dot(&row_e, &mut column);
        }
        let mut mu = Vec::with_capacity(k - 1);
        let mut gdiag = Vec::with_capacity(k - 1);
        let mut cot = Vec::with_capacity(k - 1);
        for j in (0..k).filter(|&j| j != je) {
            let scale = if beta[j] != 0.0 {
                let b = beta[j];
                let norm2 = 1.0 / self.gdiag[j] + 2.0 * b * column[j] + b * b * column[je];
                1.0 / norm2
            } else {
                self.gdiag[j]
            };
            gdiag.push(scale);
            mu.push(self.mu[j] + zdot * v[j]);
            cot.push(self.cot[j]);
        }
        let m = v;
        // f' = f + ż_e Rᵀ m.
        let w: Vec<f64> = m.iter().map(|v| zdot * v).collect();
        match self.compiled.as_mut() {
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
        self.last.slopes_updated |= stale_cotangents;
        self.install();
        (self.cot, self.mu, self.gdiag) = (cot, mu, gdiag);
        true
    }
}
