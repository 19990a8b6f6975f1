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

mod flip_pass;
mod sliced;
pub use flip_pass::{BitLayout, MIN_CHATTER_RUN};
use sliced::Counters;

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

/// The pieces of the previous step.
#[derive(Clone, Debug, Default)]
enum Pieces {
    #[default]
    None,
    /// σ with one kink: bit set ⇔ z above it, in the tracker's [`BitLayout`].
    Bits(Vec<u64>),
    /// Any σ: the index among the kink points, one segment.
    Indices(Vec<u16>),
}

/// Per-pre-activation state between steps (serialisable, so a paused run resumes exactly; the
/// serialised form lists pieces and last-step flips per entry, whatever the representation).
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
#[serde(from = "TrackerWire", into = "TrackerWire")]
pub struct KinkTracker {
    layout: BitLayout,
    pieces: Pieces,
    /// Entries that flipped on the last step, in `layout`'s words.
    flipped_last: Vec<u64>,
    /// Flip counts and streaks per entry, bit-sliced per word of `layout`.
    counters: Counters,
    summary: KinkSummary,
    /// Steps observed so far (the index of the next step).
    steps: u64,
    /// Chattering runs of at least [`MIN_CHATTER_RUN`] consecutive flips: (entry, first step,
    /// step after the last flip) — GD's discrete trace of a sliding interval. The first 10,000.
    chatter_runs: Vec<(usize, u64, u64)>,
    scratch: Vec<u16>,
    scratch_bits: Vec<u64>,
}

/// The serialised tracker (the format of every version so far).
#[derive(Serialize, serde::Deserialize)]
struct TrackerWire {
    pieces: Vec<u16>,
    flipped_last: Vec<bool>,
    flips: Vec<u64>,
    streak: Vec<u64>,
    summary: KinkSummary,
    #[serde(default)]
    steps: u64,
    #[serde(default)]
    chatter_runs: Vec<(usize, u64, u64)>,
}

impl From<TrackerWire> for KinkTracker {
    fn from(w: TrackerWire) -> Self {
        let n = w.pieces.len();
        let layout = BitLayout::single(n);
        let mut flipped_last = vec![0u64; layout.words()];
        for (k, &f) in w.flipped_last.iter().enumerate().take(n) {
            layout.set(&mut flipped_last, k, f);
        }
        let complete = w.flipped_last.len() == n && w.flips.len() == n && w.streak.len() == n;
        if n == 0 || !complete {
            // Nothing observed yet (or a state this version cannot read): start afresh.
            return Self {
                steps: w.steps,
                ..Self::default()
            };
        }
        let mut counters = Counters::new(layout.words());
        for k in 0..n {
            let (wi, b) = layout.locate(k);
            counters.set(wi, b as u32, w.flips[k], w.streak[k]);
        }
        Self {
            layout,
            pieces: Pieces::Indices(w.pieces),
            flipped_last,
            counters,
            summary: w.summary,
            // States written before `steps` existed read 0: a streak cannot be longer than
            // the steps seen, so the run starts it reports stay ≥ 0.
            steps: w.steps.max(w.streak.iter().copied().max().unwrap_or(0)),
            chatter_runs: w.chatter_runs,
            scratch: Vec::new(),
            scratch_bits: Vec::new(),
        }
    }
}

