//! "Almost surely", measured: how often is J(θ(0)) exactly rank-deficient although p ≥ nm?
//!
//! Lemma 3.2 says H(0) = J Jᵀ is positive definite almost surely once p ≥ nm. For dnn, resnet
//! and gcn at the sweeps' own n, d, m, this ablation draws many initialisations (seeds) per width
//! or depth across p/nm ≈ 0.8…2.5, and for each computes J's singular values, its numerical rank
//! at the largest gap, and — when the rank is exactly deficient with p ≥ nm — whether the
//! deficiency persists under random relative perturbations of θ (an open set of bad
//! initialisations, i.e. a counterexample with positive probability). No training: only θ(0).
//!
//! The smallest counterexample of each architecture gets a witness directory anyone can
//! re-check with numpy + torch.

use super::ablations::{threshold_configs, Scale};
use crate::error::{Error, Result};
use crate::ntk::{analyse_jacobian, jacobian, perturbation_persistence};
use crate::run::{self, PERSISTENCE_DRAWS, PERSISTENCE_REL};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One initialisation of the threshold ablation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ThresholdPoint {
    pub arch: String,
    /// Hidden width (dnn, gcn) or depth (resnet).
    pub value: usize,
    pub seed: u64,
    pub p: usize,
    pub nm: usize,
    pub p_over_nm: f64,
    pub rank: usize,
    pub rank_full: usize,
    pub rank_gap: Option<f64>,
    pub exact_deficient: bool,
    /// Every perturbed draw stayed exactly deficient (tested only when deficient with p ≥ nm).
    pub persistent: Option<bool>,
    /// p ≥ nm, exactly deficient, and persistent.
    pub counterexample: bool,
    /// σ_min(J)² and σ_max(J)², from the SVD.
    pub lambda_min: f64,
    pub lambda_max: f64,
    /// Hidden units that keep one activation piece on every sample, summed over layers.
    pub constant_units: usize,
    /// The witness directory, relative to the reproduce directory (the smallest counterexample
    /// of each architecture only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witness: Option<PathBuf>,
}

/// The threshold ablation in `reproduce.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ThresholdRecord {
    pub seeds: u64,
    pub points: Vec<ThresholdPoint>,
}

impl ThresholdRecord {
    /// Counterexamples among the runs with p ≥ nm, and those runs.
    pub fn counts(&self) -> (usize, usize) {
        let over = self.points.iter().filter(|p| p.p >= p.nm);
        let (mut c, mut k) = (0, 0);
        for p in over {
            k += 1;
            c += p.counterexample as usize;
        }
        (c, k)
    }
    /// The counterexample with the fewest parameters (ties: smallest seed), if any.
    pub fn smallest_counterexample(&self) -> Option<&ThresholdPoint> {
        self.points
            .iter()
            .filter(|p| p.counterexample && p.witness.is_some())
            .min_by_key(|p| (p.p, p.seed))
    }
    /// One sentence for the report's headline, when counterexamples occurred.
    pub fn headline(&self) -> Option<String> {
        let (c, k) = self.counts();
        let smallest = self.smallest_counterexample()?;
        let max_ratio = self
            .points
            .iter()
            .filter(|p| p.counterexample)
            .map(|p| p.p_over_nm)
            .fold(0.0, f64::max);
        Some(format!(
            "Lemma 3.2 fails: {c} of {k} initialisations with p ≥ nm have an exactly rank-deficient \
             Jacobian that persists under random perturbations of θ (up to p/nm = {max_ratio:.2}); \
             the smallest is {} {}={} seed {} (p = {}, nm = {}, rank {}), witness in {}",
            smallest.arch,
            if smallest.arch == "resnet" { "depth" } else { "w" },
            smallest.value,
            smallest.seed,
            smallest.p,
            smallest.nm,
            smallest.rank,
            smallest.witness.as_ref().map_or(String::new(), |w| w.display().to_string())
        ))
    }
}

/// One initialisation of the threshold ablation still to be measured: architecture, width or
/// depth, seed, and its resolved config.
pub type ThresholdJob = (String, usize, u64, crate::config::Config);

