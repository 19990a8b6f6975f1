//! Which embedded Runge–Kutta pair the kink-aware solve takes each step with: Dormand–Prince
//! 5(4) (`dopri.rs`, six new field evaluations a step) or Bogacki–Shampine 3(2) (`bs3.rs`,
//! three), and each pair's own step-size controller.
//!
//! A step that holds a kink event is cut there and pays for its whole attempted length. While
//! events come faster than either pair's accuracy allows steps, every step is cut and the pair
//! with fewer stages does the same work for half the evaluations; once events are sparse, the
//! fifth-order pair's much longer steps win. The choice is by expected evaluations per unit
//! time: with events arriving at rate λ (taken as independent: a Poisson stream), a step of
//! planned length h advances (1 − e^(−λh))/λ on average, so a pair costing c evaluations a step
//! costs c·λ / (1 − e^(−λh)) per unit time (c/h without events). λ is the reciprocal of a
//! running mean of the time between events, and no smaller than the reciprocal of the time
//! since the last event (a quiet stretch lowers it at once). The step sizes compared are each
//! pair's running mean of its proposals after uncut steps (a stability-limited pair's proposals
//! swing), or its current size before it has one. A solve starts with the fifth-order pair;
//! the cheap one is first tried after the first event (or by a probe, below).
//!
//! Each pair keeps its own step size, set only by its own error estimates with its own order in
//! the controller (h·error^(−1/3) for the 3(2) pair, h·error^(−1/5) for 5(4)); a step cut by an
//! event leaves it unchanged, as the solve always did. A pair not taken keeps its last size,
//! which goes stale (a smooth stretch lets steps grow); so after [`PROBE_AFTER`] uncut steps by
//! one pair the next step after an uncut one is taken by the other, to refresh its size (steps
//! cut by events would not: they leave it unchanged).

use super::dopri::{self, Field, Step, Tolerances};
use super::{bs3, dopri::next_step_size_of_order};
use crate::error::Result;
use serde::{Deserialize, Serialize};

/// Weight of the newest gap in the running mean of the time between events.
const GAP_WEIGHT: f64 = 1.0 / 16.0;

/// Weight of the newest proposal in a pair's running mean step size.
const TYPICAL_WEIGHT: f64 = 1.0 / 8.0;

/// Uncut steps by one pair after which the other is taken once.
pub const PROBE_AFTER: u32 = 40;

/// An embedded pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pair {
    /// Dormand–Prince 5(4).
    DormandPrince,
    /// Bogacki–Shampine 3(2).
    BogackiShampine,
}

impl Pair {
    /// New field evaluations per attempted step (both pairs are FSAL).
    pub fn evaluations(self) -> u64 {
        match self {
            Pair::DormandPrince => 6,
            Pair::BogackiShampine => 3,
        }
    }

    /// The power of h the error estimate scales with.
    fn estimate_order(self) -> u32 {
        match self {
            Pair::DormandPrince => 5,
            Pair::BogackiShampine => bs3::ESTIMATE_ORDER,
        }
    }

    /// The next step size after a step of size h with this error estimate.
    pub fn next_step_size(self, h: f64, error: f64) -> f64 {
        next_step_size_of_order(h, error, self.estimate_order())
    }
}

/// How an attempted step ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Error estimate above tolerance.
    Rejected,
    /// Accepted, and cut at an event inside it.
    Cut,
    /// Accepted whole.
    Uncut,
}

/// Both pairs' stage vectors, kept across steps.
#[derive(Default)]
pub struct Workspaces {
    dopri: dopri::Workspace,
    bs3: bs3::Workspace,
}

/// Attempts one step of `pair` from y with f(y) = `f0` into a kept `st`.
#[allow(clippy::too_many_arguments)]
pub fn step_into(
    pair: Pair,
    field: &mut dyn Field,
    y: &[f64],
    f0: &[f64],
    h: f64,
    tol: Tolerances,
    work: &mut Workspaces,
    st: &mut Step,
) -> Result<()> {
    match pair {
        Pair::DormandPrince => dopri::step_into(field, y, f0, h, tol, &mut work.dopri, st),
        Pair::BogackiShampine => bs3::step_into(field, y, f0, h, tol, &mut work.bs3, st),
    }
}

