//! Axes in drawing units (log10 of the value on a log axis): the range covering the data, padded
//! and never empty; the ticks, chosen here because plotters' own log ticks are poor over less than
//! a decade; and the tick labels. [`AxisCoord`] hands the range and ticks to plotters.

use super::format::{decade_label, fmt_g, trim_zeros};
use plotters::prelude::*;

/// One axis in drawing units (log10 of the value on a log axis).
#[derive(Clone, Debug)]
pub(super) struct Axis {
    log: bool,
    pub(super) lo: f64,
    pub(super) hi: f64,
    bold: Vec<f64>,
    light: Vec<f64>,
    /// Tick spacing of a linear axis (for label precision).
    step: f64,
}

impl Axis {
    pub(super) fn fwd(log: bool, v: f64) -> f64 {
        match (log, v.is_finite()) {
            (_, false) => f64::NAN,
            (true, _) if v > 0.0 => v.log10(),
            (true, _) => f64::NAN,
            (false, _) => v,
        }
    }

    /// An axis covering `data` (drawing units, finite), padded by `pad` of the span.
    pub(super) fn new(log: bool, data: Option<(f64, f64)>, pad: f64) -> Self {
        let (dlo, dhi) = data.unwrap_or(if log { (-1.0, 1.0) } else { (0.0, 1.0) });
        let (dlo, dhi) = (dlo.clamp(-1e300, 1e300), dhi.clamp(-1e300, 1e300));
        let span = dhi - dlo;
        let (mut lo, mut hi) = (dlo, dhi);
        if span <= 1e-12 * dlo.abs().max(dhi.abs()).max(1.0) {
            let d = if log {
                0.5
            } else if dlo == 0.0 {
                1.0
            } else {
                0.1 * dlo.abs()
            };
            lo -= d;
            hi += d;
        } else {
            lo -= pad * span;
            hi += pad * span;
        }
        if !log && dlo >= 0.0 && lo < 0.0 {
            lo = 0.0; // keep a non-negative axis (epochs, time) starting at 0
        }
        let (bold, light, step) = if log {
            log_ticks(lo, hi)
        } else {
            linear_ticks(lo, hi)
        };
        Self {
            log,
            lo,
            hi,
            bold,
            light,
            step,
        }
    }

    pub(super) fn label(&self, u: f64) -> String {
        if self.log {
            let k = u.round();
            if (u - k).abs() < 1e-6 {
                return decade_label(k as i32);
            }
            fmt_g(10f64.powf(u), 3)
        } else {
            let v = if u.abs() < self.step * 1e-9 { 0.0 } else { u };
            let big = v.abs() >= 1e5 || (v != 0.0 && v.abs() < 1e-3);
            if big || !(self.step.is_finite() && self.step > 0.0) {
                fmt_g(v, 4)
            } else {
                let dec = (-self.step.log10().floor()).max(0.0) as usize;
                trim_zeros(&format!("{v:.dec$}"))
            }
        }
    }

    pub(super) fn contains(&self, u: f64) -> bool {
        u >= self.lo && u <= self.hi
    }

    pub(super) fn coord(&self) -> AxisCoord {
        AxisCoord {
            lo: self.lo,
            hi: self.hi,
            bold: self.bold.clone(),
            light: self.light.clone(),
        }
    }
}

/// A linear plotters coordinate with the ticks chosen here (plotters' `WithKeyPoints` over f64
/// cannot take a label formatter).
pub(super) struct AxisCoord {
    lo: f64,
    hi: f64,
    bold: Vec<f64>,
    light: Vec<f64>,
}

