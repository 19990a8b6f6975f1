//! [`Real`]: the float types the engine trains in (f64, f32), and conversions from f64.

use crate::config::Precision;
use crate::oracle::ThetaView;

/// The float types the engine trains in.
pub trait Real:
    faer::traits::RealField
    + faer::traits::Conjugate<Canonical = Self>
    + Copy
    + Send
    + Sync
    + Default
    + PartialOrd
    + std::fmt::Debug
    + 'static
{
    /// The training precision this type stands for.
    const PRECISION: Precision;
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
    /// θ in this type as the GD loop's observer sees it (in f64: θ itself, no copy).
    fn view(theta: &[Self]) -> ThetaView<'_>;
}

impl Real for f64 {
    const PRECISION: Precision = Precision::F64;
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
    fn view(theta: &[Self]) -> ThetaView<'_> {
        ThetaView::of(theta)
    }
}

impl Real for f32 {
    const PRECISION: Precision = Precision::F32;
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn view(theta: &[Self]) -> ThetaView<'_> {
        ThetaView::of_f32(theta)
    }
}

/// Converts a whole slice.
pub fn convert<T: Real>(src: &[f64]) -> Vec<T> {
    src.iter().map(|&v| T::from_f64(v)).collect()
}
