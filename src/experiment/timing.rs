//! How fast a `reproduce` ran against what this machine can do: the training's floating-point
//! work (issue 7's convention, 6·n·p flops per gradient evaluation) over the wall-clock seconds
//! the runs spent training, compared with a large matrix product timed in the same process —
//! the machine's own peak, so the ratio means the same on a laptop and on a cluster node.
//!
//! The NTK checkpoints are f64 eigenvalue work of another kind (block products and small dense
//! algebra); their seconds and count are reported beside the training's, not mixed into the
//! ratio.

use crate::config::Precision;
use crate::run::RunSummary;
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// GFLOP/s of the fastest of three n × n matrix products in `precision`, on all of faer's
/// threads ([`crate::batch::par`]).
pub fn matmul_peak_gflops(precision: Precision, n: usize) -> f64 {
    matmul_rates(precision, n, 3)
        .into_iter()
        .fold(0.0, f64::max)
}

/// GFLOP/s of each of `count` n × n matrix products in `precision`, one after the other on all
/// of faer's threads: the samples behind [`matmul_peak_gflops`], for estimates that pair them
/// with work timed alongside.
pub fn matmul_rates(precision: Precision, n: usize, count: usize) -> Vec<f64> {
    match precision {
        Precision::F64 => rates::<f64>(n, count, |v| v),
        Precision::F32 => rates::<f32>(n, count, |v| v as f32),
    }
}

fn rates<T>(n: usize, count: usize, from: impl Fn(f64) -> T) -> Vec<f64>
where
    T: faer::traits::ComplexField + Copy,
{
    let a = Mat::<T>::from_fn(n, n, |i, j| from(((i * 7 + j * 3) % 11) as f64 - 5.0));
    let b = Mat::<T>::from_fn(n, n, |i, j| from(((i * 5 + j * 2) % 13) as f64 - 6.0));
    let mut c = Mat::<T>::zeros(n, n);
    (0..count)
        .map(|_| {
            let clock = Instant::now();
            matmul(
                c.as_mut(),
                Accum::Replace,
                a.as_ref(),
                b.as_ref(),
                from(1.0),
                crate::batch::par(),
            );
            2.0 * (n as f64).powi(3) / clock.elapsed().as_secs_f64() / 1e9
        })
        .collect()
}

/// `reproduce.json` → `timing`: totals over the index's runs that recorded their timing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReproduceTiming {
    /// The matrix-product peak (GFLOP/s, 2048² product, the larger of the measurements before
    /// and after the runs) in the training precision.
    pub peak_gflops: f64,
    pub precision: String,
    /// Runs counted: those with a `timing` record trained in `precision` (runs of presets the
    /// engine does not train stay in f64 under `--precision f32` and are left out).
    pub runs: usize,
    /// Σ 6·n·p·(gradient evaluations) over the runs.
    pub training_work_flop: f64,
    /// Σ of the runs' training seconds.
    pub seconds_training: f64,
    /// The time the whole machine spent training: runs on all cores count their seconds; runs
    /// packed one per core count the larger of Σ seconds × (their cores ÷ the machine's) and
    /// the packed phase's wall clock × the share of their time that was training (so a core
    /// left idle at the end of the packed phase is charged). Equal to `seconds_training` when
    /// no run was packed.
    #[serde(default)]
    pub machine_seconds_training: f64,
    /// training_work_flop ÷ peak: the training time at the peak rate.
    pub seconds_at_peak: f64,
    /// machine_seconds_training ÷ seconds_at_peak (issue 7's target: ≤ 1.25). None without
    /// timed work.
    pub ratio_to_peak: Option<f64>,
    pub seconds_ntk: f64,
    pub ntk_checkpoints: usize,
    /// Wall-clock seconds of this `reproduce` invocation (resumed runs' earlier work excluded).
    pub wall_seconds: f64,
}

