//! The tracker's per-step pass over bit words: given, for every 64-entry word, the bits of the
//! pre-activations whose piece changed since the previous step, update the per-entry flip
//! counts and streaks and tally crossings, chattering and finished chattering runs.
//!
//! Entries live in *segments* (one per block of pre-activations the caller fills separately,
//! e.g. a stage's columns of one engine part), each padded to whole words, so that segments can
//! be written in parallel without sharing a word. [`BitLayout`] maps words back to entries.
//! Most words have no flip now and none last step: they cost one load and a test; the others
//! update their bit-sliced counters ([`super::sliced`]) with a few word operations.

use super::sliced::{self, Counters, PLANES, STRIDE};
use crate::prefetch::prefetch;
use rayon::prelude::*;

/// Shortest run of consecutive flips recorded as a chattering (sliding-like) interval.
pub const MIN_CHATTER_RUN: u64 = 3;

/// Words per parallel chunk of the pass (32,768 entries).
pub(super) const WORD_CHUNK: usize = 512;

/// Where the entries of each segment sit among the padded words.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BitLayout {
    /// Entries per segment.
    lens: Vec<usize>,
    /// Entry index of bit 0 of every word (padding bits of a segment's last word are unused).
    word_base: Vec<usize>,
    /// First word of every segment, and the total word count at the end.
    seg_word: Vec<usize>,
    entries: usize,
}

impl BitLayout {
    /// Segments of the given entry counts, in order.
    pub fn new(lens: &[usize]) -> Self {
        let mut word_base = Vec::new();
        let mut seg_word = Vec::with_capacity(lens.len() + 1);
        let mut entry = 0;
        for &len in lens {
            seg_word.push(word_base.len());
            word_base.extend((0..len.div_ceil(64)).map(|w| entry + 64 * w));
            entry += len;
        }
        seg_word.push(word_base.len());
        Self {
            lens: lens.to_vec(),
            word_base,
            seg_word,
            entries: entry,
        }
    }
    /// One segment of `n` entries.
    pub fn single(n: usize) -> Self {
        Self::new(&[n])
    }
    pub fn words(&self) -> usize {
        self.word_base.len()
    }
    pub fn entries(&self) -> usize {
        self.entries
    }
    pub fn segment_lens(&self) -> &[usize] {
        &self.lens
    }
    /// `words` cut into the segments' word ranges, in order.
    pub fn split_mut<'a>(&self, mut words: &'a mut [u64]) -> Vec<&'a mut [u64]> {
        let mut out = Vec::with_capacity(self.lens.len());
        for s in 0..self.lens.len() {
            let (head, tail) = words.split_at_mut(self.seg_word[s + 1] - self.seg_word[s]);
            out.push(head);
            words = tail;
        }
        out
    }
    /// Bit `k` of the words, by entry index (the inverse of the layout), for conversions.
    pub fn get(&self, words: &[u64], entry: usize) -> bool {
        let (w, b) = self.locate(entry);
        words[w] >> b & 1 == 1
    }
    pub fn set(&self, words: &mut [u64], entry: usize, on: bool) {
        let (w, b) = self.locate(entry);
        if on {
            words[w] |= 1 << b;
        } else {
            words[w] &= !(1 << b);
        }
    }
    /// Zeroes the bits past each segment's last entry.
    pub fn clear_padding(&self, words: &mut [u64]) {
        for (s, &len) in self.lens.iter().enumerate() {
            let (end, used) = (self.seg_word[s + 1], len % 64);
            if used != 0 {
                words[end - 1] &= (1u64 << used) - 1;
            }
        }
    }
    /// Entry index of bit `b` of word `w`.
    pub fn entry(&self, w: usize, b: u32) -> usize {
        self.word_base[w] + b as usize
    }
    /// (word, bit) of an entry.
    pub fn locate(&self, entry: usize) -> (usize, usize) {
        // The last word whose base is ≤ entry.
        let w = self.word_base.partition_point(|&b| b <= entry) - 1;
        (w, entry - self.word_base[w])
    }
}

/// One chunk's share of a step.
pub(super) struct ChunkTally {
    pub crossings: usize,
    pub chattering: usize,
    pub longest: u64,
    /// Finished chattering runs (entry, first step, end step), entries increasing.
    pub runs: Vec<(usize, u64, u64)>,
}

/// Applies one step's flip words (`flip(w)` for word w) to the state, in parallel chunks of
/// [`WORD_CHUNK`] words, and returns the chunk tallies in chunk order (their concatenated run
/// lists are in increasing entry order, as one sequential pass would give).
///
/// Each chunk first scans its flip words and lists the words with a flip now or last step;
/// their counters (two cache lines a word, spread over megabytes, rarely in cache) are then
/// updated in that order with the counters of the word [`PREFETCH`] places ahead requested from
/// memory, so that the misses overlap instead of stalling one after another.
pub(super) fn apply_flips(
    layout: &BitLayout,
    steps: u64,
    flip: &(impl Fn(usize) -> u64 + Sync),
    flipped_last: &mut [u64],
    counters: &mut Counters,
) -> Vec<ChunkTally> {
    flipped_last
        .par_chunks_mut(WORD_CHUNK)
        .zip(counters.planes.par_chunks_mut(WORD_CHUNK * STRIDE))
        .zip(counters.height.par_chunks_mut(WORD_CHUNK))
        .enumerate()
        .map(|(c, ((last, planes), height))| {
            let w0 = c * WORD_CHUNK;
            let mut t = ChunkTally {
                crossings: 0,
                chattering: 0,
                longest: 0,
                runs: Vec::new(),
            };
            // The touched words of this chunk (indices in the chunk).
            let mut touched = [0u16; WORD_CHUNK];
            let mut n = 0;
            for (i, &l) in last.iter().enumerate() {
                touched[n] = i as u16;
                n += (flip(w0 + i) | l != 0) as usize;
            }
            for k in 0..n {
                if let Some(&ahead) = touched[..n].get(k + PREFETCH) {
                    // The lines a word's step reads first: flip plane 0, streak plane 0.
                    let p = ahead as usize * STRIDE;
                    prefetch(&planes[p..p + 1]);
                    prefetch(&planes[p + PLANES..p + PLANES + 1]);
                }
                let i = touched[k] as usize;
                let (f, l) = (flip(w0 + i), last[i]);
                t.crossings += f.count_ones() as usize;
                t.chattering += (f & l).count_ones() as usize;
                let base = layout.word_base[w0 + i];
                let runs = &mut t.runs;
                let pw = &mut planes[i * STRIDE..(i + 1) * STRIDE];
                let longest = sliced::step_word(pw, &mut height[i], f, l, |b, run| {
                    runs.push((base + b as usize, steps.saturating_sub(run), steps));
                });
                t.longest = t.longest.max(longest);
                last[i] = f;
            }
            t
        })
        .collect()
}

/// How many touched words ahead the flip pass requests counters from memory.
const PREFETCH: usize = 8;

/// Packs "piece changed" bits of u16 pieces (one segment, `layout` single) into word w.
pub(super) fn changed_word(cur: &[u16], old: &[u16], w: usize) -> u64 {
    let (a, b) = (64 * w, (64 * w + 64).min(cur.len()));
    let mut f = 0u64;
    for (i, (x, y)) in cur[a..b].iter().zip(&old[a..b]).enumerate() {
        f |= ((x != y) as u64) << i;
    }
    f
}