/// This shard's share of the threshold ablation's initialisations, in a fixed order.
pub fn threshold_jobs(scale: Scale, seeds: u64, shard: Option<super::Shard>) -> Vec<ThresholdJob> {
    threshold_configs(scale, seeds)
        .into_iter()
        .enumerate()
        .filter(|(k, _)| shard.is_none_or(|s| k % s.count == s.index))
        .map(|(_, c)| c)
        .collect()
}

/// Runs the threshold ablation (this shard's share of it) on the pool, and writes the
/// witnesses of the smallest counterexample per architecture under `out/threshold/`.
/// (`reproduce` runs the same points in its own queue, beside the training runs.)
pub fn threshold_ablation(
    scale: Scale,
    seeds: u64,
    out: &Path,
    shard: Option<super::Shard>,
    bar: &indicatif::ProgressBar,
) -> Result<ThresholdRecord> {
    let jobs = threshold_jobs(scale, seeds, shard);
    bar.set_length(bar.length().unwrap_or(0) + jobs.len() as u64);
    let old = faer::get_global_parallelism();
    faer::set_global_parallelism(faer::Par::Seq);
    let points: Vec<Result<ThresholdPoint>> = jobs
        .par_iter()
        .map(|job| {
            bar.set_message(format!("threshold {} {} seed {}", job.0, job.1, job.2));
            let point = threshold_point(job);
            bar.inc(1);
            point
        })
        .collect();
    faer::set_global_parallelism(old);
    finish_threshold(&jobs, points, seeds, out)
}

/// J's singular values, rank and (when exactly deficient with p ≥ nm) the persistence of
/// the deficiency at one initialisation θ(0). Single-threaded faer is the caller's choice.
pub fn threshold_point((arch, value, seed, config): &ThresholdJob) -> Result<ThresholdPoint> {
    let prep = run::prepare(config)?;
    let (model, x) = (&prep.model, &prep.data.x);
    let rank = analyse_jacobian(jacobian(model, &prep.theta0, x).as_ref(), &[]);
    let (p, nm) = (model.p(), prep.nm());
    let persistent = (rank.exact_deficient && p >= nm).then(|| {
        perturbation_persistence(
            model,
            &prep.theta0,
            x,
            PERSISTENCE_REL,
            PERSISTENCE_DRAWS,
            *seed,
        )
        .persistent
    });
    let constant_units = crate::ntk::activation_patterns(model, &prep.theta0, x)
        .iter()
        .map(|a| a.constant_units)
        .sum();
    Ok(ThresholdPoint {
        arch: arch.clone(),
        value: *value,
        seed: *seed,
        p,
        nm,
        p_over_nm: p as f64 / nm as f64,
        rank: rank.rank,
        rank_full: rank.full,
        rank_gap: rank.gap,
        exact_deficient: rank.exact_deficient,
        persistent,
        counterexample: persistent == Some(true),
        lambda_min: rank.lambda_min,
        lambda_max: rank.sigma_max * rank.sigma_max,
        constant_units,
        witness: None,
    })
}

/// The record from the measured points (in the order of `jobs`), with a witness directory for
/// the smallest counterexample of each architecture.
pub fn finish_threshold(
    jobs: &[ThresholdJob],
    points: Vec<Result<ThresholdPoint>>,
    seeds: u64,
    out: &Path,
) -> Result<ThresholdRecord> {
    let mut points = points.into_iter().collect::<Result<Vec<_>>>()?;
    // A witness for the smallest counterexample of each architecture.
    for arch in super::ABLATIONS {
        let Some(k) = (0..points.len())
            .filter(|&k| points[k].arch == arch && points[k].counterexample)
            .min_by_key(|&k| (points[k].p, points[k].seed))
        else {
            continue;
        };
        let pt = &points[k];
        let rel = PathBuf::from("threshold").join(format!(
            "witness-{arch}-{}={}-seed{}",
            if arch == "resnet" { "depth" } else { "w" },
            pt.value,
            pt.seed
        ));
        let (_, _, _, config) = jobs
            .iter()
            .find(|(a, v, s, _)| a == arch && *v == pt.value && *s == pt.seed)
            .ok_or_else(|| Error::Invalid("threshold: lost a configuration".into()))?;
        let prep = run::prepare(config)?;
        let dir = out.join(&rel);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        run::witness::write_prepared_witness(&prep, &prep.theta0, &dir)?;
        points[k].witness = Some(rel);
    }
    Ok(ThresholdRecord { seeds, points })
}
