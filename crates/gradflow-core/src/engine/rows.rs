//! The engine's element-wise loops for **sample-major** buffers: a stage's `out` features ×
//! `cols` samples stored as `out` rows of `cols` contiguous samples (faer's row-major view).
//! Plans that never mix samples (DNN, ResNet) use this layout ([`super::Layout::Samples`]):
//! faer then tiles the samples (250 per part) instead of the features for the forward and
//! input-cotangent products, so a 100-wide ResNet stage no longer runs a 16-row kernel for
//! its last 4 rows (faer's AVX-512 tiles are 96 rows in f32, 48 in f64).
//!
//! Each loop here is the sample-major twin of one in `kernels.rs` (which dispatches to it):
//! bias + σ forward (optionally keeping the pieces' bits up to date in the same pass), bias
//! alone, per-chunk bias sums, σ' backward with bias and PReLU-slope sums (from z, or from the
//! bits for ReLU and leaky ReLU), and the pieces (u16 or bits) — the pieces written in the **feature-major** entry order
//! (sample by sample, features fastest), the order of the general path and of the kink tracker,
//! so nothing outside the engine sees the layout. Sums along a row run on [`LANES`] fixed
//! lanes (vectorisable, the same order on every run and thread).

use super::Real;

/// Fixed accumulation lanes of the sums along a row.
const LANES: usize = 16;

/// Σ over `acc`'s lanes as a halving tree (lane i + w added to lane i, w = 8, 4, 2, 1): a few
/// vector shuffles, where a sum in lane order compiles to a chain of 16 scalar adds.
#[inline(always)]
fn fold<T: Real>(acc: &[T; LANES]) -> T {
    let mut v = *acc;
    let mut w = LANES / 2;
    while w > 0 {
        for i in 0..w {
            v[i] += v[i + w];
        }
        w /= 2;
    }
    v[0]
}

/// Σ of `v` on [`LANES`] fixed lanes (lane i takes v[i], v[i + LANES], …).
#[inline(always)]
fn lane_sums<T: Real>(v: &[T]) -> [T; LANES] {
    let mut acc = [T::default(); LANES];
    super::kernels::lane_sums(&mut acc, v, |x| x);
    acc
}

/// The pieces' bits a sample-major forward tail keeps up to date: bit set ⇔ z > `kink`, `sample_major`
/// row by row (⌈cols/64⌉ words a row), `fm` in the feature-major entry order. Each block's new
/// word is compared with `sample_major` and only the changed entries are toggled in `fm` (the
/// transposition costs in proportion to the crossings), so both must describe the same pieces
/// before the pass (e.g. both zero), and do after it.
pub struct Track<'a> {
    pub kink: f64,
    pub sample_major: &'a mut [u64],
    pub fm: &'a mut [u64],
}

impl Track<'_> {
    /// The bits z > kink of up to 64 values: compared in T when T holds the kink exactly (the
    /// same bits, vector-wide), else in f64.
    #[inline(always)]
    fn word<T: Real>(&self, z: &[T]) -> u64 {
        let (kink, exact) = (self.kink, T::from_f64(self.kink));
        if exact.to_f64() == kink {
            super::kernels::pack_word(z, move |v| v > exact)
        } else {
            super::kernels::pack_word(z, move |v| v.to_f64() > kink)
        }
    }
}

/// z += b (per row) and h = σ(z) (+ skip), row by row; with `track`, each row's bits packed
/// (64 samples a word) and compared with the recorded ones right after, the row still in L1.
/// (Rows in blocks of 64 samples, the earlier form, ran a short remainder loop per block:
/// 17% slower on a 100 × 250 part.)
#[inline(always)]
pub(super) fn fwd_rows<T: Real>(
    b: &[T],
    z: &mut [T],
    h: &mut [T],
    skip: Option<&[T]>,
    out: usize,
    sigma: impl Fn(T) -> T,
    mut track: Option<Track<'_>>,
) {
    let cols = z.len() / out.max(1);
    if cols == 0 {
        return;
    }
    let wpr = cols.div_ceil(64);
    let rows = z.chunks_exact_mut(cols).zip(h.chunks_exact_mut(cols));
    for (f, ((zrow, hrow), &bv)) in rows.zip(b).enumerate() {
        match skip {
            None => {
                for (zv, hv) in zrow.iter_mut().zip(hrow.iter_mut()) {
                    *zv += bv;
                    *hv = sigma(*zv);
                }
            }
            Some(s) => {
                let srow = &s[f * cols..(f + 1) * cols];
                for ((zv, hv), &sv) in zrow.iter_mut().zip(hrow.iter_mut()).zip(srow) {
                    *zv += bv;
                    *hv = sigma(*zv) + sv;
                }
            }
        }
        if let Some(t) = track.as_mut() {
            for (k, zc) in zrow.chunks(64).enumerate() {
                let new = t.word(zc);
                toggle_changed(&mut t.sample_major[f * wpr + k], new, 64 * k, f, out, t.fm);
            }
        }
    }
}

