//! `bench_epochs --layouts`: the engine's two activation layouts (feature-major, sample-major)
//! on the DNN and ResNet workloads, timed back to back within each repetition so that the
//! machine's drifting speed affects both alike; prints the median of the paired time ratios
//! and each layout's median share of the same-process peak.

use crate::{median, peak, time_engine_in, Workload};
use gradflow::engine::{Layout, Real};

pub(crate) fn compare<T: Real>(ws: &[Workload], reps: usize) {
    println!(
        "\n### {}: activation layouts, {reps} paired repetitions (load {})\n",
        T::PRECISION.name(),
        crate::load()
    );
    println!("| workload | feature-major s/epoch | sample-major s/epoch | time ratio features ÷ samples: median (range) | share of peak: features / samples |");
    println!("|---|---|---|---|---|");
    for w in ws {
        let flops = 6.0 * w.data.n() as f64 * w.model.p() as f64;
        let epochs = ((3e10 / flops) as usize).clamp(20, 200);
        let (mut tf, mut ts, mut ratio, mut pf, mut ps) = (vec![], vec![], vec![], vec![], vec![]);
        for rep in 0..reps {
            let pk = peak::<T>(2048);
            // Alternate which layout goes first.
            let order = if rep % 2 == 0 {
                [Layout::Features, Layout::Samples]
            } else {
                [Layout::Samples, Layout::Features]
            };
            let mut t = [0.0; 2];
            for l in order {
                let (timing, _) = time_engine_in::<T>(w, epochs, false, Some(l));
                t[(l == Layout::Samples) as usize] = timing.per_epoch;
            }
            let pk = pk.max(peak::<T>(2048));
            tf.push(t[0]);
            ts.push(t[1]);
            ratio.push(t[0] / t[1]);
            pf.push(100.0 * flops / t[0] / 1e9 / pk);
            ps.push(100.0 * flops / t[1] / 1e9 / pk);
        }
        let (lo, hi) = crate::range(&ratio);
        println!(
            "| {} | {:.2} ms | {:.2} ms | {:.3} ({:.3}–{:.3}) | {:.0}% / {:.0}% |",
            w.name,
            median(tf) * 1e3,
            median(ts) * 1e3,
            median(ratio),
            lo,
            hi,
            median(pf),
            median(ps)
        );
    }
}
