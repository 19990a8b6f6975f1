//! The threshold ablation's two figures ("almost surely", measured): the fraction of
//! initialisations whose Jacobian is a persistent exact rank deficiency (a counterexample to
//! Lemma 3.2) against p/nm, one line per architecture; and λ_min(H(0)) = σ_min(J)² from the SVD
//! of J against p/nm, one marker per initialisation, exactly deficient ones as × on a floor.

use super::figure::{palette, Figure, Mark, RefLine, Series, Style, GREY};
use crate::experiment::ThresholdRecord;

/// Architectures in drawing order, each with its colour.
fn archs(t: &ThresholdRecord) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in &t.points {
        if !out.contains(&p.arch) {
            out.push(p.arch.clone());
        }
    }
    out
}

/// Fraction of counterexamples per (architecture, width/depth) against p/nm.
pub fn counterexample_fraction_figure(t: &ThresholdRecord) -> Figure {
    let mut fig = Figure::new(
        "Lemma 3.2 measured: share of initialisations with a persistent exact rank deficiency",
        "p / nm",
        "fraction of seeds that are counterexamples",
        false,
        false,
    );
    fig.vlines.push(RefLine {
        at: 1.0,
        label: "p = nm".into(),
    });
    fig.y_range = Some((-0.02, 1.02));
    for (i, arch) in archs(t).iter().enumerate() {
        let mut values: Vec<usize> = t
            .points
            .iter()
            .filter(|p| &p.arch == arch)
            .map(|p| p.value)
            .collect();
        values.sort_unstable();
        values.dedup();
        let mut pts = Vec::new();
        for v in values {
            let group: Vec<_> = t
                .points
                .iter()
                .filter(|p| &p.arch == arch && p.value == v)
                .collect();
            let bad = group.iter().filter(|p| p.counterexample).count();
            pts.push((group[0].p_over_nm, bad as f64 / group.len() as f64));
        }
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        fig.series.push(Series::new(
            Some(arch.clone()),
            palette(i),
            Style::LineMarks(Mark::Circle),
            pts,
        ));
    }
    fig
}

/// λ_min(H(0)) by the SVD of J against p/nm; exactly rank-deficient J as × on a floor.
pub fn svd_lambda_min_figure(t: &ThresholdRecord) -> Figure {
    let mut fig = Figure::new(
        "λ_min(H(0)) = σ_min(J)² by the SVD of J, per initialisation",
        "p / nm",
        "λ_min(H(0)) (log scale)",
        false,
        true,
    );
    fig.vlines.push(RefLine {
        at: 1.0,
        label: "p = nm".into(),
    });
    let positive = t
        .points
        .iter()
        .filter(|p| !p.exact_deficient && p.lambda_min > 0.0)
        .map(|p| p.lambda_min);
    let lowest = positive.fold(f64::INFINITY, f64::min);
    let floor = if lowest.is_finite() {
        lowest / 100.0
    } else {
        1e-30
    };
    let mut floored = false;
    for (i, arch) in archs(t).iter().enumerate() {
        let mine = t.points.iter().filter(|p| &p.arch == arch);
        let (bad, good): (Vec<_>, Vec<_>) =
            mine.partition(|p| p.exact_deficient || p.lambda_min <= 0.0);
        fig.series.push(Series::new(
            Some(arch.clone()),
            palette(i),
            Style::Marks(Mark::Circle),
            good.iter().map(|p| (p.p_over_nm, p.lambda_min)).collect(),
        ));
        if !bad.is_empty() {
            floored = true;
            fig.series.push(Series::new(
                None,
                palette(i),
                Style::Marks(Mark::Cross),
                bad.iter().map(|p| (p.p_over_nm, floor)).collect(),
            ));
        }
    }
    if floored {
        fig.hlines.push(RefLine {
            at: floor,
            label: "× : J exactly rank-deficient (λ_min = 0)".into(),
        });
        fig.series.push(Series::key(
            "× exactly rank-deficient",
            GREY,
            Style::Marks(Mark::Cross),
        ));
    }
    fig
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::ThresholdPoint;

    fn point(arch: &str, value: usize, seed: u64, ratio: f64, bad: bool) -> ThresholdPoint {
        ThresholdPoint {
            arch: arch.into(),
            value,
            seed,
            p: (ratio * 500.0) as usize,
            nm: 500,
            p_over_nm: ratio,
            rank: if bad { 400 } else { 500 },
            rank_full: 500,
            rank_gap: bad.then_some(1e11),
            exact_deficient: bad,
            persistent: bad.then_some(true),
            counterexample: bad,
            lambda_min: if bad { 1e-33 } else { 1e-6 },
            lambda_max: 10.0,
            constant_units: 0,
            witness: None,
        }
    }

    #[test]
    fn fractions_count_counterexamples_per_width() {
        let t = ThresholdRecord {
            seeds: 4,
            points: vec![
                point("dnn", 13, 0, 1.05, true),
                point("dnn", 13, 1, 1.05, false),
                point("dnn", 13, 2, 1.05, true),
                point("dnn", 13, 3, 1.05, true),
                point("dnn", 20, 0, 1.9, false),
                point("dnn", 20, 1, 1.9, false),
                point("resnet", 4, 0, 1.1, false),
            ],
        };
        let fig = counterexample_fraction_figure(&t);
        assert_eq!(fig.series.len(), 2);
        assert_eq!(fig.series[0].points, vec![(1.05, 0.75), (1.9, 0.0)]);
        assert_eq!(fig.series[1].points, vec![(1.1, 0.0)]);
        let svd = svd_lambda_min_figure(&t);
        // Three deficient dnn seeds drawn on the floor, a hundredth of the least positive λ_min.
        let floored: Vec<_> = svd
            .series
            .iter()
            .filter(|s| s.style == Style::Marks(Mark::Cross) && !s.points.is_empty())
            .flat_map(|s| s.points.clone())
            .collect();
        assert_eq!(floored.len(), 3);
        assert!(floored.iter().all(|p| (p.1 - 1e-8).abs() < 1e-20));
    }
}
