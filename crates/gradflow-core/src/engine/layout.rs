//! [`Layout`]: how a part stores its (features × samples) buffers, and matrix views of them.

use super::{Plan, Prop, Real};
use faer::{MatMut, MatRef};

/// How a part stores its (features × samples) activations, inputs and targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Column-major: one sample's features contiguous. Graph propagation gathers whole
    /// samples, so plans that propagate (GCN) use this.
    Features,
    /// Row-major: one feature's samples contiguous. faer tiles the samples (250 a part) in the
    /// forward and input-cotangent products instead of the features, which wastes less of its
    /// tiles when a width is just above a multiple of them (ResNet's 100 = 96 + 4 in f32) or
    /// small (DNN [50, 50]).
    Samples,
}

impl Layout {
    /// Samples for plans that never mix samples, Features otherwise.
    pub fn preferred(plan: &Plan) -> Self {
        if plan.stages.iter().all(|s| s.prop == Prop::None) {
            Self::Samples
        } else {
            Self::Features
        }
    }
}

/// A (rows × cols) buffer as a matrix: column-major, or row-major when `sample_major`.
pub(crate) fn view<T: Real>(
    s: &[T],
    rows: usize,
    cols: usize,
    sample_major: bool,
) -> MatRef<'_, T> {
    let s = &s[..rows * cols];
    if sample_major {
        MatRef::from_row_major_slice(s, rows, cols)
    } else {
        MatRef::from_column_major_slice(s, rows, cols)
    }
}
/// [`view`], mutable.
pub(crate) fn view_mut<T: Real>(
    s: &mut [T],
    rows: usize,
    cols: usize,
    sample_major: bool,
) -> MatMut<'_, T> {
    let s = &mut s[..rows * cols];
    if sample_major {
        MatMut::from_row_major_slice_mut(s, rows, cols)
    } else {
        MatMut::from_column_major_slice_mut(s, rows, cols)
    }
}