/// Records `new` as row f's word (samples c0..) and toggles the entries whose bit changed in
/// the feature-major words `fm`.
#[inline(always)]
fn toggle_changed(old: &mut u64, new: u64, c0: usize, f: usize, out: usize, fm: &mut [u64]) {
    let mut d = new ^ *old;
    *old = new;
    while d != 0 {
        let e = (c0 + d.trailing_zeros() as usize) * out + f;
        d &= d - 1;
        fm[e / 64] ^= 1 << (e % 64);
    }
}

/// z += b per row (the output stage).
#[inline(always)]
pub(super) fn add_bias_rows<T: Real>(z: &mut [T], b: &[T], out: usize) {
    let cols = z.len() / out.max(1);
    if cols == 0 {
        return;
    }
    for (row, &bv) in z.chunks_exact_mut(cols).zip(b) {
        row.iter_mut().for_each(|v| *v += bv);
    }
}

/// partial[k·out + f] = Σ of row f over chunk k (`cols_per_chunk` samples a chunk); returns the number of
/// chunks.
#[inline(always)]
pub(super) fn chunk_row_sums<T: Real>(
    g: &[T],
    out: usize,
    cols_per_chunk: usize,
    partial: &mut [T],
) -> usize {
    let cols = g.len() / out.max(1);
    let nch = cols.div_ceil(cols_per_chunk);
    if cols == 0 {
        return 0;
    }
    for (f, row) in g.chunks_exact(cols).enumerate() {
        for (k, chunk) in row.chunks(cols_per_chunk).enumerate() {
            partial[k * out + f] = fold(&lane_sums(chunk));
        }
    }
    nch
}

/// z_bar = h_bar ⊙ σ'(z); partial row k (out + 1 wide) receives chunk k's Σ z_bar per feature and, for
/// PReLU, Σ h_bar ⊙ min(z, 0) in its last entry (added over the features in order).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn bwd_rows<T: Real>(
    z: &[T],
    h_bar: &[T],
    z_bar: &mut [T],
    out: usize,
    cols_per_chunk: usize,
    partial: &mut [T],
    dsigma: impl Fn(T) -> T,
    prelu: bool,
) {
    let zero = T::default();
    let cols = z.len() / out.max(1);
    if cols == 0 {
        return;
    }
    let nch = cols.div_ceil(cols_per_chunk);
    partial[..nch * (out + 1)]
        .iter_mut()
        .for_each(|v| *v = zero);
    let rows = z
        .chunks_exact(cols)
        .zip(h_bar.chunks_exact(cols))
        .zip(z_bar.chunks_exact_mut(cols));
    for (f, ((zrow, hrow), zbrow)) in rows.enumerate() {
        let chunks = zrow
            .chunks(cols_per_chunk)
            .zip(hrow.chunks(cols_per_chunk))
            .zip(zbrow.chunks_mut(cols_per_chunk));
        for (k, ((zc, hc), gc)) in chunks.enumerate() {
            // Element-wise first (vectorises like the forward tail), then the lane sums over
            // what was just written (still in L1): one fused loop compiled to 2-wide code.
            for ((g, &zv), &hv) in gc.iter_mut().zip(zc).zip(hc) {
                *g = hv * dsigma(zv);
            }
            partial[k * (out + 1) + f] = fold(&lane_sums(gc));
            if prelu {
                let mut sl = [zero; LANES];
                for (i, (&zv, &hv)) in zc.iter().zip(hc).enumerate() {
                    sl[i % LANES] += if zv < zero { hv * zv } else { zero };
                }
                partial[k * (out + 1) + out] += fold(&sl);
            }
        }
    }
}