impl ReproduceTiming {
    /// Totals over `summaries`, on `cores` cores (the rayon pool's threads, as for the peak);
    /// `packed_wall` is the wall-clock seconds of this invocation's packed phase (0 if none ran)
    /// and `packed_other` the seconds other work (the threshold ablation's points) spent in it.
    pub fn of<'a>(
        summaries: impl Iterator<Item = &'a RunSummary>,
        peak_gflops: f64,
        precision: Precision,
        cores: usize,
        wall_seconds: f64,
        packed_wall: f64,
        packed_other: f64,
    ) -> Self {
        let mut t = Self {
            peak_gflops,
            precision: precision.name().to_string(),
            runs: 0,
            training_work_flop: 0.0,
            seconds_training: 0.0,
            machine_seconds_training: 0.0,
            seconds_at_peak: 0.0,
            ratio_to_peak: None,
            seconds_ntk: 0.0,
            ntk_checkpoints: 0,
            wall_seconds,
        };
        let counted = summaries
            .filter_map(|s| s.timing.as_ref())
            .filter(|s| s.precision == precision.name());
        let cores = cores.max(1);
        // Packed runs: Σ share-weighted training seconds, Σ training and Σ all their seconds.
        let (mut packed_share, mut packed_train, mut packed_total) = (0.0, 0.0, 0.0);
        for s in counted {
            t.runs += 1;
            t.training_work_flop += s.training_work_flop;
            t.seconds_training += s.seconds_training;
            if s.cores == 0 || s.cores >= cores {
                t.machine_seconds_training += s.seconds_training;
            } else {
                packed_share += s.seconds_training * s.cores as f64 / cores as f64;
                packed_train += s.seconds_training;
                packed_total += s.seconds_training + s.seconds_ntk + s.seconds_kernel_view;
            }
            t.seconds_ntk += s.seconds_ntk;
            t.ntk_checkpoints += s.ntk_checkpoints;
        }
        if packed_total > 0.0 {
            let by_wall = packed_wall * packed_train / (packed_total + packed_other);
            t.machine_seconds_training += packed_share.max(by_wall);
        }
        t.seconds_at_peak = t.training_work_flop / (peak_gflops * 1e9);
        if t.seconds_at_peak > 0.0 {
            t.ratio_to_peak = Some(t.machine_seconds_training / t.seconds_at_peak);
        }
        t
    }

    /// One line for the terminal and the report.
    pub fn line(&self) -> String {
        let ratio = self.ratio_to_peak.map_or_else(
            || "no timed work".to_string(),
            |r| format!("{r:.2}× work ÷ peak"),
        );
        let machine = if self.machine_seconds_training < self.seconds_training {
            format!(
                " = {:.1} machine-seconds with small runs packed one per core",
                self.machine_seconds_training
            )
        } else {
            String::new()
        };
        format!(
            "training: {:.3} TFLOP in {:.1} s{machine} over {} runs ({} peak {:.0} GFLOP/s → {:.1} s at peak; {ratio}); \
             NTK: {} checkpoints in {:.1} s; wall {:.1} s",
            self.training_work_flop / 1e12,
            self.seconds_training,
            self.runs,
            self.precision,
            self.peak_gflops,
            self.seconds_at_peak,
            self.ntk_checkpoints,
            self.seconds_ntk,
            self.wall_seconds
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::summary;
    use crate::run::RunTiming;

    fn timed(precision: &str, train: f64, ntk: f64, checkpoints: usize, work: f64) -> RunSummary {
        timed_on(precision, train, ntk, checkpoints, work, 2)
    }

    fn timed_on(
        precision: &str,
        train: f64,
        ntk: f64,
        checkpoints: usize,
        work: f64,
        cores: usize,
    ) -> RunSummary {
        let mut s = summary(40, 20, 0.3, 0, 0, 1e-3);
        s.timing = Some(RunTiming {
            precision: precision.into(),
            seconds_training: train,
            seconds_ntk: ntk,
            ntk_checkpoints: checkpoints,
            seconds_kernel_view: 0.0,
            training_work_flop: work,
            cores,
            threads: 2,
        });
        s
    }

    #[test]
    fn totals_by_hand() {
        let runs = [
            timed("f32", 2.0, 1.0, 3, 3e11),
            timed("f32", 4.0, 0.5, 2, 5e11),
            timed("f64", 9.0, 9.0, 9, 9e11), // another precision: not counted
            summary(10, 20, 0.0, 1, 6, 0.5), // no timing record
        ];
        let t = ReproduceTiming::of(runs.iter(), 200.0, Precision::F32, 2, 7.5, 0.0, 0.0);
        assert_eq!(t.runs, 2);
        assert_eq!(t.training_work_flop, 8e11);
        assert_eq!(t.seconds_training, 6.0);
        assert_eq!(t.seconds_ntk, 1.5);
        assert_eq!(t.ntk_checkpoints, 5);
        // 8e11 flop at 200 GFLOP/s = 4 s; 6 s measured = 1.5×.
        assert!((t.seconds_at_peak - 4.0).abs() < 1e-12);
        assert!((t.ratio_to_peak.unwrap() - 1.5).abs() < 1e-12);
        assert!(t.line().contains("1.50× work ÷ peak"), "{}", t.line());
        assert_eq!(t.machine_seconds_training, 6.0);
        // The second run packed (one of two cores): it counts 4 s × 1/2 of the machine.
        let runs = [
            timed("f32", 2.0, 1.0, 3, 3e11),
            timed_on("f32", 4.0, 0.5, 2, 5e11, 1),
        ];
        let packed = ReproduceTiming::of(runs.iter(), 200.0, Precision::F32, 2, 7.5, 0.0, 0.0);
        assert_eq!(packed.seconds_training, 6.0);
        assert_eq!(packed.machine_seconds_training, 4.0);
        assert!((packed.ratio_to_peak.unwrap() - 1.0).abs() < 1e-12);
        assert!(
            packed.line().contains("4.0 machine-seconds"),
            "{}",
            packed.line()
        );
        // The packed phase took 3 s of wall clock (a core idle part of it) and the packed run
        // spent 4.5 s (4 training + 0.5 NTK): it is charged 3 × 4 / 4.5 s instead of 2.
        let walled = ReproduceTiming::of(runs.iter(), 200.0, Precision::F32, 2, 7.5, 3.0, 0.0);
        assert!((walled.machine_seconds_training - (2.0 + 3.0 * 4.0 / 4.5)).abs() < 1e-12);
        // A wall clock shorter than the share (runs read back from an earlier invocation):
        // the share stands.
        let short = ReproduceTiming::of(runs.iter(), 200.0, Precision::F32, 2, 7.5, 1.0, 0.0);
        assert_eq!(short.machine_seconds_training, 4.0);
        // 6 s of packed wall clock, 7.5 s of it the threshold ablation's points beside the run:
        // the run is charged 6 × 4 / (4.5 + 7.5) = 2 s (its share), not 6 × 4 / 4.5.
        let shared = ReproduceTiming::of(runs.iter(), 200.0, Precision::F32, 2, 7.5, 6.0, 7.5);
        assert!((shared.machine_seconds_training - (2.0 + 2.0)).abs() < 1e-12);
    }

    #[test]
    fn records_written_before_cores_and_threads_read_them_as_zero() {
        let old = r#"{"precision": "f64", "seconds_training": 1.0, "seconds_ntk": 0.5,
            "ntk_checkpoints": 2, "seconds_kernel_view": 0.0, "training_work_flop": 1e9}"#;
        let t: RunTiming = serde_json::from_str(old).unwrap();
        assert_eq!((t.cores, t.threads), (0, 0));
    }

    #[test]
    fn peak_is_a_positive_rate() {
        for p in [Precision::F64, Precision::F32] {
            let g = matmul_peak_gflops(p, 128);
            assert!(g.is_finite() && g > 0.0, "{g}");
        }
    }
}