impl From<KinkTracker> for TrackerWire {
    fn from(t: KinkTracker) -> Self {
        let n = t.layout.entries();
        let pieces = match &t.pieces {
            Pieces::None => Vec::new(),
            Pieces::Indices(p) => p.clone(),
            Pieces::Bits(b) => (0..n).map(|k| t.layout.get(b, k) as u16).collect(),
        };
        let flipped_last = if pieces.is_empty() {
            Vec::new()
        } else {
            (0..n).map(|k| t.layout.get(&t.flipped_last, k)).collect()
        };
        let (flips, streak) = t.per_entry_counters();
        Self {
            pieces,
            flipped_last,
            flips,
            streak,
            summary: t.summary,
            steps: t.steps,
            chatter_runs: t.chatter_runs,
        }
    }
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
        let n = cur.len();
        // A bit representation of the same entries (a run resumed on another path) converts.
        if let Pieces::Bits(b) = &self.pieces {
            if self.layout.entries() == n {
                let p = (0..n).map(|k| self.layout.get(b, k) as u16).collect();
                self.relayout(BitLayout::single(n));
                self.pieces = Pieces::Indices(p);
            }
        }
        let step = match std::mem::take(&mut self.pieces) {
            Pieces::Indices(old) if old.len() == n && self.layout.segment_lens() == [n] => {
                let step = self.apply(&|w| flip_pass::changed_word(&cur, &old, w));
                self.scratch = old;
                step
            }
            _ => {
                self.reset(BitLayout::single(n));
                KinkStep::default()
            }
        };
        self.pieces = Pieces::Indices(cur);
        self.steps += 1;
        step
    }

    /// For σ with one kink: the pieces as bits (set ⇔ above the kink), in segments of the given
    /// entry counts (concatenated in the order of `visit_pre_activations`), each padded to whole
    /// 64-bit words. `fill` writes every word of every segment (zeroed before the call; unused
    /// high bits of a segment's last word must stay 0), e.g. the segments in parallel through
    /// [`BitLayout::split_mut`] of the layout it is handed.
    pub fn observe_bits(
        &mut self,
        segments: &[usize],
        fill: impl FnOnce(&BitLayout, &mut [u64]),
    ) -> KinkStep {
        if self.layout.segment_lens() != segments || !matches!(self.pieces, Pieces::Bits(_)) {
            let layout = BitLayout::new(segments);
            let converted = match &self.pieces {
                _ if self.layout.entries() != layout.entries() => None,
                Pieces::Bits(b) => Some(
                    (0..layout.entries())
                        .map(|k| self.layout.get(b, k))
                        .collect::<Vec<_>>(),
                ),
                Pieces::Indices(p) if p.iter().all(|&v| v <= 1) => {
                    Some(p.iter().map(|&v| v == 1).collect())
                }
                _ => None,
            };
            match converted {
                Some(bits) => {
                    let mut words = vec![0u64; layout.words()];
                    for (k, &on) in bits.iter().enumerate() {
                        layout.set(&mut words, k, on);
                    }
                    self.relayout(layout);
                    self.pieces = Pieces::Bits(words);
                }
                None => {
                    self.reset(layout);
                    self.pieces = Pieces::None;
                }
            }
        }
        let mut cur = std::mem::take(&mut self.scratch_bits);
        cur.clear();
        cur.resize(self.layout.words(), 0);
        fill(&self.layout, &mut cur);
        // Unused high bits of each segment's last word must not count as flips.
        self.layout.clear_padding(&mut cur);
        let step = match std::mem::take(&mut self.pieces) {
            Pieces::Bits(old) if old.len() == cur.len() => {
                let step = self.apply(&|w| cur[w] ^ old[w]);
                self.scratch_bits = old;
                step
            }
            _ => {
                self.reset(self.layout.clone());
                KinkStep::default()
            }
        };
        self.pieces = Pieces::Bits(cur);
        self.steps += 1;
        step
    }

    /// One step's flips applied to the state; the step's counts.
    fn apply(&mut self, flip: &(impl Fn(usize) -> u64 + Sync)) -> KinkStep {
        let tallies = flip_pass::apply_flips(
            &self.layout,
            self.steps,
            flip,
            &mut self.flipped_last,
            &mut self.counters,
        );
        let mut step = KinkStep::default();
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
        step
    }

    /// Starts counting afresh over `layout`'s entries (the first step, or the pre-activations
    /// changed in number).
    fn reset(&mut self, layout: BitLayout) {
        let n = layout.entries();
        self.flipped_last = vec![0; layout.words()];
        self.counters = Counters::new(layout.words());
        self.summary = KinkSummary {
            tracked: n,
            ..Default::default()
        };
        self.layout = layout;
    }

    /// The same entries in another layout: `flipped_last` repacked (the caller converts the
    /// pieces).
    fn relayout(&mut self, layout: BitLayout) {
        let mut words = vec![0u64; layout.words()];
        let mut counters = Counters::new(layout.words());
        for k in 0..layout.entries() {
            layout.set(&mut words, k, self.layout.get(&self.flipped_last, k));
            let (w0, b0) = self.layout.locate(k);
            let (f, s) = self.counters.get(w0, b0 as u32);
            let (w1, b1) = layout.locate(k);
            counters.set(w1, b1 as u32, f, s);
        }
        self.flipped_last = words;
        self.counters = counters;
        self.layout = layout;
    }

    /// The recorded chattering runs (entry, first step, end step), plus the runs still going
    /// (ending at the current step).
    pub fn chatter_runs(&self) -> Vec<(usize, u64, u64)> {
        let mut out = self.chatter_runs.clone();
        for w in 0..self.layout.words() {
            let mut m = self.counters.streak_at_least_3(w);
            while m != 0 && out.len() < 10_000 {
                let b = m.trailing_zeros();
                m &= m - 1;
                let run = self.counters.get(w, b).1;
                out.push((
                    self.layout.entry(w, b),
                    self.steps.saturating_sub(run),
                    self.steps,
                ));
            }
        }
        out
    }

    /// (flips, streak) of every entry, in entry order.
    fn per_entry_counters(&self) -> (Vec<u64>, Vec<u64>) {
        (0..self.layout.entries())
            .map(|k| {
                let (w, b) = self.layout.locate(k);
                self.counters.get(w, b as u32)
            })
            .unzip()
    }

    pub fn summary(&self) -> KinkSummary {
        let mut s = self.summary.clone();
        let (mut crossed, mut over_100, mut max) = (0, 0, 0);
        for w in 0..self.layout.words() {
            let mut m = self.counters.crossed(w);
            crossed += m.count_ones() as usize;
            while m != 0 {
                let b = m.trailing_zeros();
                m &= m - 1;
                let f = self.counters.get(w, b).0;
                over_100 += (f > 100) as usize;
                max = max.max(f);
            }
        }
        s.units_crossed = crossed;
        s.units_over_100_flips = over_100;
        s.max_flips = max;
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

#[cfg(test)]
mod tests_reference;
