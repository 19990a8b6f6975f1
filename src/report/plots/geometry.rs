//! Plane geometry in drawing units: clipping a polyline to the plotting area (so lines leave the
//! chart at its edge instead of being drawn over the axes, and gaps at non-finite points break the
//! line), and decimating long polylines so the SVG stays small while spikes survive.

pub(super) type P = (f64, f64);

#[derive(Clone, Copy, Debug)]
pub(super) struct Rect {
    pub(super) x0: f64,
    pub(super) x1: f64,
    pub(super) y0: f64,
    pub(super) y1: f64,
}

impl Rect {
    pub(super) fn contains(&self, p: P) -> bool {
        p.0 >= self.x0 && p.0 <= self.x1 && p.1 >= self.y0 && p.1 <= self.y1
    }
}

/// Liang–Barsky: the part of segment a–b inside `r`.
fn clip_segment(a: P, b: P, r: &Rect) -> Option<(P, P)> {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let (mut t0, mut t1) = (0.0f64, 1.0f64);
    for (p, q) in [
        (-dx, a.0 - r.x0),
        (dx, r.x1 - a.0),
        (-dy, a.1 - r.y0),
        (dy, r.y1 - a.1),
    ] {
        if p == 0.0 {
            if q < 0.0 {
                return None;
            }
        } else {
            let t = q / p;
            if p < 0.0 {
                if t > t1 {
                    return None;
                }
                t0 = t0.max(t);
            } else {
                if t < t0 {
                    return None;
                }
                t1 = t1.min(t);
            }
        }
    }
    let at = |t: f64| {
        if t == 0.0 {
            a
        } else if t == 1.0 {
            b
        } else {
            (a.0 + t * dx, a.1 + t * dy)
        }
    };
    Some((at(t0), at(t1)))
}

/// Splits a polyline (drawing units, possibly non-finite) into the pieces inside `r`; points
/// without a finite neighbour come back as single dots.
pub(super) fn clip_polyline(points: &[P], r: &Rect) -> (Vec<Vec<P>>, Vec<P>) {
    let (mut lines, mut dots) = (Vec::new(), Vec::new());
    let finite = |p: &P| p.0.is_finite() && p.1.is_finite();
    for run in points.split(|p| !finite(p)) {
        match run {
            [] => {}
            [p] => {
                if r.contains(*p) {
                    dots.push(*p);
                }
            }
            _ => {
                let mut cur: Vec<P> = Vec::new();
                for w in run.windows(2) {
                    match clip_segment(w[0], w[1], r) {
                        Some((a, b)) => {
                            if cur.last() != Some(&a) {
                                if cur.len() > 1 {
                                    lines.push(std::mem::take(&mut cur));
                                }
                                cur = vec![a];
                            }
                            cur.push(b);
                        }
                        None => {
                            if cur.len() > 1 {
                                lines.push(std::mem::take(&mut cur));
                            }
                            cur.clear();
                        }
                    }
                }
                if cur.len() > 1 {
                    lines.push(cur);
                }
            }
        }
    }
    (lines, dots)
}

/// Reduces a long polyline to at most about `max` points, keeping the lowest and highest point of
/// every bucket (so spikes survive) and the last point.
pub fn decimate(points: &[P], max: usize) -> Vec<P> {
    if points.len() <= max.max(4) || points.iter().any(|p| !(p.0.is_finite() && p.1.is_finite())) {
        return points.to_vec();
    }
    let buckets = (max / 2).max(2);
    let size = points.len().div_ceil(buckets);
    let mut out = Vec::with_capacity(2 * buckets + 1);
    for chunk in points.chunks(size) {
        let (mut lo, mut hi) = (0, 0);
        for (i, p) in chunk.iter().enumerate() {
            if p.1 < chunk[lo].1 {
                lo = i;
            }
            if p.1 > chunk[hi].1 {
                hi = i;
            }
        }
        out.push(chunk[lo.min(hi)]);
        if lo != hi {
            out.push(chunk[lo.max(hi)]);
        }
    }
    if out.last() != points.last() {
        out.push(points[points.len() - 1]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping_breaks_lines_at_gaps_and_edges() {
        let r = Rect {
            x0: 0.0,
            x1: 10.0,
            y0: 0.0,
            y1: 10.0,
        };
        let pts = [
            (1.0, 1.0),
            (2.0, 2.0),
            (f64::NAN, f64::NAN),
            (3.0, 3.0),
            (f64::NAN, f64::NAN),
            (4.0, 4.0),
            (20.0, 4.0),
        ];
        let (lines, dots) = clip_polyline(&pts, &r);
        assert_eq!(
            lines,
            vec![vec![(1.0, 1.0), (2.0, 2.0)], vec![(4.0, 4.0), (10.0, 4.0)]]
        );
        assert_eq!(dots, vec![(3.0, 3.0)]);
        assert!(clip_segment((11.0, 0.0), (12.0, 5.0), &r).is_none());
        let (lines, _) = clip_polyline(&[(5.0, 5.0), (5.0, 20.0), (6.0, 20.0), (6.0, 5.0)], &r);
        assert_eq!(lines.len(), 2);
    }

    #[test]
    fn decimation_keeps_extremes_and_ends() {
        let mut pts: Vec<P> = (0..10_000).map(|i| (i as f64, 1.0)).collect();
        pts[5000].1 = 100.0;
        let d = decimate(&pts, 500);
        assert!(d.len() <= 502, "{}", d.len());
        assert!(d.iter().any(|p| p.1 == 100.0));
        assert_eq!(d.first(), pts.first());
        assert_eq!(d.last(), pts.last());
    }
}