/// See `kernels::act_backward_bits`: row f's z_bar = h_bar ⊙ (1 where bit set, else lo), word by
/// word, then the per-chunk sums of the row as [`bwd_rows`] forms them.
#[inline(always)]
pub(super) fn bwd_rows_bits<T: Real>(
    lo: T,
    bits: &[u64],
    h_bar: &[T],
    z_bar: &mut [T],
    out: usize,
    cols_per_chunk: usize,
    partial: &mut [T],
) {
    let cols = h_bar.len() / out.max(1);
    if cols == 0 {
        return;
    }
    let (nch, wpr) = (cols.div_ceil(cols_per_chunk), cols.div_ceil(64));
    partial[..nch * (out + 1)]
        .iter_mut()
        .for_each(|v| *v = T::default());
    let rows = bits
        .chunks_exact(wpr)
        .zip(h_bar.chunks_exact(cols))
        .zip(z_bar.chunks_exact_mut(cols));
    for (f, ((brow, hrow), zbrow)) in rows.enumerate() {
        for ((gw, hw), &word) in zbrow.chunks_mut(64).zip(hrow.chunks(64)).zip(brow) {
            for (i, (g, &hv)) in gw.iter_mut().zip(hw).enumerate() {
                *g = if word >> i & 1 != 0 { hv } else { lo * hv };
            }
        }
        for (k, gc) in zbrow.chunks(cols_per_chunk).enumerate() {
            partial[k * (out + 1) + f] = fold(&lane_sums(gc));
        }
    }
}

/// out_u16[c·out + f] = piece(z[f·cols + c]): the pieces in the feature-major entry order.
pub(super) fn pieces_rows<T: Real>(z: &[T], out: usize, dst: &mut [u16], piece: impl Fn(T) -> u16) {
    let cols = z.len() / out.max(1);
    for c in 0..cols {
        for (f, d) in dst[c * out..(c + 1) * out].iter_mut().enumerate() {
            *d = piece(z[f * cols + c]);
        }
    }
}

