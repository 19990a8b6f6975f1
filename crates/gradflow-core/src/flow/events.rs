//! The event logic of the kink-aware flow solve: which pre-activations left their piece or
//! stopped being pushed into their kink (event functions), where inside a step that happened
//! (bracketing on the continuous extension), and how the pattern switches there (crossing,
//! touch, sliding start, release). See `solve.rs` for the whole algorithm.

use super::dopri::{Step, Tolerances};
use super::solve::{EventSummary, FlowOptions, SlidingInterval};
use super::system::KinkSystem;
use crate::error::Result;
use std::collections::BTreeMap;

/// Direction an entry was moving when it reached its kink.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Dir {
    Up,
    Down,
}

pub(super) struct Solver<'s, 'a> {
    pub(super) sys: &'s mut KinkSystem<'a>,
    pub(super) opts: &'s FlowOptions,
    pub(super) tol: Tolerances,
    /// Entries just switched whose z may sit a rounding error on the wrong side.
    pub(super) grace: Vec<bool>,
    /// The entries with `grace` set (and possibly some cleared since: read `grace`).
    pub(super) graced: Vec<usize>,
    /// Per activation layer, the (lower, upper) knot of each piece (±∞ at the ends).
    piece_bounds: Vec<Vec<(f64, f64)>>,
    pub(super) slide_start: BTreeMap<usize, f64>,
    pub(super) events: EventSummary,
    pub(super) since: (u64, u64, u64),
    pub(super) entries_slid: Vec<bool>,
}

/// The distance of z inside piece k of the pieces cut by `knots` (negative: outside).
#[inline(always)]
pub(super) fn inside(knots: &[f64], k: usize, z: f64) -> f64 {
    let lo = if k == 0 {
        f64::NEG_INFINITY
    } else {
        knots[k - 1]
    };
    let hi = knots.get(k).copied().unwrap_or(f64::INFINITY);
    (z - lo).min(hi - z)
}

/// Event-function tolerance for entries in grace.
pub(super) const GRACE: f64 = 1e-9;

/// Width, as a share of the step, to which a release alone is bracketed (see
/// [`Solver::locate`]).
const RELEASE_BRACKET: f64 = 1e-6;

/// Offset, relative to (1 + max|θ|), of the central difference that checks departures.
const DEPARTURE_OFFSET: f64 = 1e-6;

/// Least speed away from its kink, as a share of the largest, for a departure to count as clear.
const DEPARTURE_MARGIN: f64 = 1e-3;

/// Least ratio of a leaving tentative pin's smaller to larger normal speed for deciding it
/// without re-evaluating the effective slopes.
const OWN_SPEEDS_MARGIN: f64 = 0.05;

impl<'s, 'a> Solver<'s, 'a> {
    pub(super) fn new(sys: &'s mut KinkSystem<'a>, opts: &'s FlowOptions) -> Self {
        let n = sys.entries();
        let piece_bounds = sys
            .layer_ranges()
            .map(|(_, _, knots)| {
                (0..=knots.len())
                    .map(|k| {
                        let lo = if k == 0 {
                            f64::NEG_INFINITY
                        } else {
                            knots[k - 1]
                        };
                        (lo, knots.get(k).copied().unwrap_or(f64::INFINITY))
                    })
                    .collect()
            })
            .collect();
        Self {
            sys,
            opts,
            tol: Tolerances {
                rtol: opts.rtol,
                atol: opts.atol,
            },
            grace: vec![false; n],
            graced: Vec::new(),
            piece_bounds,
            slide_start: BTreeMap::new(),
            events: EventSummary {
                tracked: n,
                ..Default::default()
            },
            since: (0, 0, 0),
            entries_slid: vec![false; n],
        }
    }

    /// Event values at the last evaluation: (entry, φ) for every entry with φ < 0 (unpinned:
    /// distance inside its piece; pinned: min(ż⁻, −ż⁺)). Clears grace where φ > 0.
    pub(super) fn violations(&mut self, include_pinned: bool) -> Vec<(usize, f64)> {
        let mut out = Vec::new();
        let sys = &*self.sys;
        let is_pinned = |e: usize| sys.pinned.binary_search(&e).is_ok();
        // One branch-free pass over every entry; the few with φ ≤ 0 are sorted out after.
        for ((start, end, _), bounds) in sys.layer_ranges().zip(&self.piece_bounds) {
            let z = &sys.last.z[start..end];
            let pieces = &sys.pieces[start..end];
            for (i, (&zi, &k)) in z.iter().zip(pieces).enumerate() {
                let (lo, hi) = bounds[k as usize];
                let phi = (zi - lo).min(hi - zi);
                if phi <= 0.0 {
                    let e = start + i;
                    if phi < 0.0 && !(self.grace[e] && phi > -GRACE) && !is_pinned(e) {
                        out.push((e, phi));
                    }
                }
            }
        }
        // Grace ends where an (unpinned) entry is strictly inside its piece again.
        let grace = &mut self.grace;
        self.graced.retain(|&e| {
            let inside_again = grace[e] && !is_pinned(e) && sys.inside(e, sys.last.z[e]) > 0.0;
            if inside_again {
                grace[e] = false;
            }
            grace[e]
        });
        if include_pinned {
            for (j, &e) in self.sys.pinned.iter().enumerate() {
                let phi = self.sys.last.zdot_left[j].min(-self.sys.last.zdot_right[j]);
                if phi.is_nan() || phi < 0.0 {
                    out.push((e, if phi.is_nan() { -1.0 } else { phi }));
                }
            }
        }
        out
    }

