//! The engine's element-wise and sparse passes over (features × n) buffers — column-major here,
//! sample-major in `rows.rs` (the kernels taking `sample_major` dispatch to it):
//! fused bias + activation (+ residual skip) forward, fused activation backward with bias and
//! PReLU-slope cotangents, the loss and its cotangent, the column parts and their fork-join, and
//! the weighted column sums of graph propagation (`csr.rs`).
//!
//! Every kernel is sequential over the columns it is given; the engine splits the n columns
//! into its [`super::Parts`] ([`part_cols`]) and runs them on the rayon pool's threads with
//! [`run_parts`]. Sums over columns go through per-chunk partial sums (chunks of [`chunk_cols`]
//! columns, [`CHUNKS_PER_PART`] a part), combined in chunk order, so for a given number of parts
//! results do not depend on which thread ran what. No kernel allocates; the element-wise ones
//! run compiled for AVX-512 when the CPU has it.

use super::{rows, Part, Real};
use crate::activation::Activation;

/// Chunks of partial sums per column part.
pub const CHUNKS_PER_PART: usize = 2;

/// σ, specialised for the inner loops.
pub enum ActKind {
    Leaky(f64),
    Prelu,
    Relu,
    /// Sigmoid and piecewise polynomials, evaluated in f64 through [`Activation`].
    General(Activation),
}

impl ActKind {
    pub fn new(a: &Activation) -> Self {
        match a {
            Activation::LeakyRelu { slope } => Self::Leaky(*slope),
            Activation::Prelu { .. } => Self::Prelu,
            Activation::Relu => Self::Relu,
            other => Self::General(other.clone()),
        }
    }
    /// σ's slope below its kink at 0 when σ is 1 above it and that constant below (ReLU, leaky
    /// ReLU): σ'(z) is then a function of the piece bit z > 0 alone, and the backward pass needs
    /// no z. None for PReLU (its slope's cotangent reads z) and the general activations.
    pub fn below_slope(&self) -> Option<f64> {
        match self {
            Self::Relu => Some(0.0),
            Self::Leaky(a) => Some(*a),
            Self::Prelu | Self::General(_) => None,
        }
    }
}

pub fn parallel() -> bool {
    !matches!(crate::batch::par(), faer::Par::Seq)
}

/// Columns per chunk of partial sums, for n columns cut into `parts` parts.
pub fn chunk_cols(n: usize, parts: usize) -> usize {
    n.div_ceil(CHUNKS_PER_PART * parts).max(1)
}

/// Columns per part (every part but the last is this wide; parts at the end are empty when n
/// is small).
pub fn part_width(n: usize, parts: usize) -> usize {
    CHUNKS_PER_PART * chunk_cols(n, parts)
}

/// Columns c0..c1 of part k of `parts`.
pub fn part_cols(n: usize, parts: usize, k: usize) -> (usize, usize) {
    let w = part_width(n, parts);
    ((k * w).min(n), ((k + 1) * w).min(n))
}

/// Runs `f` on every part, on the pool's threads (nested rayon joins, no heap allocation; one
/// after the other when the global parallelism is `Seq`), and returns the sum of their clocks.
pub(crate) fn run_parts<T: Send>(
    parts: &mut [T],
    on: bool,
    f: &(impl Fn(&mut T) -> super::Clock + Sync),
) -> super::Clock {
    match parts.len() {
        0 => super::Clock::new(on),
        1 => f(&mut parts[0]),
        k => {
            let (a, b) = parts.split_at_mut(k / 2);
            let (mut ca, cb) = both(|| run_parts(a, on, f), || run_parts(b, on, f));
            ca.add(&cb);
            ca
        }
    }
}

/// Defines `pub fn $name` that runs its body compiled for AVX-512 when the CPU has it (the crate
/// itself is built for baseline x86-64, where these loops vectorise only 2 doubles wide).
/// Results are the same on every path: the kernels are element-wise, their sums over columns
/// run in the same order, and nothing is contracted into FMAs.
macro_rules! wide {
    ($(#[$m:meta])* pub fn $name:ident<T: Real>($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        pub fn $name<T: Real>($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn imp<T: Real>($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2")]
                unsafe fn avx512<T: Real>($($arg: $ty),*) $(-> $ret)? {
                    imp($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU supports AVX-512F (checked just above).
                    return unsafe { avx512($($arg),*) };
                }
            }
            imp($($arg),*)
        }
    };
}

