//! The tracker against a plain sequential reference written here (per entry, no words, no
//! chunks), on random piece sequences with frequent back-and-forth flips: through u16 pieces,
//! through bit words in irregular segments (chunks and segment paddings exercised), and with a
//! pause (serialise, deserialise) in the middle that changes representation.

use super::flip_pass::WORD_CHUNK;
use super::*;

/// Reference state and counts.
struct Reference {
    old: Vec<u16>,
    last: Vec<bool>,
    flips: Vec<u64>,
    streak: Vec<u64>,
    runs: Vec<(usize, u64, u64)>,
    run_count: u64,
    longest: u64,
}

impl Reference {
    fn new(n: usize) -> Self {
        Self {
            old: vec![0; n],
            last: vec![false; n],
            flips: vec![0; n],
            streak: vec![0; n],
            runs: Vec::new(),
            run_count: 0,
            longest: 0,
        }
    }
    /// Step `step` with pieces `cur` (the first step only records).
    #[allow(clippy::needless_range_loop)] // five parallel arrays indexed by k
    fn step(&mut self, step: u64, cur: &[u16]) -> (usize, usize) {
        let (mut crossings, mut chattering) = (0, 0);
        if step > 0 {
            for k in 0..cur.len() {
                let f = cur[k] != self.old[k];
                if f {
                    crossings += 1;
                    self.flips[k] += 1;
                    if self.last[k] {
                        chattering += 1;
                        self.streak[k] += 1;
                    } else {
                        self.streak[k] = 1;
                    }
                    self.longest = self.longest.max(self.streak[k]);
                } else {
                    if self.streak[k] >= MIN_CHATTER_RUN {
                        self.run_count += 1;
                        if self.runs.len() < 10_000 {
                            self.runs.push((k, step - self.streak[k], step));
                        }
                    }
                    self.streak[k] = 0;
                }
                self.last[k] = f;
            }
        }
        self.old.copy_from_slice(cur);
        (crossings, chattering)
    }
    fn check(&self, tracker: &KinkTracker, steps: u64) {
        let s = tracker.summary();
        assert_eq!(s.longest_chatter, self.longest);
        assert_eq!(s.chatter_runs, self.run_count);
        assert_eq!(s.max_flips, self.flips.iter().copied().max().unwrap());
        assert_eq!(
            s.units_crossed,
            self.flips.iter().filter(|&&f| f > 0).count()
        );
        assert_eq!(s.tracked, self.old.len());
        let mut expected = self.runs.clone();
        for (k, &r) in self.streak.iter().enumerate() {
            if r >= MIN_CHATTER_RUN && expected.len() < 10_000 {
                expected.push((k, steps - r, steps));
            }
        }
        assert_eq!(tracker.chatter_runs(), expected);
    }
}

/// Entry counts of the segments: irregular, some shorter than a word, one spanning chunks.
fn segments() -> Vec<usize> {
    vec![
        63,
        1,
        64 * WORD_CHUNK + 100,
        12_345,
        7,
        2 * 64 * WORD_CHUNK + 1,
    ]
}