    /// φ of entry e at the last evaluation (pinned entries by their normal speeds).
    fn phi(&self, e: usize) -> f64 {
        match self.sys.pinned.binary_search(&e) {
            Ok(j) => self.sys.last.zdot_left[j].min(-self.sys.last.zdot_right[j]),
            Err(_) => self.sys.inside(e, self.sys.last.z[e]),
        }
    }

    /// Brackets the first event inside the accepted step `st` (from s = 0 to s = 1, where the
    /// events `viol` hold). Returns s and θ(s) just after the event (all violators at s).
    pub(super) fn locate(
        &mut self,
        st: &Step,
        mut viol: Vec<(usize, f64)>,
        start_phi: &BTreeMap<usize, f64>,
    ) -> Result<(f64, Vec<f64>)> {
        let (mut a, mut b) = (0.0f64, 1.0f64);
        let mut phi_a: BTreeMap<usize, f64> = viol
            .iter()
            .map(|&(e, _)| (e, *start_phi.get(&e).unwrap_or(&1.0)))
            .collect();
        let mut theta_b = st.y_new.clone();
        let mut buf = vec![0.0; st.y_new.len()];
        let mut field = vec![0.0; st.y_new.len()];
        let mut shrink_fails = 0;
        // The step's end θ₁ was the last point evaluated.
        let mut last_at_b = true;
        for _ in 0..80 {
            let width = b - a;
            let small_phi = viol.iter().all(|&(_, p)| p.abs() < 1e-12);
            // The field is continuous where a pinned entry's sliding ends (its effective slope
            // reaches a one-sided slope there), so an error δt in a release time moves θ by
            // O(δt²): a release alone is bracketed to a share of the step, a crossing or an
            // arrival (where the field jumps) to rounding.
            let releases_only = viol
                .iter()
                .all(|(e, _)| self.sys.pinned.binary_search(e).is_ok());
            let t_tol = if releases_only {
                RELEASE_BRACKET
            } else {
                1e-13 * (1.0 + st.h) / st.h
            };
            if width < t_tol || small_phi {
                break;
            }
            // Secant estimate of the earliest root among the violators; bisect when stalling.
            let mut s = b;
            for &(e, pb) in &viol {
                let pa = *phi_a.get(&e).unwrap_or(&1.0);
                let est = if pa > pb {
                    a + width * pa / (pa - pb)
                } else {
                    a + 0.5 * width
                };
                s = s.min(est);
            }
            if shrink_fails >= 2 {
                s = a + 0.5 * width;
                shrink_fails = 0;
            }
            s = s.clamp(a + 1e-3 * width, b - 1e-3 * width);
            st.interpolate(s, &mut buf);
            let use_field = viol
                .iter()
                .any(|(e, _)| self.sys.pinned.binary_search(e).is_ok());
            if use_field {
                self.sys.evaluate(&buf, &mut field)?;
            } else {
                self.sys.forward_z(&buf)?;
            }
            let now = self.violations(use_field);
            last_at_b = !now.is_empty();
            if now.is_empty() {
                for (e, p) in phi_a.iter_mut() {
                    *p = self.phi(*e);
                }
                a = s;
            } else {
                for &(e, _) in &now {
                    phi_a.entry(e).or_insert(1.0);
                }
                viol = now;
                b = s;
                theta_b.copy_from_slice(&buf);
            }
            if b - a > 0.5 * width {
                shrink_fails += 1;
            } else {
                shrink_fails = 0;
            }
        }
        // Leave the pre-activations at θ_b in `last` (the switch reads them there).
        if !last_at_b {
            self.sys.forward_z(&theta_b)?;
        }
        Ok((b, theta_b))
    }