/// Runs `a` and `b` in parallel (rayon's join), or one after the other when the global
/// parallelism is `Seq` (packed sweeps). No heap allocation either way.
pub fn both<A: Send, B: Send>(
    a: impl FnOnce() -> A + Send,
    b: impl FnOnce() -> B + Send,
) -> (A, B) {
    if parallel() {
        rayon::join(a, b)
    } else {
        (a(), b())
    }
}

wide! {
/// z += b (per feature) and h = σ(z) (+ skip), for z, h, skip of `out` features × n, stored
/// feature-major or (`sample_major`) sample-major. Sample-major only: with `track`, the pieces' bits
/// brought up to date word by word while z is in L1 ([`rows::Track`]).
#[allow(clippy::too_many_arguments)]
pub fn bias_act_forward<T: Real>(
    act: &ActKind,
    slope: T,
    b: &[T],
    z: &mut [T],
    h: &mut [T],
    skip: Option<&[T]>,
    out: usize,
    sample_major: bool,
    track: Option<rows::Track<'_>>,
) {
    let zero = T::default();
    assert!(sample_major || track.is_none(), "engine: fused bit tracking is sample-major only");
    let args = (b, z, h, skip, out, sample_major, track);
    match act {
        ActKind::Leaky(a) => {
            let a = T::from_f64(*a);
            fwd_any(args, move |v| if v > zero { v } else { a * v })
        }
        ActKind::Prelu => fwd_any(args, move |v| if v > zero { v } else { slope * v }),
        ActKind::Relu => fwd_any(args, move |v| if v > zero { v } else { zero }),
        ActKind::General(f) => {
            let s = slope.to_f64();
            fwd_any(args, move |v| T::from_f64(f.value(v.to_f64(), s)))
        }
    }
}
}

/// (b, z, h, skip, out, sample-major, track) of [`bias_act_forward`].
type FwdArgs<'a, T> = (
    &'a [T],
    &'a mut [T],
    &'a mut [T],
    Option<&'a [T]>,
    usize,
    bool,
    Option<rows::Track<'a>>,
);

#[inline(always)]
fn fwd_any<T: Real>(args: FwdArgs<'_, T>, sigma: impl Fn(T) -> T) {
    let (b, z, h, skip, out, sample_major, track) = args;
    if sample_major {
        rows::fwd_rows(b, z, h, skip, out, sigma, track)
    } else {
        fwd(b, z, h, skip, out, sigma)
    }
}

#[inline(always)]
fn fwd<T: Real>(
    b: &[T],
    z: &mut [T],
    h: &mut [T],
    skip: Option<&[T]>,
    out: usize,
    sigma: impl Fn(T) -> T,
) {
    let cols = z.chunks_exact_mut(out).zip(h.chunks_exact_mut(out));
    match skip {
        None => {
            for (zcol, hcol) in cols {
                for ((zv, hv), &bv) in zcol.iter_mut().zip(hcol.iter_mut()).zip(b) {
                    *zv += bv;
                    *hv = sigma(*zv);
                }
            }
        }
        Some(s) => {
            // One pass: h = σ(z) + skip (the same two roundings as σ first, then the add).
            for ((zcol, hcol), scol) in cols.zip(s.chunks_exact(out)) {
                for (((zv, hv), &bv), &sv) in zcol.iter_mut().zip(hcol.iter_mut()).zip(b).zip(scol)
                {
                    *zv += bv;
                    *hv = sigma(*zv) + sv;
                }
            }
        }
    }
}

wide! {
/// z += b per feature (the output stage), z feature-major or (`sample_major`) sample-major.
pub fn add_bias<T: Real>(z: &mut [T], b: &[T], out: usize, sample_major: bool) {
    if sample_major {
        return rows::add_bias_rows(z, b, out);
    }
    for col in z.chunks_exact_mut(out) {
        for (v, &bv) in col.iter_mut().zip(b) {
            *v += bv;
        }
    }
}
}

