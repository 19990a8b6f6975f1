//! A sliding point held still: the pinned entries' effective slopes settled to their fixed point,
//! and the Jacobian J = ∂u/∂θ of the network as the installed pattern evaluates it (frozen
//! pieces, pinned entries linear through their kinks with those slopes). That J is the
//! Filippov field's: f = −∇L(θ; s_eff) = −J_effᵀ ∇_u L, so its kernel J_eff J_effᵀ is the one
//! that sets dL/dt at the sliding point (used by [`crate::flow::filippov_ntk`]).

use super::*;
use faer::Mat;

/// How close to a knot, relative to its layer's largest |z|, a free entry must be to be tested
/// for dormancy ([`KinkSystem::with_dormant`]).
pub const DORMANT_TOL: f64 = 1e-10;

impl KinkSystem<'_> {
    /// Holds `sliding` entries (global entry, piece left of its knot) on their kinks at θ, the
    /// others on the pieces θ puts them, and evaluates the field until the effective slopes
    /// settle (each pinned slope enters only the cotangents of pinned entries upstream of it, so
    /// this takes at most one evaluation per activation layer, plus one to confirm). Returns the
    /// slopes in `pinned` order; they are also the slopes installed.
    pub fn hold(&mut self, theta: &[f64], sliding: &[(usize, u16)]) -> Result<Vec<f64>> {
        let mut held: Vec<(usize, u16)> = sliding.to_vec();
        held.sort_unstable();
        held.dedup_by_key(|h| h.0);
        for &(e, k) in &held {
            if e >= self.pieces.len() || (k as usize) + 1 >= self.pieces_of(e) {
                return Err(Error::Invalid(format!(
                    "sliding entry {e} (left piece {k}) is not an entry next to a kink of this \
                     network"
                )));
            }
            self.pieces[e] = k;
        }
        self.pinned = held.iter().map(|h| h.0).collect();
        self.pin_slopes.clear();
        self.install();
        let mut out = vec![0.0; self.model.p()];
        for _ in 0..=self.layers.len() + 1 {
            // The slopes this evaluation runs with (it may re-install clamped ones itself).
            let used: Vec<(f64, f64)> = self
                .pinned
                .iter()
                .map(|e| {
                    let (dl, dr) = self.one_sided_slopes(*e);
                    let s0 = self.pin_slopes.get(e).copied().unwrap_or(0.5 * (dl + dr));
                    (s0, (dr - dl).abs())
                })
                .collect();
            self.evaluate(theta, &mut out)?;
            let slopes = self.last.slopes.clone();
            if let Some(j) = slopes.iter().position(|s| !s.is_finite()) {
                return Err(Error::Invalid(format!(
                    "sliding entry {}: its effective slope is undefined (the cotangent at its \
                     output is 0)",
                    self.pinned[j]
                )));
            }
            let settled = used
                .iter()
                .zip(&slopes)
                .all(|(&(s0, jump), &s)| (s - s0).abs() <= 1e-11 * jump.max(s.abs()));
            self.pin_slopes = self
                .pinned
                .iter()
                .copied()
                .zip(slopes.iter().copied())
                .collect();
            self.install();
            if settled {
                return Ok(slopes);
            }
        }
        Err(Error::Invalid(
            "the sliding entries' effective slopes did not settle".into(),
        ))
    }

    /// `sliding` plus the *dormant* entries at θ, as [`Self::hold`] takes them: free entries on
    /// a kink (within [`DORMANT_TOL`] of their layer's largest |z|) that their own piece moves at
    /// zero speed, so the flow stays on the kink without the solver pinning them (sliding needs
    /// both sides to push towards it strictly). A ReLU unit that dies exactly on its kink is one:
    /// its dead side has ż = 0. Held, such an entry's effective slope is that side's σ', so J_eff
    /// is the Jacobian of the field the flow follows; an entry merely crossing its kink at θ
    /// takes a slope strictly between the sides and stays free (on the piece θ puts it).
    /// Call on a fresh system (its pre-activations are θ's).
    pub fn with_dormant(
        &mut self,
        theta: &[f64],
        sliding: &[(usize, u16)],
    ) -> Result<Vec<(usize, u16)>> {
        let mut held: Vec<usize> = sliding.iter().map(|h| h.0).collect();
        held.sort_unstable();
        let mut candidates = Vec::new();
        for l in &self.layers {
            let z = &self.last.z[l.offset..l.offset + l.len];
            let scale = z.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            for (j, &zj) in z.iter().enumerate() {
                let e = l.offset + j;
                let near = l
                    .knots
                    .iter()
                    .position(|&b| (zj - b).abs() <= DORMANT_TOL * scale.max(b.abs()));
                if let (Some(k), Err(_)) = (near, held.binary_search(&e)) {
                    candidates.push((e, k as u16));
                }
            }
        }
        let pieces = self.pieces.clone();
        while !candidates.is_empty() {
            // Entries dropped in an earlier round go back to the pieces θ puts them on.
            self.pieces.copy_from_slice(&pieces);
            let mut all = sliding.to_vec();
            all.extend_from_slice(&candidates);
            let Ok(slopes) = self.hold(theta, &all) else {
                break;
            };
            let one_sided = |sys: &Self, e: usize| {
                let j = sys.pinned.binary_search(&e).expect("held");
                let (dl, dr) = sys.one_sided_slopes(e);
                let tol = 1e-9 * (dr - dl).abs().max(f64::MIN_POSITIVE);
                (slopes[j] - dl).abs() <= tol || (slopes[j] - dr).abs() <= tol
            };
            let dormant: Vec<(usize, u16)> = candidates
                .iter()
                .copied()
                .filter(|&(e, _)| one_sided(self, e))
                .collect();
            if dormant.len() == candidates.len() {
                all.sort_unstable();
                return Ok(all);
            }
            candidates = dormant;
        }
        // No dormant entry: the pieces θ puts them on, and the sliding entries alone.
        self.pieces.copy_from_slice(&pieces);
        Ok(sliding.to_vec())
    }

    /// J = ∂u/∂θ (nm × p, row i·m + a) under the installed pattern: per sample one one-sample
    /// forward pass and m reverse passes (networks that mix samples: whole-batch passes), through
    /// the layers' controls (installed here also when the compiled route evaluates the field).
    /// The layers' controls are left installed for the whole batch, so that ordinary passes (the
    /// Jacobian's rounding bound) see the same pattern until the system is dropped.
    pub fn pattern_jacobian(&mut self, theta: &[f64]) -> Mat<f64> {
        let compiled = self.compiled.take();
        self.install();
        self.compiled = compiled;
        let (n, m, p) = (self.data.n(), self.model.out_dim(), self.model.p());
        let mut j = Mat::<f64>::zeros(n * m, p);
        let per_sample = !self.model.net.mixes_samples();
        let set = |layers: &[Controlled], columns: Option<Vec<usize>>| {
            for l in layers {
                let mut g = l.layer.control.lock();
                let st = g.as_mut().expect("control installed");
                st.columns = columns.clone();
                st.record_z = false;
                st.seeds.clear();
            }
        };
        let mut row = vec![0.0; p];
        let groups: Vec<Option<usize>> = if per_sample {
            (0..n).map(Some).collect()
        } else {
            vec![None]
        };
        for group in groups {
            let (xs, samples): (Batch, Vec<usize>) = match group {
                Some(i) => {
                    set(&self.layers, Some(vec![i]));
                    let x = self.data.x.col(i).to_vec();
                    (Batch::from_vec(self.data.x.features(), 1, x), vec![i])
                }
                None => {
                    set(&self.layers, None);
                    (self.data.x.clone(), (0..n).collect())
                }
            };
            let ev = self.model.evaluate(theta, &xs);
            let mut w = Batch::zeros(m, xs.n());
            for (c, &i) in samples.iter().enumerate() {
                for a in 0..m {
                    w.col_mut(c)[a] = 1.0;
                    row.iter_mut().for_each(|v| *v = 0.0);
                    self.model.vjp(theta, &xs, &ev, &w, &mut row);
                    w.col_mut(c)[a] = 0.0;
                    for (k, &v) in row.iter().enumerate() {
                        j[(i * m + a, k)] = v;
                    }
                }
            }
        }
        set(&self.layers, None);
        for l in &self.layers {
            let mut g = l.layer.control.lock();
            let st = g.as_mut().expect("control installed");
            st.record_z = true;
            st.calls = 0;
        }
        j
    }
}