/// What the choice carries from step to step (kept in a paused solve's snapshot). Zero means
/// "not known yet" for every float, so a snapshot written before it existed loads as a solve
/// that has not used the cheap pair.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PairState {
    /// The Bogacki–Shampine pair's step size (0: not taken yet; it starts from the
    /// Dormand–Prince one).
    pub h_low: f64,
    /// Running means of the step sizes each pair proposed after its uncut steps (0: none yet),
    /// which the choice compares: a stability-limited pair's proposals swing (grow fivefold after
    /// a small error, then get rejected), their mean does not.
    pub typical_low: f64,
    pub typical_high: f64,
    /// Running mean of the time between events (0: no event yet).
    pub mean_gap: f64,
    /// Time of the last event (the start before the first).
    pub last_event: f64,
    /// True when the last step attempted was Bogacki–Shampine's.
    pub last_low: bool,
    /// Accepted uncut steps since the pair of the last step took over.
    pub uncut_run: u32,
    /// Accepted steps taken with the Bogacki–Shampine pair.
    pub low_order_steps: u64,
    /// Field evaluations spent inside steps, accepted or rejected (the rest went to events).
    pub step_evaluations: u64,
}

impl PairState {
    /// The pair for a step at time t when the Dormand–Prince pair would try `h_dp` (always
    /// Dormand–Prince unless `cheap` allows the choice).
    pub fn choose(&self, cheap: bool, t: f64, h_dp: f64) -> Pair {
        if !cheap {
            return Pair::DormandPrince;
        }
        let or = |typical: f64, current: f64| if typical > 0.0 { typical } else { current };
        let h_low = or(self.typical_low, or(self.h_low, h_dp));
        let h_dp = or(self.typical_high, h_dp);
        let gap = self.mean_gap.max(t - self.last_event);
        let rate = if self.mean_gap > 0.0 && gap > 0.0 {
            1.0 / gap
        } else {
            0.0
        };
        let per_time = |pair: Pair, h: f64| {
            let c = pair.evaluations() as f64;
            if rate > 0.0 {
                c * rate / -(-rate * h).exp_m1()
            } else {
                c / h
            }
        };
        let low = if self.uncut_run >= PROBE_AFTER {
            !self.last_low
        } else if self.h_low <= 0.0 && rate == 0.0 {
            // Nothing known about the cheap pair and no event yet: its step would be a guess.
            false
        } else {
            per_time(Pair::BogackiShampine, h_low) < per_time(Pair::DormandPrince, h_dp)
        };
        if low {
            Pair::BogackiShampine
        } else {
            Pair::DormandPrince
        }
    }

    /// Records a step attempted by `pair`, how it ended and the size `next` that pair tries
    /// next, kept here for Bogacki–Shampine and in `h_dp` (the solve's step size) for
    /// Dormand–Prince. Counts the step's evaluations.
    pub fn stepped(&mut self, pair: Pair, outcome: Outcome, next: f64, h_dp: &mut f64) {
        let low = pair == Pair::BogackiShampine;
        self.step_evaluations += pair.evaluations();
        if low {
            self.h_low = next;
        } else {
            *h_dp = next;
        }
        if low != self.last_low {
            self.last_low = low;
            self.uncut_run = 0;
        }
        if outcome != Outcome::Rejected {
            self.low_order_steps += low as u64;
        }
        if outcome == Outcome::Uncut {
            self.uncut_run += 1;
            let typical = if low {
                &mut self.typical_low
            } else {
                &mut self.typical_high
            };
            *typical = if *typical > 0.0 {
                *typical + TYPICAL_WEIGHT * (next - *typical)
            } else {
                next
            };
        }
    }

    /// The step size `pair` tries (for Dormand–Prince the solve's `h_dp`).
    pub fn step_size(&self, pair: Pair, h_dp: f64) -> f64 {
        match pair {
            Pair::BogackiShampine if self.h_low > 0.0 => self.h_low,
            _ => h_dp,
        }
    }