wide! {
/// L = c‖u − y‖² (accumulated in f64) and the cotangent 2c(u − y) into `cot[..u.len()]`.
pub fn loss_cotangent<T: Real>(u: &[T], y: &[T], cot: &mut [T], c: f64) -> f64 {
    let two_c = T::from_f64(2.0 * c);
    let mut sse = 0.0f64;
    for ((g, &ui), &yi) in cot[..u.len()].iter_mut().zip(u).zip(y) {
        let e = ui - yi;
        let e64 = e.to_f64();
        sse += e64 * e64;
        *g = two_c * e;
    }
    c * sse
}
}

wide! {
/// gb = Σ over columns of g (`out` features × cols, feature-major or (`sample_major`) sample-major),
/// through partial sums over chunks of `cols_per_chunk` columns.
pub fn row_sums<T: Real>(g: &[T], out: usize, cols_per_chunk: usize, partial: &mut [T], gb: &mut [T], sample_major: bool) {
    if sample_major {
        let nch = rows::chunk_row_sums(g, out, cols_per_chunk, partial);
        return combine(&partial[..nch * out], out, nch, gb, None);
    }
    let cs = cols_per_chunk * out;
    let nch = g.len().div_ceil(cs);
    let partial = &mut partial[..nch * out];
    partial.iter_mut().for_each(|v| *v = T::default());
    for (k, gc) in g.chunks(cs).enumerate() {
        let pc = &mut partial[k * out..(k + 1) * out];
        for col in gc.chunks_exact(out) {
            for (p, &v) in pc.iter_mut().zip(col) {
                *p += v;
            }
        }
    }
    combine(partial, out, nch, gb, None);
}
}

pub fn combine<T: Real>(partial: &[T], w: usize, nch: usize, gb: &mut [T], mut gs: Option<&mut T>) {
    gb.iter_mut().for_each(|v| *v = T::default());
    if let Some(s) = gs.as_deref_mut() {
        *s = T::default();
    }
    for k in 0..nch {
        let pc = &partial[k * w..(k + 1) * w];
        for (g, &p) in gb.iter_mut().zip(pc) {
            *g += p;
        }
        if let Some(s) = gs.as_deref_mut() {
            *s += pc[w - 1];
        }
    }
}

wide! {
/// z_bar = h_bar ⊙ σ'(z) over the given columns (feature-major or, `sample_major`, sample-major); partial row k (out + 1 wide) of `partial` receives
/// chunk k's Σ_columns z_bar and, for PReLU, Σ h_bar ⊙ min(z, 0) (∂σ/∂a) in its last entry.
#[allow(clippy::too_many_arguments)]
pub fn act_backward<T: Real>(
    act: &ActKind,
    slope: T,
    z: &[T],
    h_bar: &[T],
    z_bar: &mut [T],
    out: usize,
    cols_per_chunk: usize,
    partial: &mut [T],
    sample_major: bool,
) {
    let zero = T::default();
    let one = T::one();
    let args = (z, h_bar, z_bar, out, cols_per_chunk, partial, sample_major);
    match act {
        ActKind::Leaky(a) => {
            let a = T::from_f64(*a);
            bwd_any(args, move |v| if v > zero { one } else { a }, false)
        }
        ActKind::Prelu => bwd_any(args, move |v| if v > zero { one } else { slope }, true),
        ActKind::Relu => bwd_any(args, move |v| if v > zero { one } else { zero }, false),
        ActKind::General(f) => {
            let s = slope.to_f64();
            bwd_any(
                args,
                move |v| T::from_f64(f.derivative(v.to_f64(), s)),
                false,
            )
        }
    }
}
}

wide! {
/// [`act_backward`] for σ with [`ActKind::below_slope`] `lo`, sample-major, from the pieces'
/// bits instead of z: z_bar = h_bar where the bit (z > 0) is set, lo·h_bar elsewhere — the same products,
/// hence the same z_bar and partial sums bit for bit. `bits` holds ⌈cols/64⌉ words a feature row.
pub fn act_backward_bits<T: Real>(
    lo: T,
    bits: &[u64],
    h_bar: &[T],
    z_bar: &mut [T],
    out: usize,
    cols_per_chunk: usize,
    partial: &mut [T],
) {
    rows::bwd_rows_bits(lo, bits, h_bar, z_bar, out, cols_per_chunk, partial)
}
}

type BwdArgs<'a, T> = (
    &'a [T],
    &'a [T],
    &'a mut [T],
    usize,
    usize,
    &'a mut [T],
    bool,
);

