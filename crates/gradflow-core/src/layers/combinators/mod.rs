//! Branching combinators (as in JAX's `stax`: `FanOut` + `FanInConcat`, `parallel`) for U-Nets and
//! Siamese networks — the "sums, concatenation, shared weights" of the paper's applicability list:
//!
//! - [`FanOutConcat`]: every branch sees the same input; outputs are concatenated along features.
//!   With channel-major (c, h, w) image features this is exactly `torch.cat(dim=1)` of a U-Net's
//!   skip connection. Tensors `branches.{i}.<name>`.
//! - [`Parallel`]: the input features are split into consecutive slices, part i maps its slice,
//!   outputs are concatenated. Tensors `parts.{i}.<name>`.
//! - [`SharedPair`]: input [a; b] (2·d features), one tower f with shared weights applied to both
//!   halves, combined as |f(a) − f(b)| (element-wise) or [f(a); f(b)]. The tower's tensors appear
//!   once, as `tower.<name>`; its θ̄ accumulates both halves (the reason `vjp` adds).
//!
//! Each overrides `vjp_gram` to recurse (children own disjoint θ blocks, so their Grams add —
//! except in `SharedPair`, where both halves share θ and the cross terms are kept exactly),
//! and forwards `visit_pre_activations`, `locate_non_finite`, `children` and `mixes_samples`.
//!
//! One file per combinator; this module holds what they share: tensor-name prefixes and the
//! concatenation and splitting of batches.

mod fan_out_concat;
mod parallel;
mod shared_pair;

pub use fan_out_concat::FanOutConcat;
pub use parallel::Parallel;
pub use shared_pair::{PairCombine, SharedPair};

use super::{Batch, Layer, ParamSpec};

/// `path.sub`, or `sub` at the root (tensor-name convention of `locate_non_finite`).
pub(super) fn join(path: &str, sub: &str) -> String {
    if path.is_empty() {
        sub.to_string()
    } else {
        format!("{path}.{sub}")
    }
}

/// Prefix every tensor name of `layer` with `prefix.`.
pub(super) fn prefixed(layer: &dyn Layer, prefix: &str) -> Vec<ParamSpec> {
    layer
        .param_specs()
        .into_iter()
        .map(|mut s| {
            s.name = format!("{prefix}.{}", s.name);
            s
        })
        .collect()
}

/// Running sums 0, l_0, l_0 + l_1, … of `lens`.
pub(super) fn running_sums(lens: impl Iterator<Item = usize>) -> Vec<usize> {
    let mut o = vec![0];
    for l in lens {
        o.push(o.last().unwrap() + l);
    }
    o
}

/// Concatenation along features: column i is [a_i; b_i; …].
pub(super) fn cat_rows(parts: &[Batch]) -> Batch {
    let n = parts.first().map_or(0, Batch::n);
    let f: usize = parts.iter().map(Batch::features).sum();
    let mut y = Batch::zeros(f, n);
    for i in 0..n {
        let col = y.col_mut(i);
        let mut at = 0;
        for p in parts {
            col[at..at + p.features()].copy_from_slice(p.col(i));
            at += p.features();
        }
    }
    y
}

/// Concatenation along samples: columns of a, then columns of b.
pub(super) fn cat_cols(a: &Batch, b: &Batch) -> Batch {
    assert_eq!(a.features(), b.features());
    let mut data = Vec::with_capacity(a.as_slice().len() + b.as_slice().len());
    data.extend_from_slice(a.as_slice());
    data.extend_from_slice(b.as_slice());
    Batch::from_vec(a.features(), a.n() + b.n(), data)
}

/// The first `n` columns and the rest.
pub(super) fn split_cols(y: &Batch, n: usize) -> (Batch, Batch) {
    let f = y.features();
    let (a, b) = y.as_slice().split_at(f * n);
    (
        Batch::from_vec(f, n, a.to_vec()),
        Batch::from_vec(f, y.n() - n, b.to_vec()),
    )
}

// ------------------------------------------------------------------------------------------------