    /// Records an event at time t (after a step cut there).
    pub fn event(&mut self, t: f64) {
        let gap = t - self.last_event;
        self.mean_gap = if self.mean_gap > 0.0 {
            self.mean_gap + GAP_WEIGHT * (gap - self.mean_gap)
        } else {
            gap.max(f64::MIN_POSITIVE)
        };
        self.last_event = t;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without events the choice compares evaluations per unit length: the cheap pair wins
    /// exactly when its step is longer than half the fifth-order one; with its step unknown
    /// (and no event) it is not taken.
    #[test]
    fn without_events_the_longer_step_per_evaluation_wins() {
        assert_eq!(
            PairState::default().choose(true, 1.0, 0.1),
            Pair::DormandPrince
        );
        let s = PairState {
            h_low: 0.049,
            ..Default::default()
        };
        assert_eq!(s.choose(true, 1.0, 0.1), Pair::DormandPrince);
        let s = PairState { h_low: 0.051, ..s };
        assert_eq!(s.choose(true, 1.0, 0.1), Pair::BogackiShampine);
        assert_eq!(s.choose(false, 1.0, 0.1), Pair::DormandPrince);
    }

    /// With events every 0.01 on average, steps of 0.05 and 0.2 are both cut nearly always:
    /// three evaluations beat six. With events every 10, the long step wins.
    #[test]
    fn dense_events_favour_the_cheap_pair() {
        let mut s = PairState {
            h_low: 0.05,
            ..Default::default()
        };
        let mut t = 0.0;
        for _ in 0..200 {
            t += 0.01;
            s.event(t);
        }
        assert!((s.mean_gap - 0.01).abs() < 1e-9);
        assert_eq!(s.choose(true, t, 0.2), Pair::BogackiShampine);
        // By hand: λ = 100, 3·100/(1 − e^−5) ≈ 302 vs 6·100/(1 − e^−20) = 600.
        let sparse = PairState {
            mean_gap: 10.0,
            last_event: t,
            ..s
        };
        // 3·0.1/(1 − e^−0.005) ≈ 60.2 vs 6·0.1/(1 − e^−0.02) ≈ 30.3.
        assert_eq!(sparse.choose(true, t, 0.2), Pair::DormandPrince);
    }

    /// A quiet stretch longer than the mean gap counts at once: the rate falls with it.
    #[test]
    fn a_quiet_stretch_lowers_the_rate() {
        let s = PairState {
            h_low: 0.05,
            mean_gap: 0.01,
            last_event: 0.0,
            ..Default::default()
        };
        assert_eq!(s.choose(true, 0.005, 0.2), Pair::BogackiShampine);
        assert_eq!(s.choose(true, 50.0, 0.2), Pair::DormandPrince);
    }

    /// After PROBE_AFTER uncut steps by the pair the rule prefers, one step goes to the other;
    /// cut steps do not count, and the other pair's step resets the count.
    #[test]
    fn a_long_run_probes_the_other_pair() {
        let mut s = PairState {
            h_low: 0.01,
            ..Default::default()
        };
        let mut h = 0.2;
        for k in 0..PROBE_AFTER {
            assert_eq!(s.choose(true, 0.0, h), Pair::DormandPrince, "step {k}");
            s.stepped(Pair::DormandPrince, Outcome::Uncut, 0.2, &mut h);
            s.stepped(Pair::DormandPrince, Outcome::Cut, 0.2, &mut h);
            s.stepped(Pair::DormandPrince, Outcome::Rejected, 0.2, &mut h);
        }
        assert_eq!(s.choose(true, 0.0, h), Pair::BogackiShampine);
        s.stepped(Pair::BogackiShampine, Outcome::Uncut, 0.011, &mut h);
        assert_eq!(s.choose(true, 0.0, h), Pair::DormandPrince);
        s.stepped(Pair::DormandPrince, Outcome::Uncut, 0.2, &mut h);
        assert_eq!((s.last_low, s.uncut_run), (false, 1));
        // Sizes and counts: 3 × PROBE_AFTER + 1 Dormand–Prince attempts, one Bogacki–Shampine.
        assert_eq!((s.h_low, s.low_order_steps), (0.011, 1));
        assert_eq!(s.step_evaluations, 6 * (3 * PROBE_AFTER as u64 + 1) + 3);
        assert_eq!(s.choose(false, 0.0, 0.2), Pair::DormandPrince);
    }

    /// Each pair's controller uses its own order: a step with error estimate 2⁻³ = 0.125
    /// lets the 3(2) pair grow by 0.9·2 and the 5(4) pair by 0.9·2^(3/5).
    #[test]
    fn controllers_use_their_own_order() {
        let low = Pair::BogackiShampine.next_step_size(1.0, 0.125);
        let high = Pair::DormandPrince.next_step_size(1.0, 0.125);
        assert!((low - 1.8).abs() < 1e-12, "{low}");
        assert!((high - 0.9 * 2f64.powf(0.6)).abs() < 1e-12, "{high}");
    }
}