#[inline(always)]
fn bwd_any<T: Real>(args: BwdArgs<'_, T>, dsigma: impl Fn(T) -> T, prelu: bool) {
    let (z, h_bar, z_bar, out, cols_per_chunk, partial, sample_major) = args;
    if sample_major {
        rows::bwd_rows(z, h_bar, z_bar, out, cols_per_chunk, partial, dsigma, prelu)
    } else {
        bwd(z, h_bar, z_bar, out, cols_per_chunk, partial, dsigma, prelu)
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn bwd<T: Real>(
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
    let cs = cols_per_chunk * out;
    for (k, ((zz, hh), zc)) in z
        .chunks(cs)
        .zip(h_bar.chunks(cs))
        .zip(z_bar.chunks_mut(cs))
        .enumerate()
    {
        let pc = &mut partial[k * (out + 1)..(k + 1) * (out + 1)];
        pc.iter_mut().for_each(|v| *v = zero);
        let (p_bar, ps) = pc.split_at_mut(out);
        let mut sl = zero;
        for ((zcol, hcol), zbcol) in zz
            .chunks_exact(out)
            .zip(hh.chunks_exact(out))
            .zip(zc.chunks_exact_mut(out))
        {
            for (((&zv, &hv), g), p) in zcol
                .iter()
                .zip(hcol)
                .zip(zbcol.iter_mut())
                .zip(p_bar.iter_mut())
            {
                let d = hv * dsigma(zv);
                *g = d;
                *p += d;
                if prelu && zv < zero {
                    sl += hv * zv;
                }
            }
        }
        ps[0] = sl;
    }
}

/// The piece of σ each value sits in (index among the kink points), written to `out`
/// (`out.len() == z.len()`) in the feature-major entry order; z of `feats` features is stored
/// feature-major or (`sample_major`) sample-major.
pub fn pieces_into<T: Real>(
    z: &[T],
    kinks: &[f64],
    out: &mut [u16],
    feats: usize,
    sample_major: bool,
) {
    if sample_major {
        let piece = |v: T| kinks.partition_point(|&b| b < v.to_f64()) as u16;
        return rows::pieces_rows(z, feats, out, piece);
    }
    if kinks == [0.0] {
        let zero = T::default();
        for (o, &v) in out.iter_mut().zip(z) {
            *o = (v > zero) as u16;
        }
    } else {
        for (o, &v) in out.iter_mut().zip(z) {
            *o = kinks.partition_point(|&b| b < v.to_f64()) as u16;
        }
    }
}

wide! {
/// For σ with one kink point at `kink`: bit i of `words` set ⇔ z_i > kink (the piece index
/// `pieces_into` would give), 64 entries a word, in the feature-major entry order (z of `feats`
/// features stored feature-major or, `sample_major`, sample-major); unused high bits of the last word
/// are 0.
pub fn piece_bits_into<T: Real>(z: &[T], kink: f64, words: &mut [u64], feats: usize, sample_major: bool) {
    let exact = T::from_f64(kink);
    match (exact.to_f64() == kink, sample_major) {
        (true, false) => pack_bits(z, words, move |v| v > exact),
        (false, false) => pack_bits(z, words, move |v| v.to_f64() > kink),
        (true, true) => rows::pack_bits_rows(z, feats, words, move |v| v > exact),
        (false, true) => rows::pack_bits_rows(z, feats, words, move |v| v.to_f64() > kink),
    }
}
}

/// The bits above(v) of up to 64 values (bit i for `chunk[i]`; the rest 0).
#[inline(always)]
pub(super) fn pack_word<T: Real>(chunk: &[T], above: impl Fn(T) -> bool) -> u64 {
    let mut bits = 0u64;
    if let Ok(full) = <&[T; 64]>::try_from(chunk) {
        // A fixed 64-lane loop: vector compares and mask moves.
        for (i, &v) in full.iter().enumerate() {
            bits |= (above(v) as u64) << i;
        }
    } else {
        for (i, &v) in chunk.iter().enumerate() {
            bits |= (above(v) as u64) << i;
        }
    }
    bits
}

/// Bit i of `words` = above(z_i), 64 a word ([`pack_word`]); unused high bits of the last word
/// 0.
#[inline(always)]
pub(super) fn pack_bits<T: Real>(z: &[T], words: &mut [u64], above: impl Fn(T) -> bool) {
    for (w, chunk) in words.iter_mut().zip(z.chunks(64)) {
        *w = pack_word(chunk, &above);
    }
}

/// Features a [`weighted_sum`] holds in registers at a time.
const SUM_BLOCK: usize = 16;

wide! {
/// dst (+)= Σ_q a_q x_q over `terms` (a_q, x_q), each x_q at least dst's length; with `add`
/// onto dst's values, else onto 0. Per element the terms are added in order, one product at a
/// time (the sums a term-by-term y += a·x gives, bit for bit), but a block of
/// [`SUM_BLOCK`] features at a time in registers: dst is read and written once, not once per
/// term.
pub fn weighted_sum<T: Real>(dst: &mut [T], terms: &[(T, &[T])], add: bool) {
    let full = dst.len() / SUM_BLOCK * SUM_BLOCK;
    let mut blocks = dst.chunks_exact_mut(SUM_BLOCK);
    for (b, d) in blocks.by_ref().enumerate() {
        let d: &mut [T; SUM_BLOCK] = d.try_into().expect("a whole block");
        let mut acc = if add { *d } else { [T::default(); SUM_BLOCK] };
        for &(a, x) in terms {
            let x: &[T; SUM_BLOCK] = x[b * SUM_BLOCK..(b + 1) * SUM_BLOCK]
                .try_into()
                .expect("a whole block");
            for l in 0..SUM_BLOCK {
                acc[l] += a * x[l];
            }
        }
        *d = acc;
    }
    let d = blocks.into_remainder();
    if !add {
        d.iter_mut().for_each(|v| *v = T::default());
    }
    for &(a, x) in terms {
        for (o, &v) in d.iter_mut().zip(&x[full..]) {
            *o += a * v;
        }
    }
}
}

wide! {
/// dst = Σ_k parts[k].g[off..off + dst.len()] element-wise, added in k order; returns Σ dst² (in
/// f64, on 8 fixed lanes: lane j takes the entries i ≡ j mod 8, in order, and the lanes are
/// added in order — the same on every run and thread).
pub fn sum_into<T: Real>(dst: &mut [T], parts: &[Part<T>], off: usize) -> f64 {
    // Blocks of 64 entries: the block is summed part by part while it stays in L1, each pass
    // an element-wise loop (vectorised); the squares go to the lanes by whole groups of 8
    // ([`lane_sums`]).
    const BLOCK: usize = 64;
    let mut lanes = [0.0f64; 8];
    for (b, d) in dst.chunks_mut(BLOCK).enumerate() {
        let r = off + b * BLOCK..off + b * BLOCK + d.len();
        d.copy_from_slice(&parts[0].g[r.clone()]);
        for part in &parts[1..] {
            for (o, &v) in d.iter_mut().zip(&part.g[r.clone()]) {
                *o += v;
            }
        }
        lane_sums(&mut lanes, d, |v: T| {
            let v = v.to_f64();
            v * v
        });
    }
    lanes.iter().sum()
}
}

/// lanes[i mod L] += f(v[i]) in order of i (v starting at a multiple of L): sums on fixed
/// lanes, the same order on every run and thread. The lanes are one value, updated a whole
/// group at a time, so they stay in vector registers for the loop. (An earlier form hid L
/// from the optimiser to get a vector loop at all; its lanes then lived in memory, each
/// group's add waiting on the previous group's store.)
#[inline(always)]
pub(super) fn lane_sums<const L: usize, A, T: Copy>(lanes: &mut [A; L], v: &[T], f: impl Fn(T) -> A)
where
    A: Copy + std::ops::Add<Output = A>,
{
    let (groups, rest) = v.as_chunks::<L>();
    let mut acc = *lanes;
    for c in groups {
        acc = std::array::from_fn(|i| acc[i] + f(c[i]));
    }
    // The rest (< L values) in the same register-wide form: a masked store into `lanes`
    // read back whole would stall the load.
    *lanes = std::array::from_fn(|i| match rest.get(i) {
        Some(&x) => acc[i] + f(x),
        None => acc[i],
    });
}

wide! {
/// One GD step θ −= lr·g.
pub fn step_into<T: Real>(theta: &mut [T], grad: &[T], lr: T) {
    for (t, &g) in theta.iter_mut().zip(grad) {
        *t -= lr * g;
    }
}
}