/// Bit c·out + f of `words` = above(z[f·cols + c]): the pieces of a sample-major z as bits in
/// the feature-major entry order, 64 a word, unused high bits 0. Entry by entry: only for
/// pieces read off z after an unrecorded pass (training loops record them in the forward pass
/// through [`Track`]).
pub(super) fn pack_bits_rows<T: Real>(
    z: &[T],
    out: usize,
    words: &mut [u64],
    above: impl Fn(T) -> bool,
) {
    words.iter_mut().for_each(|w| *w = 0);
    let cols = z.len() / out.max(1);
    for c in 0..cols {
        for f in 0..out {
            if above(z[f * cols + c]) {
                let e = c * out + f;
                words[e / 64] |= 1 << (e % 64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_of_a_sample_major_block_come_out_in_feature_major_order() {
        // Shapes with words straddling samples, and rows longer than a word.
        for (out, cols) in [
            (100usize, 250usize),
            (8, 8),
            (3, 5),
            (13, 21),
            (64, 9),
            (9, 64),
        ] {
            let z: Vec<f64> = (0..out * cols)
                .map(|i| ((i * 2_654_435_761) % 1000) as f64 / 500.0 - 1.0)
                .collect();
            let mut words = vec![u64::MAX; (out * cols).div_ceil(64)];
            pack_bits_rows(&z, out, &mut words, |v| v > 0.1);
            for c in 0..cols {
                for f in 0..out {
                    let e = c * out + f;
                    let bit = (words[e / 64] >> (e % 64)) & 1 == 1;
                    assert_eq!(
                        bit,
                        z[f * cols + c] > 0.1,
                        "out {out} cols {cols} ({f}, {c})"
                    );
                }
            }
            let tail = out * cols % 64;
            if tail != 0 {
                assert_eq!(words.last().unwrap() >> tail, 0, "padding bits stay clear");
            }
        }
    }

    #[test]
    fn lane_sums_add_each_lane_in_order() {
        // Whole groups, a remainder, both, and neither; 16 lanes of T and 8 of f64 from f32.
        for len in [0usize, 5, 16, 37, 48, 250] {
            let v: Vec<f64> = (0..len).map(|i| (i as f64 * 0.73).sin() * 1e3).collect();
            let mut lanes = [0.5f64; LANES];
            super::super::kernels::lane_sums(&mut lanes, &v, |x| x);
            for (i, &got) in lanes.iter().enumerate() {
                let want = v.iter().skip(i).step_by(LANES).fold(0.5, |a, &x| a + x);
                assert_eq!(got, want, "len {len} lane {i}");
            }
            let w: Vec<f32> = v.iter().map(|&x| x as f32).collect();
            let mut sq = [0.0f64; 8];
            super::super::kernels::lane_sums(&mut sq, &w, |x: f32| (x as f64) * (x as f64));
            for (i, &got) in sq.iter().enumerate() {
                let want = w
                    .iter()
                    .skip(i)
                    .step_by(8)
                    .fold(0.0, |a, &x| a + (x as f64) * (x as f64));
                assert_eq!(got, want, "squares, len {len} lane {i}");
            }
        }
    }

    #[test]
    fn row_loops_match_their_definitions() {
        let (out, cols, cols_per_chunk) = (5, 37, 10);
        let z: Vec<f64> = (0..out * cols).map(|i| (i as f64 * 0.37).sin()).collect();
        let h_bar: Vec<f64> = (0..out * cols).map(|i| (i as f64 * 0.11).cos()).collect();
        let mut z_bar = vec![0.0; out * cols];
        let nch = cols.div_ceil(cols_per_chunk);
        let mut partial = vec![f64::NAN; nch * (out + 1)];
        let slope = 0.3;
        let ds = |v: f64| if v > 0.0 { 1.0 } else { slope };
        bwd_rows(
            &z,
            &h_bar,
            &mut z_bar,
            out,
            cols_per_chunk,
            &mut partial,
            ds,
            true,
        );
        for k in 0..nch {
            let mut sl = 0.0;
            for f in 0..out {
                let mut s = 0.0;
                for c in k * cols_per_chunk..((k + 1) * cols_per_chunk).min(cols) {
                    let i = f * cols + c;
                    assert_eq!(z_bar[i], h_bar[i] * ds(z[i]));
                    s += z_bar[i];
                    sl += h_bar[i] * z[i].min(0.0);
                }
                assert!((partial[k * (out + 1) + f] - s).abs() < 1e-14);
            }
            assert!((partial[k * (out + 1) + out] - sl).abs() < 1e-13);
        }
        let mut sums = vec![f64::NAN; nch * out];
        assert_eq!(chunk_row_sums(&h_bar, out, cols_per_chunk, &mut sums), nch);
        for k in 0..nch {
            for f in 0..out {
                let s: f64 = (k * cols_per_chunk..((k + 1) * cols_per_chunk).min(cols))
                    .map(|c| h_bar[f * cols + c])
                    .sum();
                assert!((sums[k * out + f] - s).abs() < 1e-14);
            }
        }
        // From bits: the same z_bar and sums bit for bit as from z (ReLU's 0 and a leaky slope),
        // with rows of 2 words (37 samples would straddle no word; 70 do).
        for (cols, lo) in [(37usize, 0.0), (70, 0.3)] {
            let z: Vec<f64> = (0..out * cols).map(|i| (i as f64 * 0.37).sin()).collect();
            let h_bar: Vec<f64> = (0..out * cols).map(|i| (i as f64 * 0.11).cos()).collect();
            let wpr = cols.div_ceil(64);
            let mut bits = vec![0u64; out * wpr];
            for f in 0..out {
                for c in 0..cols {
                    bits[f * wpr + c / 64] |= ((z[f * cols + c] > 0.0) as u64) << (c % 64);
                }
            }
            let nch = cols.div_ceil(cols_per_chunk);
            let (mut zb_z, mut zb_b) = (vec![0.0; out * cols], vec![f64::NAN; out * cols]);
            let (mut p_z, mut p_b) = (vec![0.0; nch * (out + 1)], vec![f64::NAN; nch * (out + 1)]);
            let ds = |v: f64| if v > 0.0 { 1.0 } else { lo };
            bwd_rows(
                &z,
                &h_bar,
                &mut zb_z,
                out,
                cols_per_chunk,
                &mut p_z,
                ds,
                false,
            );
            bwd_rows_bits(lo, &bits, &h_bar, &mut zb_b, out, cols_per_chunk, &mut p_b);
            assert_eq!(zb_z, zb_b, "cols {cols}");
            assert_eq!(p_z, p_b, "cols {cols}");
            assert!(zb_b.iter().zip(&z).any(|(&g, &v)| v <= 0.0 && g != 0.0) == (lo != 0.0));
        }
        let mut p = vec![0u16; out * cols];
        pieces_rows(&z, out, &mut p, |v| (v > 0.0) as u16);
        for c in 0..cols {
            for f in 0..out {
                assert_eq!(p[c * out + f], (z[f * cols + c] > 0.0) as u16);
            }
        }
    }
}