    /// Switches the pattern at an event point θ (the system was just evaluated there). Returns
    /// the field at θ under the new pattern.
    pub(super) fn switch(&mut self, theta: &mut [f64], t: f64) -> Result<Vec<f64>> {
        let p = theta.len();
        // Arrivals only: pinned entries are classified by `settle`.
        let viol = self.violations(false);
        let mut fresh: BTreeMap<usize, Dir> = BTreeMap::new();
        for &(e, _) in &viol {
            if self.sys.pinned.binary_search(&e).is_ok() {
                continue;
            }
            let z = self.sys.last.z[e];
            let k = self.sys.pieces[e] as usize;
            // Above the piece when z exceeds its upper knot.
            let up = k + 1 < self.sys.pieces_of(e) && self.sys.knot_of_piece(e, k) < z;
            if up {
                fresh.insert(e, Dir::Up);
            } else {
                self.sys.pieces[e] = (k - 1) as u16;
                fresh.insert(e, Dir::Down);
            }
            let pos = self.sys.pinned.binary_search(&e).unwrap_err();
            self.sys.pinned.insert(pos, e);
        }
        self.sys.refresh();
        let arrivals = fresh.clone();
        let mut f = vec![0.0; p];
        let mut departed = self.settle(theta, &mut fresh, &mut f)?;
        // Several entries left at once: their decisions were taken in some order, each with the
        // others' constraints in place. Unless every one of them moves away from its kink under
        // the final field (then the pattern is consistent as it stands), re-pin them all and
        // decide again with the rest settled; this removes release-and-re-pin pairs a hair
        // apart (an active-set consistency check).
        if departed.len() >= 2 && !self.departures_consistent(theta, &departed, &f)? {
            let mut again: BTreeMap<usize, Dir> = BTreeMap::new();
            for &(e, up) in &departed {
                if up {
                    self.sys.pieces[e] -= 1;
                }
                again.insert(e, if up { Dir::Up } else { Dir::Down });
                let pos = self.sys.pinned.binary_search(&e).unwrap_err();
                self.sys.pinned.insert(pos, e);
            }
            self.sys.refresh();
            departed = self.settle(theta, &mut again, &mut f)?;
        }
        for (e, up) in departed {
            if !self.grace[e] {
                self.grace[e] = true;
                self.graced.push(e);
            }
            match arrivals.get(&e) {
                Some(d) if (*d == Dir::Up) == up => {
                    self.events.crossings += 1;
                    self.since.0 += 1;
                }
                Some(_) => self.events.touches += 1,
                None => {
                    self.events.releases += 1;
                    self.since.2 += 1;
                    if let Some(t0) = self.slide_start.remove(&e) {
                        self.close_interval(e, t0, t);
                    }
                }
            }
        }
        for &e in arrivals.keys() {
            if self.sys.pinned.binary_search(&e).is_ok() {
                self.events.slides += 1;
                self.since.1 += 1;
                self.slide_start.insert(e, t);
                if !self.entries_slid[e] {
                    self.entries_slid[e] = true;
                    self.events.entries_slid += 1;
                }
            }
        }
        self.events.max_pinned = self.events.max_pinned.max(self.sys.pinned.len());
        self.sys.project_onto_knots(theta);
        Ok(f)
    }

    /// True when every departed entry (entry, went up) moves off its kink into the piece it took,
    /// under the field `f` at θ, by a clear margin. Its speed ż = ∇z·f comes from a central
    /// difference of two forward passes on the frozen pattern (polynomial in the offset, so the
    /// difference is exact to O(ε²)); `last` is left as it was.
    fn departures_consistent(
        &mut self,
        theta: &[f64],
        departed: &[(usize, bool)],
        f: &[f64],
    ) -> Result<bool> {
        let f_max = f.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let theta_max = theta.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        if f_max.is_nan() || f_max <= 0.0 {
            return Ok(false);
        }
        let eps = DEPARTURE_OFFSET * (1.0 + theta_max) / f_max;
        let (z, loss) = (self.sys.last.z.clone(), self.sys.last.loss);
        let mut at = theta.to_vec();
        let mut speeds = vec![0.0; departed.len()];
        for sign in [1.0, -1.0] {
            for ((a, t), v) in at.iter_mut().zip(theta).zip(f) {
                *a = t + sign * eps * v;
            }
            self.sys.forward_z(&at)?;
            for (s, &(e, _)) in speeds.iter_mut().zip(departed) {
                *s += sign * self.sys.last.z[e] / (2.0 * eps);
            }
        }
        self.sys.last.z = z;
        self.sys.last.loss = loss;
        let scale = speeds.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        Ok(speeds
            .iter()
            .zip(departed)
            .all(|(&s, &(_, up))| (if up { s } else { -s }) > DEPARTURE_MARGIN * scale))
    }

