//! Bit-sliced per-entry counters of the kink tracker: for every word of 64 pre-activations,
//! the flip count and the current streak (consecutive steps with a flip) of each, stored as 32
//! bit planes each (plane j holds bit j of the 64 counts). A step adds the word's flip mask to
//! the flip counts and to the streaks (a ripple carry that usually stops after a plane or two)
//! and clears the streaks of entries that did not flip: a handful of word operations per word,
//! touching the low planes only, instead of two scattered 8-byte updates per flipping entry.
//! The per-entry values are extracted only for summaries, chattering runs and serialisation.

/// Planes per counter: counts up to 2³² − 1 (further increments saturate).
pub(super) const PLANES: usize = 32;
/// u64s per word: the flip planes, then the streak planes.
pub(super) const STRIDE: usize = 2 * PLANES;

/// The counters of all words.
#[derive(Clone, Debug, Default)]
pub(super) struct Counters {
    /// STRIDE planes per word.
    pub planes: Vec<u64>,
    /// Streak planes in use per word (all higher ones are 0).
    pub height: Vec<u8>,
}

/// Value of bit `b` across `planes` (plane j = bit j).
#[inline]
fn value(planes: &[u64], b: u32) -> u64 {
    planes
        .iter()
        .enumerate()
        .fold(0, |v, (j, &p)| v | ((p >> b) & 1) << j)
}

/// planes += mask (per bit), saturating at all ones; returns the planes touched.
#[inline]
fn increment(planes: &mut [u64], mask: u64) -> usize {
    let mut carry = mask;
    let mut j = 0;
    while carry != 0 && j < planes.len() {
        let old = planes[j];
        planes[j] = old ^ carry;
        carry &= old;
        j += 1;
    }
    if carry != 0 {
        // Overflow past 2³² − 1: those entries wrapped to 0; set them to all ones.
        for p in planes.iter_mut() {
            *p |= carry;
        }
    }
    j
}

impl Counters {
    pub fn new(words: usize) -> Self {
        Self {
            planes: vec![0; words * STRIDE],
            height: vec![0; words],
        }
    }

    /// (flips, streak) of bit b of word w.
    pub fn get(&self, w: usize, b: u32) -> (u64, u64) {
        let p = &self.planes[w * STRIDE..(w + 1) * STRIDE];
        (value(&p[..PLANES], b), value(&p[PLANES..], b))
    }

    /// Sets (flips, streak) of bit b of word w (counts beyond 2³² − 1 saturate).
    pub fn set(&mut self, w: usize, b: u32, flips: u64, streak: u64) {
        let cap = (1u64 << PLANES) - 1;
        let (flips, streak) = (flips.min(cap), streak.min(cap));
        let p = &mut self.planes[w * STRIDE..(w + 1) * STRIDE];
        for j in 0..PLANES {
            p[j] = (p[j] & !(1 << b)) | ((flips >> j) & 1) << b;
            p[PLANES + j] = (p[PLANES + j] & !(1 << b)) | ((streak >> j) & 1) << b;
        }
        let h = (0..PLANES)
            .rev()
            .find(|&j| p[PLANES + j] != 0)
            .map_or(0, |j| j + 1);
        self.height[w] = h as u8;
    }

    /// Entries of word w whose flip count is non-zero.
    pub fn crossed(&self, w: usize) -> u64 {
        self.planes[w * STRIDE..w * STRIDE + PLANES]
            .iter()
            .fold(0, |a, &p| a | p)
    }

    /// Entries of word w whose streak is at least 3.
    pub fn streak_at_least_3(&self, w: usize) -> u64 {
        let s = &self.planes[w * STRIDE + PLANES..(w + 1) * STRIDE];
        let h = self.height[w] as usize;
        streak_ge3(s, h)
    }
}

#[inline]
fn streak_ge3(s: &[u64], h: usize) -> u64 {
    if h < 2 {
        return 0;
    }
    (s[0] & s[1]) | s[2..h].iter().fold(0, |a, &p| a | p)
}

/// One step on one word: `f` the entries that flipped now, `l` those that flipped on the last
/// step. Adds f to the flip counts and the streaks, clears the streaks of entries that did not
/// flip, calls `run_end(bit, length)` for every entry whose streak of ≥ 3 ends now (in
/// increasing bit order), and returns the longest streak among the entries that flipped.
/// Needs the invariant the tracker keeps: streaks are non-zero only where `l` is set.
#[inline]
pub(super) fn step_word(
    planes: &mut [u64],
    height: &mut u8,
    f: u64,
    l: u64,
    mut run_end: impl FnMut(u32, u64),
) -> u64 {
    let (flips, streak) = planes.split_at_mut(PLANES);
    increment(flips, f);
    let h = *height as usize;
    let mut ended = !f & l & streak_ge3(streak, h);
    while ended != 0 {
        let b = ended.trailing_zeros();
        ended &= ended - 1;
        run_end(b, value(&streak[..h], b));
    }
    let touched = increment(streak, f);
    let mut h = h.max(touched);
    for p in &mut streak[..h] {
        *p &= f;
    }
    while h > 0 && streak[h - 1] == 0 {
        h -= 1;
    }
    *height = h as u8;
    // The largest streak among f's entries, plane by plane from the top.
    let (mut cand, mut longest) = (f, 0u64);
    for j in (0..h).rev() {
        let c = cand & streak[j];
        if c != 0 {
            cand = c;
            longest |= 1 << j;
        }
    }
    longest
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counters against plain per-entry integers over random masks (with the invariant kept).
    #[test]
    fn sliced_counters_match_plain_integers() {
        use rand::RngExt;
        let mut rng = crate::rng::stream(9, crate::rng::Stream::Init);
        let mut c = Counters::new(1);
        let (mut flips, mut streak) = ([0u64; 64], [0u64; 64]);
        let mut last = 0u64;
        for step in 0..3000 {
            // Bits 0–15 flip almost always (long streaks), the rest at random.
            let f: u64 = (rng.random::<u64>() & rng.random::<u64>())
                | if step % 97 == 0 { 0 } else { 0xffff };
            let mut ends = Vec::new();
            let (planes, height) = (&mut c.planes[..], &mut c.height[0]);
            let longest = step_word(planes, height, f, last, |b, v| ends.push((b, v)));
            let mut want_ends = Vec::new();
            let mut want_longest = 0;
            for b in 0..64 {
                if f >> b & 1 == 1 {
                    flips[b] += 1;
                    streak[b] += 1;
                    want_longest = want_longest.max(streak[b]);
                } else {
                    if streak[b] >= 3 {
                        want_ends.push((b as u32, streak[b]));
                    }
                    streak[b] = 0;
                }
            }
            assert_eq!(ends, want_ends, "step {step}");
            assert_eq!(longest, want_longest, "step {step}");
            for b in 0..64u32 {
                assert_eq!(c.get(0, b), (flips[b as usize], streak[b as usize]));
            }
            let ge3 = (0..64)
                .filter(|&b| streak[b] >= 3)
                .fold(0u64, |m, b| m | 1 << b);
            assert_eq!(c.streak_at_least_3(0), ge3);
            last = f;
        }
        assert!(
            streak[..16].iter().any(|&s| s > 64),
            "long streaks exercised"
        );
        // set() round-trips, and saturates.
        c.set(0, 5, 123_456, 7);
        assert_eq!(c.get(0, 5), (123_456, 7));
        c.set(0, 6, u64::MAX, 0);
        assert_eq!(c.get(0, 6).0, (1 << 32) - 1);
    }
}