impl Ranged for AxisCoord {
    type FormatOption = plotters::coord::ranged1d::DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let t = (v - self.lo) / (self.hi - self.lo);
        let t = if t.is_finite() {
            t.clamp(-100.0, 100.0)
        } else {
            0.5
        };
        limit.0 + (t * (limit.1 - limit.0) as f64).round() as i32
    }

    fn key_points<H: plotters::coord::ranged1d::KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            self.light.clone()
        } else {
            self.bold.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

/// 1, 2 or 5 × 10^k, about `span / target`.
fn nice_step(span: f64, target: f64) -> f64 {
    let raw = span / target;
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let mag = 10f64.powf(raw.log10().floor());
    let n = raw / mag;
    mag * if n < 1.5 {
        1.0
    } else if n < 3.5 {
        2.0
    } else if n < 7.5 {
        5.0
    } else {
        10.0
    }
}

/// Ticks at multiples of a nice step (bold) and of a fifth of it (light).
fn linear_ticks(lo: f64, hi: f64) -> (Vec<f64>, Vec<f64>, f64) {
    let step = nice_step(hi - lo, 6.0);
    let multiples = |s: f64| -> Vec<f64> {
        let first = (lo / s).ceil();
        (0..200)
            .map(|i| (first + i as f64) * s)
            .take_while(|v| *v <= hi + s * 1e-9)
            .map(|v| {
                if v.abs() < s * 1e-9 {
                    0.0
                } else {
                    v.clamp(lo, hi)
                }
            })
            .collect()
    };
    let bold = multiples(step);
    let light = multiples(step / 5.0)
        .into_iter()
        .filter(|v| bold.iter().all(|b| (b - v).abs() > step * 1e-6))
        .collect();
    (bold, light, step)
}

/// Ticks of a log axis given in log10 units: decades when the range spans several, else 1-2-5
/// multiples, else (less than about half a decade) nice linear values.
fn log_ticks(lo: f64, hi: f64) -> (Vec<f64>, Vec<f64>, f64) {
    let decades: Vec<i64> = ((lo.ceil() as i64)..=(hi.floor() as i64)).collect();
    let (mut bold, mut light) = (Vec::new(), Vec::new());
    if decades.len() >= 3 {
        let stride = decades.len().div_ceil(8) as i64;
        for &d in &decades {
            if d.rem_euclid(stride) == 0 {
                bold.push(d as f64);
            } else {
                light.push(d as f64);
            }
        }
        if decades.len() <= 6 {
            for d in (lo.floor() as i64)..=(hi.ceil() as i64) {
                for m in 2..10 {
                    let u = d as f64 + (m as f64).log10();
                    if u >= lo && u <= hi {
                        light.push(u);
                    }
                }
            }
        }
        return (bold, light, 1.0);
    }
    for d in (lo.floor() as i64)..=(hi.ceil() as i64) {
        for m in 1..10 {
            let u = d as f64 + (m as f64).log10();
            if u < lo || u > hi {
                continue;
            }
            if matches!(m, 1 | 2 | 5) {
                bold.push(u);
            } else {
                light.push(u);
            }
        }
    }
    if bold.len() < 3 {
        let (v, _, step) = linear_ticks(10f64.powf(lo), 10f64.powf(hi));
        bold = v.into_iter().filter(|x| *x > 0.0).map(f64::log10).collect();
        light.clear();
        return (bold, light, step);
    }
    (bold, light, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_cover_degenerate_and_wide_ranges() {
        // All-equal values are padded; ticks exist and lie in range.
        for log in [false, true] {
            for data in [
                None,
                Some((3.0, 3.0)),
                Some((0.0, 0.0)),
                Some((-5.0, 250.0)),
                Some((-300.0, 10.0)),
            ] {
                let a = Axis::new(log, data, 0.05);
                assert!(a.lo < a.hi, "{log} {data:?}");
                assert!(!a.bold.is_empty(), "{log} {data:?}");
                assert!(
                    a.bold.iter().all(|u| a.contains(*u)),
                    "{log} {data:?} {:?}",
                    a.bold
                );
                assert!(a.bold.len() <= 12, "{log} {data:?} {:?}", a.bold);
                for u in &a.bold {
                    assert!(!a.label(*u).is_empty());
                }
            }
        }
        // Less than a decade on a log axis: 1-2-5 or linear ticks, never none.
        let (b, _, _) = log_ticks(0.1f64.log10(), 0.3f64.log10());
        assert!(b.len() >= 2, "{b:?}");
        let a = Axis::new(false, Some((0.0, 3000.0)), 0.02);
        assert_eq!(a.lo, 0.0);
        assert_eq!(a.label(1000.0), "1000");
    }
}
