//! Kink diagnostics: where the trajectory leaves the smooth pieces the proof relies on.
//!
//! Every pre-activation z (one per sample and unit) sits in one piece of σ. Between two
//! evaluations we count the pre-activations whose piece changed (kink crossings), and those that
//! changed on two consecutive steps (chattering: back and forth across z = 0, the discrete trace
//! of a Filippov sliding mode). Per-unit flip counts give the worst offenders for the summary.

use crate::batch::Batch;
use crate::layers::PreActivation;
use crate::model::{Evaluation, Model};
use serde::Serialize;

/// Counts at one step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct KinkStep {
    /// Pre-activations whose piece changed since the previous evaluation.
    pub crossings: usize,
    /// Of those, the ones that had also changed on the step before (chattering).
    pub chattering: usize,
}

/// Totals over a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct KinkSummary {
    /// Number of pre-activations tracked (samples × units, over all activation layers).
    pub tracked: usize,
    pub total_crossings: u64,
    /// Pre-activations that crossed at least once.
    pub units_crossed: usize,
    /// Pre-activations that changed piece more than 100 times.
    pub units_over_100_flips: usize,
    /// The most flips of any single pre-activation.
    pub max_flips: u64,
    /// The longest run of consecutive steps on which one pre-activation flipped.
    pub longest_chatter: u64,
    /// Steps with at least one chattering pre-activation.
    pub steps_with_chattering: u64,
    /// Finished runs of ≥ 3 consecutive flips of one pre-activation (sliding-like intervals).
    #[serde(default)]
    pub chatter_runs: u64,
}

/// Per-pre-activation state between steps (serialisable, so a paused run resumes exactly).
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct KinkTracker {
    pieces: Vec<u16>,
    flipped_last: Vec<bool>,
    flips: Vec<u64>,
    streak: Vec<u64>,
    summary: KinkSummary,
    /// Steps observed so far (the index of the next step).
    #[serde(default)]
    steps: u64,
    /// Chattering runs of at least [`MIN_CHATTER_RUN`] consecutive flips: (entry, first step,
    /// step after the last flip) — GD's discrete trace of a sliding interval. The first 10,000.
    #[serde(default)]
    chatter_runs: Vec<(usize, u64, u64)>,
    #[serde(skip)]
    scratch: Vec<u16>,
}

/// Shortest run of consecutive flips recorded as a chattering (sliding-like) interval.
pub const MIN_CHATTER_RUN: u64 = 3;

impl KinkTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the pieces of every pre-activation of `ev` and returns the changes since the last call.
    pub fn observe(&mut self, model: &Model, x: &Batch, ev: &Evaluation) -> KinkStep {
        self.observe_pieces(|cur| {
            model.visit_pre_activations(x, ev, &mut |pa: PreActivation<'_>| {
                let kinks = pa.activation.kinks();
                cur.extend(
                    pa.z.as_slice()
                        .iter()
                        .map(|&z| kinks.partition_point(|&b| b < z) as u16),
                );
            });
        })
    }

    /// Like [`Self::observe`], with the pieces (index among σ's kink points of every
    /// pre-activation, in the order of `visit_pre_activations`) appended by `fill` to an empty
    /// vector (reused between calls: no allocation in the steady state).
    #[allow(clippy::needless_range_loop)] // five parallel arrays indexed by k
    pub fn observe_pieces(&mut self, fill: impl FnOnce(&mut Vec<u16>)) -> KinkStep {
        let mut cur = std::mem::take(&mut self.scratch);
        cur.clear();
        fill(&mut cur);
        let mut step = KinkStep::default();
        if self.pieces.len() != cur.len() {
            self.flipped_last = vec![false; cur.len()];
            self.flips = vec![0; cur.len()];
            self.streak = vec![0; cur.len()];
            self.summary = KinkSummary {
                tracked: cur.len(),
                ..Default::default()
            };
        } else {
            // Most pre-activations keep their piece: skip blocks where nothing flipped now or on
            // the last step (a streak is non-zero only right after a flip, so it is 0 there).
            const B: usize = 64;
            for b0 in (0..cur.len()).step_by(B) {
                let b1 = (b0 + B).min(cur.len());
                if cur[b0..b1] == self.pieces[b0..b1]
                    && !self.flipped_last[b0..b1].iter().any(|&f| f)
                {
                    continue;
                }
                for k in b0..b1 {
                    let flipped = cur[k] != self.pieces[k];
                    if flipped {
                        step.crossings += 1;
                        self.flips[k] += 1;
                        if self.flipped_last[k] {
                            step.chattering += 1;
                            self.streak[k] += 1;
                        } else {
                            self.streak[k] = 1;
                        }
                        self.summary.longest_chatter =
                            self.summary.longest_chatter.max(self.streak[k]);
                    } else {
                        let run = self.streak[k];
                        if run >= MIN_CHATTER_RUN {
                            self.summary.chatter_runs += 1;
                            if self.chatter_runs.len() < 10_000 {
                                self.chatter_runs.push((k, self.steps - run, self.steps));
                            }
                        }
                        self.streak[k] = 0;
                    }
                    self.flipped_last[k] = flipped;
                }
            }
            self.summary.total_crossings += step.crossings as u64;
            self.summary.steps_with_chattering += (step.chattering > 0) as u64;
        }
        self.scratch = std::mem::replace(&mut self.pieces, cur);
        self.steps += 1;
        step
    }

    /// The recorded chattering runs (entry, first step, end step), plus the runs still going
    /// (ending at the current step).
    pub fn chatter_runs(&self) -> Vec<(usize, u64, u64)> {
        let mut out = self.chatter_runs.clone();
        for (k, &run) in self.streak.iter().enumerate() {
            if run >= MIN_CHATTER_RUN && out.len() < 10_000 {
                out.push((k, self.steps - run, self.steps));
            }
        }
        out
    }

    pub fn summary(&self) -> KinkSummary {
        let mut s = self.summary.clone();
        s.units_crossed = self.flips.iter().filter(|&&f| f > 0).count();
        s.units_over_100_flips = self.flips.iter().filter(|&&f| f > 100).count();
        s.max_flips = self.flips.iter().copied().max().unwrap_or(0);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Entry 1 flips on steps 1–4 and then stays (one run of four flips: steps [1, 5)); entry 0
    /// flips twice in a row only (too short); entry 2 flips on steps 3–5 and is still going.
    #[test]
    fn chatter_runs_by_hand() {
        let seq: [[u16; 3]; 6] = [
            [0, 0, 0],
            [1, 1, 0],
            [0, 0, 0],
            [0, 1, 1],
            [0, 0, 0],
            [0, 0, 1],
        ];
        let mut tr = KinkTracker::new();
        for s in seq {
            tr.observe_pieces(|cur| cur.extend_from_slice(&s));
        }
        let mut tr2 = tr.clone();
        tr2.observe_pieces(|cur| cur.extend_from_slice(&[0, 0, 1]));
        // After six steps: entry 1's run [1, 5) is finished, entry 2's [3, 6) is still going.
        assert_eq!(tr.chatter_runs(), vec![(1, 1, 5), (2, 3, 6)]);
        assert_eq!(tr.summary().chatter_runs, 1);
        // One more step without a flip ends entry 2's run at 6.
        assert_eq!(tr2.chatter_runs(), vec![(1, 1, 5), (2, 3, 6)]);
        assert_eq!(tr2.summary().chatter_runs, 2);
        assert_eq!(tr.summary().longest_chatter, 4);
    }
}