/// Fills the bit words of `layout` from 0/1 pieces, segment by segment.
fn fill_bits(layout: &BitLayout, words: &mut [u64], cur: &[u16]) {
    let mut k0 = 0;
    for (seg, len) in layout
        .split_mut(words)
        .into_iter()
        .zip(layout.segment_lens())
    {
        for (i, &v) in cur[k0..k0 + len].iter().enumerate() {
            seg[i / 64] |= (v as u64) << (i % 64);
        }
        k0 += len;
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Route {
    Pieces,
    Bits,
    /// Bits, paused (serialised and read back) after step 5, the rest as u16 pieces until step
    /// 8, then bits again.
    Mixed,
    /// As Mixed, with all entries in one segment (the u16 pieces' own layout).
    MixedOneSegment,
}

fn run(route: Route) {
    use rand::RngExt;
    let segs = match route {
        Route::MixedOneSegment => vec![segments().iter().sum()],
        _ => segments(),
    };
    let n: usize = segs.iter().sum();
    let mut rng = crate::rng::stream(5, crate::rng::Stream::Init);
    let mut tracker = KinkTracker::new();
    let mut reference = Reference::new(n);
    let mut cur = vec![0u16; n];
    let steps = 14u64;
    for step in 0..steps {
        for (k, c) in cur.iter_mut().enumerate() {
            // Entries in a "hot" band flip often (runs ≥ 3 appear), the rest rarely.
            let p = if (k / 1000) % 7 == 0 { 0.7 } else { 0.001 };
            if rng.random::<f64>() < p {
                *c = 1 - *c;
            }
        }
        let mixed = matches!(route, Route::Mixed | Route::MixedOneSegment);
        if mixed && step == 6 {
            let json = serde_json::to_string(&tracker).unwrap();
            tracker = serde_json::from_str(&json).unwrap();
        }
        let bits = match route {
            Route::Pieces => false,
            Route::Bits => true,
            Route::Mixed | Route::MixedOneSegment => !(6..8).contains(&step),
        };
        let got = if bits {
            tracker.observe_bits(&segs, |layout, words| fill_bits(layout, words, &cur))
        } else {
            tracker.observe_pieces(|v| v.extend_from_slice(&cur))
        };
        let (crossings, chattering) = reference.step(step, &cur);
        assert_eq!(got.crossings, crossings, "step {step}");
        assert_eq!(got.chattering, chattering, "step {step}");
        assert!(step == 0 || crossings > 0);
    }
    assert!(reference.run_count > 10_000, "the cap is exercised");
    reference.check(&tracker, steps);
}

#[test]
fn u16_pieces_match_the_reference() {
    run(Route::Pieces);
}

#[test]
fn bit_words_in_segments_match_the_reference() {
    run(Route::Bits);
}

#[test]
fn pause_and_representation_changes_keep_the_state() {
    run(Route::Mixed);
}

#[test]
fn representation_changes_in_one_segment_keep_the_state() {
    run(Route::MixedOneSegment);
}

/// Stray bits past a segment's end (a careless `fill`) are not flips.
#[test]
fn padding_bits_are_ignored() {
    let segs = [3, 70];
    let mut tr = KinkTracker::new();
    for step in 0..4u64 {
        // Words: segment 0 = [0] (3 entries), segment 1 = [1, 2] (64 + 6 entries). Entry 0
        // flips every step; the padding bits (3.. of word 0, 6.. of word 2) flip too.
        let garbage = if step % 2 == 0 { 0 } else { u64::MAX };
        let got = tr.observe_bits(&segs, |_, words| {
            words[0] = (garbage << 3) | (step & 1);
            words[1] = 0;
            words[2] = garbage << 6;
        });
        assert_eq!(got.crossings, (step > 0) as usize, "step {step}");
    }
    assert_eq!(tr.summary().units_crossed, 1);
}

/// A state saved before `steps` was recorded (steps = 0) with a streak under way.
#[test]
fn old_states_without_steps_report_runs_from_step_zero() {
    let json = r#"{"pieces":[1,0],"flipped_last":[true,false],"flips":[4,0],"streak":[4,0],
        "summary":{"tracked":2,"total_crossings":4,"units_crossed":1,"units_over_100_flips":0,
        "max_flips":4,"longest_chatter":4,"steps_with_chattering":3}}"#;
    let tr: KinkTracker = serde_json::from_str(json).unwrap();
    assert_eq!(tr.chatter_runs(), vec![(0, 0, 4)]);
}

#[test]
fn layout_maps_entries_to_padded_words() {
    let layout = BitLayout::new(&[3, 64, 65, 0, 1]);
    // Words: [3] → 1, [64] → 1, [65] → 2, [] → 0, [1] → 1.
    assert_eq!(layout.words(), 5);
    assert_eq!(layout.entries(), 133);
    let mut w = vec![0u64; 5];
    layout.set(&mut w, 2, true); // segment 0, bit 2
    layout.set(&mut w, 3, true); // segment 1, bit 0
    layout.set(&mut w, 67 + 64, true); // segment 2, word 1, bit 0
    layout.set(&mut w, 132, true); // segment 4, bit 0
    assert_eq!(w, vec![1 << 2, 1, 0, 1, 1]);
    assert!(layout.get(&w, 131) && !layout.get(&w, 130));
    let parts = layout.split_mut(&mut w);
    assert_eq!(
        parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
        [1, 1, 2, 0, 1]
    );
}