    /// Releases pinned entries that are not pushed into their kink from both sides, one at a
    /// time (the most violated first; entries of `fresh` — tentative pins — before the others,
    /// since their constraint distorts the others' normal speeds), re-evaluating after each,
    /// until every pinned entry slides. Returns the departures (entry, went up) in order; `f`
    /// holds the field under the final pattern.
    fn settle(
        &mut self,
        theta: &mut [f64],
        fresh: &mut BTreeMap<usize, Dir>,
        f: &mut [f64],
    ) -> Result<Vec<(usize, bool)>> {
        let mut departed = Vec::new();
        // True when `last` and `f` already hold the evaluation under the current pattern.
        let mut evaluated = false;
        for _ in 0..64 {
            if !evaluated {
                self.sys.evaluate(theta, f)?;
            }
            let mut leaving = self.leaving(fresh);
            // The first evaluation after the pinned set changed finds the effective slopes; the
            // classification of the entries upstream of a changed slope uses cotangents
            // evaluated with them (a second evaluation) before any entry leaves on it. A
            // single tentative pin that clearly leaves is decided without it (see
            // [`Self::decided_by_own_speeds`]). When no entry leaves, the pattern stands
            // without it: the field does not depend on the slopes, the new slopes are
            // installed, and the next step's end classifies every pinned entry with them (a
            // departure missed here is located there, from this point on).
            if self.sys.last.slopes_updated
                && !leaving.is_empty()
                && !self.decided_by_own_speeds(fresh, &leaving)
            {
                self.sys.evaluate(theta, f)?;
                leaving = self.leaving(fresh);
            }
            if leaving.is_empty() {
                break;
            }
            let any_fresh = leaving.iter().any(|l| l.2);
            let (e, up, _) = *leaving
                .iter()
                .filter(|l| l.2 || !any_fresh)
                .min_by(|a, b| self.phi(a.0).total_cmp(&self.phi(b.0)))
                .expect("non-empty");
            // Put every pinned entry (the leaving one included) exactly on its kink first, so
            // it starts on the kink, not a rounding error on the wrong side.
            self.sys.project_onto_knots(theta);
            fresh.remove(&e);
            departed.push((e, up));
            // The field after it leaves follows from this evaluation where e's slope reaches no
            // other pinned entry (the others are classified again from it).
            evaluated = self.sys.release_exactly(e, up, f);
            if self.sys.pinned.binary_search(&e).is_ok() {
                let pos = self.sys.pinned.binary_search(&e).expect("pinned");
                self.sys.pinned.remove(pos);
                self.sys.pin_slopes.remove(&e);
                if up {
                    self.sys.pieces[e] += 1;
                }
                self.sys.refresh();
            }
        }
        Ok(departed)
    }

    /// The pinned entries that are not pushed into their kink from both sides at the last
    /// evaluation: (entry, leaves upwards, is a tentative pin of `fresh`).
    fn leaving(&self, fresh: &BTreeMap<usize, Dir>) -> Vec<(usize, bool, bool)> {
        let mut leaving = Vec::new();
        for (j, &e) in self.sys.pinned.iter().enumerate() {
            let (l, r) = (self.sys.last.zdot_left[j], self.sys.last.zdot_right[j]);
            if !(l > 0.0 && r < 0.0) {
                let up = if l >= 0.0 && r >= 0.0 {
                    true
                } else if l <= 0.0 && r <= 0.0 {
                    false
                } else {
                    match fresh.get(&e) {
                        Some(d) => *d == Dir::Up,
                        None => r > -l,
                    }
                };
                leaving.push((e, up, fresh.contains_key(&e)));
            }
        }
        leaving
    }

    /// The leaving entries of the last evaluation include a single tentative pin whose normal
    /// speeds on both sides have one sign and similar sizes. Its speeds are linear in its own
    /// slope, so the decision needs no re-evaluation with the effective slopes; where a speed
    /// is near zero (a graze) the slopes of coupled pinned entries can flip it, and the caller
    /// re-evaluates. (Measured on the quick dnn w = 48 run: this margin changed no decision.)
    fn decided_by_own_speeds(
        &self,
        fresh: &BTreeMap<usize, Dir>,
        leaving: &[(usize, bool, bool)],
    ) -> bool {
        let [(e, _, true)] = leaving.iter().filter(|l| l.2).copied().collect::<Vec<_>>()[..] else {
            return false;
        };
        let j = match self.sys.pinned.binary_search(&e) {
            Ok(j) if fresh.len() == 1 => j,
            _ => return false,
        };
        let (l, r) = (self.sys.last.zdot_left[j], self.sys.last.zdot_right[j]);
        l * r > 0.0 && l.abs().min(r.abs()) > OWN_SPEEDS_MARGIN * l.abs().max(r.abs())
    }

    pub(super) fn close_interval(&mut self, e: usize, t0: f64, t1: f64) {
        let d = t1 - t0;
        self.events.sliding_time += d;
        self.events.longest_slide = self.events.longest_slide.max(d);
        if self.events.intervals.len() < 10_000 {
            self.events.intervals.push(SlidingInterval {
                entry: e,
                start: t0,
                end: t1,
            });
        }
    }
}
