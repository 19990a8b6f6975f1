//! Kink diagnostics: where the trajectory leaves the smooth pieces the proof relies on.
//!
//! Every pre-activation z (one per sample and unit) sits in one piece of σ. Between two
//! evaluations we count the pre-activations whose piece changed (kink crossings), and those that
//! changed on two consecutive steps (chattering: back and forth across z = 0, the discrete trace
//! of a Filippov sliding mode). Per-unit flip counts give the worst offenders for the summary.

use crate::batch::Batch;
use crate::layers::PreActivation;
use crate::model::{Evaluation, Model};
use rayon::prelude::*;
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

/// Entries per parallel chunk of [`KinkTracker::observe_pieces`].
const CHUNK: usize = 1 << 15;

/// One chunk's share of a step.
struct ChunkTally {
    crossings: usize,
    chattering: usize,
    longest: u64,
    /// Finished chattering runs (entry, first step, end step), entries increasing.
    runs: Vec<(usize, u64, u64)>,
}

/// Compares one chunk of entries (the first is entry `base`) with the previous step's pieces and
/// updates their flip state; `steps` is the index of this step.
#[allow(clippy::needless_range_loop)] // five parallel arrays indexed by k
fn compare_chunk(
    base: usize,
    steps: u64,
    cur: &[u16],
    old: &[u16],
    flipped_last: &mut [bool],
    flips: &mut [u64],
    streak: &mut [u64],
) -> ChunkTally {
    let mut t = ChunkTally {
        crossings: 0,
        chattering: 0,
        longest: 0,
        runs: Vec::new(),
    };
    // Most pre-activations keep their piece: skip blocks where nothing flipped now or on the
    // last step, and within a block every entry that did neither — a streak is non-zero only
    // right after a flip, so there is nothing to update.
    const B: usize = 64;
    for b0 in (0..cur.len()).step_by(B) {
        let b1 = (b0 + B).min(cur.len());
        if cur[b0..b1] == old[b0..b1] && !flipped_last[b0..b1].iter().any(|&f| f) {
            continue;
        }
        for k in b0..b1 {
            let flipped = cur[k] != old[k];
            if !flipped && !flipped_last[k] {
                continue;
            }
            if flipped {
                t.crossings += 1;
                flips[k] += 1;
                if flipped_last[k] {
                    t.chattering += 1;
                    streak[k] += 1;
                } else {
                    streak[k] = 1;
                }
                t.longest = t.longest.max(streak[k]);
            } else {
                let run = streak[k];
                if run >= MIN_CHATTER_RUN {
                    t.runs.push((base + k, steps - run, steps));
                }
                streak[k] = 0;
            }
            flipped_last[k] = flipped;
        }
    }
    t
}

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
    /// vector (reused between calls).
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
            // Chunks of the entries in parallel, each with its own tallies, merged in chunk
            // order: the same counts and the same run list (entries in increasing order) as one
            // sequential pass, whatever the thread count.
            let steps = self.steps;
            let tallies: Vec<ChunkTally> = cur
                .par_chunks(CHUNK)
                .zip(self.pieces.par_chunks(CHUNK))
                .zip(self.flipped_last.par_chunks_mut(CHUNK))
                .zip(self.flips.par_chunks_mut(CHUNK))
                .zip(self.streak.par_chunks_mut(CHUNK))
                .enumerate()
                .map(|(c, ((((cur, old), last), flips), streak))| {
                    compare_chunk(c * CHUNK, steps, cur, old, last, flips, streak)
                })
                .collect();
            for t in tallies {
                step.crossings += t.crossings;
                step.chattering += t.chattering;
                self.summary.longest_chatter = self.summary.longest_chatter.max(t.longest);
                self.summary.chatter_runs += t.runs.len() as u64;
                let room = 10_000usize.saturating_sub(self.chatter_runs.len());
                self.chatter_runs.extend(t.runs.into_iter().take(room));
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

    /// Several chunks (3 × CHUNK + a remainder): the parallel pass against a plain sequential
    /// reference written here, on random piece sequences with frequent back-and-forth flips.
    #[test]
    fn chunked_pass_matches_a_sequential_reference() {
        use rand::RngExt;
        let n = 3 * CHUNK + 12_345;
        let mut rng = crate::rng::stream(5, crate::rng::Stream::Init);
        let mut tracker = KinkTracker::new();
        // Reference state.
        let (mut old, mut last, mut flips, mut streak) =
            (vec![0u16; n], vec![false; n], vec![0u64; n], vec![0u64; n]);
        let (mut runs, mut run_count, mut longest) = (Vec::new(), 0u64, 0u64);
        let mut cur = vec![0u16; n];
        for step in 0..12u64 {
            for (k, c) in cur.iter_mut().enumerate() {
                // Entries in a "hot" band flip often (runs ≥ 3 appear), the rest rarely.
                let p = if (k / 1000) % 7 == 0 { 0.7 } else { 0.001 };
                if rng.random::<f64>() < p {
                    *c = 1 - *c;
                }
            }
            let got = tracker.observe_pieces(|v| v.extend_from_slice(&cur));
            let (mut crossings, mut chattering) = (0usize, 0usize);
            if step > 0 {
                for k in 0..n {
                    let f = cur[k] != old[k];
                    if f {
                        crossings += 1;
                        flips[k] += 1;
                        if last[k] {
                            chattering += 1;
                            streak[k] += 1;
                        } else {
                            streak[k] = 1;
                        }
                        longest = longest.max(streak[k]);
                    } else {
                        if streak[k] >= MIN_CHATTER_RUN {
                            run_count += 1;
                            if runs.len() < 10_000 {
                                runs.push((k, step - streak[k], step));
                            }
                        }
                        streak[k] = 0;
                    }
                    last[k] = f;
                }
            }
            old.copy_from_slice(&cur);
            assert_eq!(got.crossings, crossings, "step {step}");
            assert_eq!(got.chattering, chattering, "step {step}");
        }
        let s = tracker.summary();
        assert_eq!(s.longest_chatter, longest);
        assert_eq!(s.chatter_runs, run_count);
        assert_eq!(s.max_flips, flips.iter().copied().max().unwrap());
        assert!(run_count > 10_000, "the cap is exercised: {run_count}");
        let mut expected = runs.clone();
        for (k, &r) in streak.iter().enumerate() {
            if r >= MIN_CHATTER_RUN && expected.len() < 10_000 {
                expected.push((k, 12 - r, 12));
            }
        }
        assert_eq!(tracker.chatter_runs(), expected);
    }
}
