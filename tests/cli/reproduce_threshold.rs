//! The threshold ablation inside `reproduce`, where its points share one queue with the
//! sweeps' runs, against the same points by `threshold_ablation` on its own (a parallel map on
//! the pool): the same initialisations, ranks and singular values, and a witness for each
//! counterexample found.

use crate::common;

use gradflow::config::Solver;
use gradflow::experiment::{reproduce, threshold::threshold_ablation, Scale, Shard};

#[test]
fn queued_threshold_points_equal_the_standalone_ablation() {
    let _lock = common::parallelism_lock();
    let out = common::fresh_dir("reproduce-threshold", "queued");
    let shard = Some(Shard { index: 1, count: 6 });
    let mut opts = common::dnn_sweep_options(out.clone(), Solver::Gd, true);
    opts.only = vec!["threshold".into()];
    opts.threshold_seeds = 1;
    opts.shard = shard;
    let queued = reproduce(&opts)
        .unwrap()
        .threshold
        .expect("a threshold record");
    let alone_dir = common::fresh_dir("reproduce-threshold", "alone");
    let bar = indicatif::ProgressBar::hidden();
    let alone = threshold_ablation(Scale::Quick, 1, &alone_dir, shard, &bar).unwrap();
    // 24 initialisations at one seed, every sixth from the second.
    assert_eq!(queued.points.len(), 4);
    assert_eq!(queued.points.len(), alone.points.len());
    for (q, a) in queued.points.iter().zip(&alone.points) {
        let key = (&q.arch, q.value, q.seed);
        assert_eq!(key, (&a.arch, a.value, a.seed));
        assert_eq!(
            (q.p, q.nm, q.rank, q.rank_full),
            (a.p, a.nm, a.rank, a.rank_full)
        );
        assert_eq!(q.counterexample, a.counterexample, "{key:?}");
        assert_eq!(q.lambda_min.to_bits(), a.lambda_min.to_bits(), "{key:?}");
        assert_eq!(q.lambda_max.to_bits(), a.lambda_max.to_bits(), "{key:?}");
        assert_eq!(q.witness.is_some(), a.witness.is_some(), "{key:?}");
        if let Some(w) = &q.witness {
            assert!(out.join(w).join("claim.json").exists(), "{}", w.display());
        }
    }
}
