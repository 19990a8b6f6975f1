//! [`Part`]: the buffers one column part of the samples owns for a whole run (inputs, targets,
//! pre-activations, outputs, cotangent scratch, its gradient contribution), and the pieces'
//! bits a part keeps ([`StageBits`]).

use super::*;

/// The buffers of one column part (samples `c0..c0 + cols`), each features × cols in the
/// engine's [`Layout`] (the bits in the feature-major entry order either way). The parts share nothing mutable, so each can run on any thread; only graph
/// propagation reads the other parts' buffers.
pub(crate) struct Part<T> {
    pub(super) c0: usize,
    pub(super) cols: usize,
    /// Inputs X, or ÂX when the first stage propagates its input.
    pub(super) x: Vec<T>,
    pub(super) y: Vec<T>,
    /// Per stage: pre-activation z (out × cols); the last stage's is the output u. Empty for
    /// the hidden stages when σ' is read off the bits ([`Engine`]'s `sigma_bits`).
    pub(super) z: Vec<Vec<T>>,
    /// With σ' read off the bits: the hidden stages' z, one at a time (max width × cols).
    pub(super) zs: Vec<T>,
    /// Per stage but the last: the stage's output h (out × cols).
    pub(super) h: Vec<Vec<T>>,
    /// Per stage but the last: the pieces as bits (written by forward passes when the engine
    /// records pieces).
    pub(super) bits: Vec<StageBits>,
    /// Per stage: Â·src (Before) or W·src (After); empty otherwise.
    pub(super) propagated: Vec<Vec<T>>,
    /// Backward scratch, max width × cols each: Z̄ of the current stage and of the next.
    pub(super) z_bar: Vec<T>,
    pub(super) z_bar_next: Vec<T>,
    pub(super) h_bar: Vec<T>,
    pub(super) p_bar: Vec<T>,
    /// Spares for z_bar and p_bar: a propagation takes every part's z_bar (or p_bar) out for its join and
    /// leaves the spare in its place (`mixing.rs`).
    pub(super) z_bar_spare: Vec<T>,
    pub(super) p_bar_spare: Vec<T>,
    /// Per-chunk partial sums for bias and slope cotangents (this part's chunks).
    pub(super) partial: Vec<T>,
    /// This part's gradient contribution (p long), summed over the parts in a fixed order
    /// after the epoch.
    pub(super) g: Vec<T>,
    pub(super) loss: f64,
}

impl<T: Real> Part<T> {
    /// A part of columns `c0..c0 + cols`; hidden stages keep their z when `keep_z`.
    pub(super) fn new(
        plan: &Plan,
        x: &[T],
        y: &[T],
        (c0, cols): (usize, usize),
        chunk_cols: usize,
        sample_major: bool,
        keep_z: bool,
    ) -> Self {
        let (d, m) = (plan.in_dim(), plan.out_dim());
        // This part's columns of a feature-major (w × n) array, in the engine's layout.
        let own = |a: &[T], w: usize| -> Vec<T> {
            let block = &a[c0 * w..(c0 + cols) * w];
            if !sample_major {
                return block.to_vec();
            }
            (0..w * cols)
                .map(|i| block[(i % cols) * w + i / cols])
                .collect()
        };
        let last = plan.stages.len() - 1;
        let wmax = plan.max_width();
        let buf = |w: usize| vec![T::default(); w * cols];
        Self {
            c0,
            cols,
            x: own(x, d),
            y: own(y, m),
            z: plan
                .stages
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    if keep_z || i == last {
                        buf(s.out)
                    } else {
                        Vec::new()
                    }
                })
                .collect(),
            zs: if keep_z { Vec::new() } else { buf(wmax) },
            h: plan.stages[..last].iter().map(|s| buf(s.out)).collect(),
            bits: plan.stages[..last]
                .iter()
                .map(|s| StageBits {
                    fm: vec![0; (s.out * cols).div_ceil(64)],
                    sample_major: if sample_major {
                        vec![0; s.out * cols.div_ceil(64)]
                    } else {
                        Vec::new()
                    },
                })
                .collect(),
            propagated: plan
                .stages
                .iter()
                .enumerate()
                .map(|(i, s)| match s.prop {
                    Prop::Before if i > 0 => buf(s.inp),
                    Prop::After => buf(s.out),
                    _ => Vec::new(),
                })
                .collect(),
            z_bar: buf(wmax),
            z_bar_next: buf(wmax),
            h_bar: buf(wmax),
            p_bar: buf(wmax),
            z_bar_spare: buf(wmax),
            p_bar_spare: buf(wmax),
            partial: vec![T::default(); cols.div_ceil(chunk_cols) * (wmax + 1)],
            g: vec![T::default(); plan.num_params()],
            loss: 0.0,
        }
    }
}

/// One stage's pieces as bits (z above σ's single kink), kept by one part.
pub(crate) struct StageBits {
    /// Bit c·out + f ⇔ z(f, c) above the kink: the feature-major entry order (the tracker's),
    /// 64 entries a word, unused high bits 0.
    pub(super) fm: Vec<u64>,
    /// Sample-major layout only: the same bits row by row (feature f's samples in words
    /// f·⌈cols/64⌉..), as of the last recording. A recording compares the new row words with
    /// these and toggles only the changed entries in `fm` — the transposition costs in
    /// proportion to the crossings, and the two always describe the same pieces.
    pub(super) sample_major: Vec<u64>,
}
