//! `gradflow reproduce`: the paper's Section 4 ablations (and sweeps like them) as sets of runs,
//! with a verdict per run, an index (`reproduce.json`) that the report is built from, deterministic
//! shards for cluster array jobs, merging of shard outputs, and resumption (a run whose directory
//! already holds a finished `summary.json` is read back instead of re-run; an interrupted one
//! continues from its checkpoint).
//!
//! With [`ReproduceOptions::solver`] = `Flow` (`reproduce --solver flow`) every sweep is run by the
//! kink-aware flow solver to the GD horizon lr·epochs instead ([`as_flow`]);
//! [`reproduce_ablations`] runs sweeps given as they are (shrunk ones in the tests).
//!
//! Small runs go in parallel, one per thread of the rayon pool, from one queue taken longest
//! first (the threshold ablation's points at its end, so they fill the threads beside the last
//! long runs), with faer and the engine single-threaded inside (the engine still cuts their
//! samples for the whole pool, so they compute what they would unpacked); large runs go one
//! after another on every thread.

pub mod ablations;
pub mod slurm;
pub mod threshold;
pub mod timing;
pub mod verdict;

pub use ablations::{
    ablation, as_flow, corollary_activations, to_flow, Ablation, RunSpec, Scale, ABLATIONS,
    EXTRA_ABLATIONS,
};
pub use threshold::{ThresholdPoint, ThresholdRecord};
pub use timing::{matmul_peak_gflops, ReproduceTiming};
pub use verdict::{verdict, Verdict, VerdictKind};

/// The side of the square product `reproduce` times for the machine's peak.
const PEAK_SIZE: usize = 2048;
/// Runs with at most this much work per gradient evaluation (6·n·p flops) are packed one per
/// thread of the pool: a fork-join per epoch costs them more than the other threads gain
/// (measured on 2 threads with `bench_epochs --packed`: two DNN 500 → [50, 50] → 50 runs at
/// n = 1000, 0.18 GFLOP an epoch, run 8% (f32) to 36% (f64) faster packed than one after the
/// other on both threads).
pub const PACK_WORK_PER_EPOCH: f64 = 2e8;

use crate::error::{Error, Result};
use crate::run::{self, RunOptions, RunSummary};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A slice i of N of the global run list (runs with index ≡ i mod N).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// Parses `i/N` (0 ≤ i < N).
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || {
            Error::Invalid(format!(
                "--shard `{s}` must be i/N with 0 ≤ i < N, e.g. 0/4"
            ))
        };
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }
}

#[derive(Clone, Debug)]
pub struct ReproduceOptions {
    pub scale: Scale,
    /// Ablations to run (empty = all of [`ABLATIONS`]).
    pub only: Vec<String>,
    pub seeds: u64,
    pub out: PathBuf,
    pub shard: Option<Shard>,
    pub progress: bool,
    /// Training precision for the runs whose preset the engine trains (dnn, resnet, gcn); the
    /// others train in f64 whatever this says. NTK spectra are always f64.
    pub precision: crate::config::Precision,
    /// `Flow`: every run integrated by the flow solver instead of GD ([`as_flow`]).
    pub solver: crate::config::Solver,
    /// Replaces every run's `ntk.every` (epochs between λ_min checkpoints; 0 = only at the start
    /// and the end) — for the flow solver before the translation to outputs.
    pub ntk_every: Option<usize>,
    /// No NTK checkpoints at all (`ntk.enabled = false` in every run): training only, e.g. to
    /// time it; the verdicts then rest on the loss alone.
    pub no_ntk: bool,
    /// Seeds per width/depth of the threshold ablation ([`threshold`]).
    pub threshold_seeds: u64,
}

/// One finished run in the index.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunRecord {
    pub label: String,
    pub value: usize,
    pub seed: u64,
    /// The run directory, relative to the index file's directory (or absolute after a merge).
    pub dir: PathBuf,
    pub summary: RunSummary,
    pub verdict: Verdict,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AblationRecord {
    pub name: String,
    pub title: String,
    pub variable: String,
    pub skip_epochs: usize,
    pub runs: Vec<RunRecord>,
}

/// `reproduce.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReproduceIndex {
    pub scale: Scale,
    pub seeds: u64,
    pub shard: Option<Shard>,
    pub ablations: Vec<AblationRecord>,
    /// The training's work and time against the machine's peak, kept in its own file
    /// ([`TIMING_FILE`]) so that `reproduce.json` stays identical across machines and resumptions
    /// (absent after a merge).
    #[serde(skip)]
    pub timing: Option<ReproduceTiming>,
    /// The threshold ablation (J's rank at θ(0) over many seeds across p/nm), when run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<ThresholdRecord>,
}

pub const INDEX_FILE: &str = "reproduce.json";
/// Where `reproduce` writes [`ReproduceTiming`].
pub const TIMING_FILE: &str = "timing.json";

impl ReproduceIndex {
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(INDEX_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let mut index: Self = serde_json::from_str(&text)
            .map_err(|e| Error::input(&path, format!("not a gradflow reproduce index: {e}")))?;
        index.timing = std::fs::read_to_string(dir.join(TIMING_FILE))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        Ok(index)
    }
    pub fn save(&self, dir: &Path) -> Result<()> {
        crate::io::write_atomic(&dir.join(INDEX_FILE), pretty(self)?.as_bytes())?;
        if let Some(t) = &self.timing {
            crate::io::write_atomic(&dir.join(TIMING_FILE), pretty(t)?.as_bytes())?;
        }
        Ok(())
    }
    /// Every run, in order.
    pub fn all_runs(&self) -> impl Iterator<Item = (&AblationRecord, &RunRecord)> {
        self.ablations
            .iter()
            .flat_map(|a| a.runs.iter().map(move |r| (a, r)))
    }
}

/// Sets the training precision of every run the engine trains
/// ([`crate::config::Preset::has_engine`]).
pub fn set_precision(ablations: &mut [Ablation], precision: crate::config::Precision) {
    for r in ablations.iter_mut().flat_map(|a| a.runs.iter_mut()) {
        if r.config.model.preset().is_some_and(|p| p.has_engine()) {
            r.config.train.precision = precision;
        }
    }
}

fn pretty<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string_pretty(v).map_err(|e| Error::Invalid(e.to_string()))
}

fn read_summary(dir: &Path) -> Option<RunSummary> {
    let text = std::fs::read_to_string(dir.join("summary.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// Runs (or resumes) the requested ablations and writes `reproduce.json` in `opts.out`.
pub fn reproduce(opts: &ReproduceOptions) -> Result<ReproduceIndex> {
    let names: Vec<String> = if opts.only.is_empty() {
        ABLATIONS.iter().map(|s| s.to_string()).collect()
    } else {
        opts.only
            .iter()
            .filter(|n| n.as_str() != THRESHOLD)
            .cloned()
            .collect()
    };
    let with_threshold = opts.only.is_empty() || opts.only.iter().any(|n| n == THRESHOLD);
    let mut ablations: Vec<Ablation> = names
        .iter()
        .map(|n| {
            let mut a = ablation(n, opts.scale, opts.seeds)?;
            for r in &mut a.runs {
                if let Some(every) = opts.ntk_every {
                    r.config.ntk.every = every;
                }
                if opts.no_ntk {
                    r.config.ntk.enabled = false;
                }
            }
            Ok(match opts.solver {
                crate::config::Solver::Flow => as_flow(a),
                crate::config::Solver::Gd => a,
            })
        })
        .collect::<Result<_>>()?;
    set_precision(&mut ablations, opts.precision);
    let threshold = with_threshold.then(|| ThresholdWork {
        seeds: opts.threshold_seeds,
        jobs: threshold::threshold_jobs(opts.scale, opts.threshold_seeds, opts.shard),
    });
    run_queued(opts, ablations, threshold)
}

/// The threshold ablation's points, run in the same queue as the sweeps' runs.
struct ThresholdWork {
    seeds: u64,
    jobs: Vec<threshold::ThresholdJob>,
}

/// The name `--only` takes for the threshold ablation ([`threshold`]).
pub const THRESHOLD: &str = "threshold";

/// Runs (or resumes) the given sweeps as [`reproduce`] does (`opts.only`, `opts.scale`'s sizes
/// and `opts.solver` are not applied again: the sweeps are taken as they are) and writes
/// `reproduce.json` in `opts.out`.
pub fn reproduce_ablations(
    opts: &ReproduceOptions,
    ablations: Vec<Ablation>,
) -> Result<ReproduceIndex> {
    run_queued(opts, ablations, None)
}

/// Runs a share of the machine: the small runs (and the threshold ablation's points) from one
/// queue, longest first, one per thread of the pool; then the large runs one after another on
/// every thread.
fn run_queued(
    opts: &ReproduceOptions,
    ablations: Vec<Ablation>,
    threshold: Option<ThresholdWork>,
) -> Result<ReproduceIndex> {
    std::fs::create_dir_all(&opts.out).map_err(|e| Error::io(&opts.out, e))?;
    let wall = std::time::Instant::now();
    let peak_before = timing::matmul_peak_gflops(opts.precision, PEAK_SIZE);
    // The global run list, then this shard's slice of it.
    let mut jobs: Vec<(usize, &RunSpec)> = Vec::new();
    let mut k = 0;
    for (ai, a) in ablations.iter().enumerate() {
        for r in &a.runs {
            if opts.shard.is_none_or(|s| k % s.count == s.index) {
                jobs.push((ai, r));
            }
            k += 1;
        }
    }
    let threshold_count = threshold.as_ref().map_or(0, |t| t.jobs.len());
    let bar = if opts.progress {
        ProgressBar::new((jobs.len() + threshold_count) as u64)
    } else {
        ProgressBar::hidden()
    };
    let what = if threshold_count > 0 {
        "runs and threshold points"
    } else {
        "runs"
    };
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "[{{elapsed_precise}}] {{wide_bar}} {{pos}}/{{len}} {what} ETA {{eta}} {{msg}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let results: Mutex<Vec<(usize, RunRecord)>> = Mutex::new(Vec::new());
    let errors: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let do_one = |(ai, spec): &(usize, &RunSpec)| {
        let a = &ablations[*ai];
        let rel = PathBuf::from(&a.name).join(&spec.label);
        let dir = opts.out.join(&rel);
        bar.set_message(format!("{}/{}", a.name, spec.label));
        if crate::interrupt::requested() {
            bar.inc(1);
            return; // not started: the next `reproduce` runs it
        }
        let previous = read_summary(&dir);
        let summary = match previous {
            Some(s) if s.status != run::Status::Interrupted => Ok(s),
            _ => run::prepare(&spec.config).and_then(|prep| {
                // An interrupted run that left a checkpoint continues; one that could not (a
                // classic flow solve, kink_aware = false) starts again.
                let resume = previous.is_some() && dir.join(run::CHECKPOINT_FILE).exists();
                let ropts = RunOptions {
                    progress: false,
                    force: true,
                    resume,
                    ..RunOptions::default()
                };
                match run::execute(&prep, &dir, &ropts) {
                    Ok(s) => Ok(s),
                    Err(Error::Diverged(_)) => {
                        read_summary(&dir).ok_or_else(|| Error::Invalid("lost summary".into()))
                    }
                    Err(e) => Err(e),
                }
            }),
        };
        if let Err(Error::Interrupted(_)) = summary {
            bar.inc(1);
            return; // checkpointed: the next `reproduce` resumes it
        }
        match summary {
            Ok(s) => {
                let v = verdict(&s);
                let rec = RunRecord {
                    label: spec.label.clone(),
                    value: spec.value,
                    seed: spec.seed,
                    dir: rel,
                    summary: s,
                    verdict: v,
                };
                results.lock().unwrap().push((*ai, rec));
            }
            Err(e) => errors
                .lock()
                .unwrap()
                .push(format!("{}/{}: {e}", a.name, spec.label)),
        }
        bar.inc(1);
    };
    // Runs whose epochs are too small to keep the pool's threads busy (a fork-join per epoch
    // costs more than it gains) are packed one per thread: the quick scale, and at paper scale
    // the narrowest networks (6·n·p ≤ PACK_WORK_PER_EPOCH). They go longest first (by
    // n·p·epochs), so the largest start at once and the small ones fill the threads around
    // them; the threshold ablation's points come last.
    let work = |s: &RunSpec| {
        run::prepare(&s.config).ok().map(|p| {
            let epoch = (p.data.n() * p.model.p()) as f64;
            (epoch, epoch * s.config.train.epochs.max(1) as f64)
        })
    };
    let mut packed: Vec<(f64, QueueItem)> = Vec::new();
    let mut seq_jobs = Vec::new();
    for job in &jobs {
        match work(job.1) {
            Some((epoch, total)) if 6.0 * epoch <= PACK_WORK_PER_EPOCH => {
                packed.push((total, QueueItem::Run(*job)))
            }
            _ => seq_jobs.push(*job),
        }
    }
    packed.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut packed: Vec<QueueItem> = packed.into_iter().map(|(_, item)| item).collect();
    packed.extend((0..threshold_count).map(QueueItem::ThresholdPoint));
    let threshold_points: Mutex<Vec<Option<Result<ThresholdPoint>>>> =
        Mutex::new((0..threshold_count).map(|_| None).collect());
    let threshold_seconds = Mutex::new(0.0f64);
    let do_point = |k: usize| {
        let Some(t) = threshold.as_ref() else { return };
        if crate::interrupt::requested() {
            bar.inc(1);
            return;
        }
        let job = &t.jobs[k];
        bar.set_message(format!("threshold {} {} seed {}", job.0, job.1, job.2));
        let clock = std::time::Instant::now();
        let point = threshold::threshold_point(job);
        *threshold_seconds.lock().unwrap() += clock.elapsed().as_secs_f64();
        threshold_points.lock().unwrap()[k] = Some(point);
        bar.inc(1);
    };
    let mut packed_wall = 0.0;
    if !packed.is_empty() {
        let old = faer::get_global_parallelism();
        faer::set_global_parallelism(faer::Par::Seq);
        let clock = std::time::Instant::now();
        run_in_order(&packed, |item| match item {
            QueueItem::Run(job) => do_one(job),
            QueueItem::ThresholdPoint(k) => do_point(*k),
        });
        packed_wall = clock.elapsed().as_secs_f64();
        faer::set_global_parallelism(old);
    }
    seq_jobs.iter().for_each(&do_one);
    bar.finish_and_clear();
    let wall_seconds = wall.elapsed().as_secs_f64();
    let peak = peak_before.max(timing::matmul_peak_gflops(opts.precision, PEAK_SIZE));
    let errors = errors.into_inner().unwrap();
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(ai, r)| (*ai, r.value, r.seed));
    let index = ReproduceIndex {
        scale: opts.scale,
        seeds: opts.seeds,
        shard: opts.shard,
        ablations: ablations
            .iter()
            .enumerate()
            .map(|(ai, a)| AblationRecord {
                name: a.name.clone(),
                title: a.title.clone(),
                variable: a.variable.clone(),
                skip_epochs: a.skip_epochs,
                runs: results
                    .iter()
                    .filter(|(i, _)| *i == ai)
                    .map(|(_, r)| r.clone())
                    .collect(),
            })
            .collect(),
        timing: None,
        threshold: None,
    };
    let timing = ReproduceTiming::of(
        index.all_runs().map(|(_, r)| &r.summary),
        peak,
        opts.precision,
        rayon::current_num_threads(),
        wall_seconds,
        packed_wall,
        threshold_seconds.into_inner().unwrap(),
    );
    let index = ReproduceIndex {
        timing: Some(timing),
        ..index
    };
    if crate::interrupt::requested() {
        index.save(&opts.out)?;
        return Err(Error::Interrupted(format!(
            "interrupted: finished runs are kept and unfinished ones checkpointed in {}; \
             run the same `gradflow reproduce` command again to resume",
            opts.out.display()
        )));
    }
    if !errors.is_empty() {
        index.save(&opts.out)?;
        return Err(Error::Invalid(format!(
            "{} run(s) failed:\n  {}",
            errors.len(),
            errors.join("\n  ")
        )));
    }
    let index = match threshold {
        Some(t) => {
            let points = threshold_points.into_inner().unwrap();
            let points = points
                .into_iter()
                .map(|p| {
                    p.unwrap_or_else(|| {
                        Err(Error::Invalid("threshold: a point was not run".into()))
                    })
                })
                .collect();
            ReproduceIndex {
                threshold: Some(threshold::finish_threshold(
                    &t.jobs, points, t.seeds, &opts.out,
                )?),
                ..index
            }
        }
        None => index,
    };
    index.save(&opts.out)?;
    Ok(index)
}

/// One item of the packed queue: a run (sweep index, spec) or a threshold point (its index).
#[derive(Clone, Copy)]
enum QueueItem<'a> {
    Run((usize, &'a RunSpec)),
    ThresholdPoint(usize),
}

/// Calls `work` on every item, one item per thread of the rayon pool at a time, taking them in
/// the order given: each thread takes the next item when it finishes one. (A parallel
/// iterator splits the list in halves instead, so the two longest items could end up one
/// after the other on the same thread.) Nested parallel work inside an item runs on the pool
/// as usual, so a thread left without items helps the last ones.
fn run_in_order<T: Sync>(items: &[T], work: impl Fn(&T) + Sync) {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let workers = rayon::current_num_threads().min(items.len());
    rayon::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|_| {
                while let Some(item) =
                    items.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                {
                    work(item);
                }
            });
        }
    });
}

/// Joins shard outputs into one index in `out` (run directories are referenced, not copied).
pub fn merge(dirs: &[PathBuf], out: &Path) -> Result<ReproduceIndex> {
    let mut merged: Option<ReproduceIndex> = None;
    for d in dirs {
        let idx = ReproduceIndex::load(d)?;
        let base = std::fs::canonicalize(d).map_err(|e| Error::io(d, e))?;
        let m = merged.get_or_insert_with(|| ReproduceIndex {
            scale: idx.scale,
            seeds: idx.seeds,
            shard: None,
            ablations: Vec::new(),
            timing: None,
            threshold: None,
        });
        if m.scale != idx.scale {
            return Err(Error::Invalid(format!(
                "{}: scale {:?} differs from the other shards",
                d.display(),
                idx.scale
            )));
        }
        if let Some(mut t) = idx.threshold {
            for p in &mut t.points {
                p.witness = p.witness.as_ref().map(|w| base.join(w));
            }
            let mt = m.threshold.get_or_insert_with(|| ThresholdRecord {
                seeds: t.seeds,
                points: Vec::new(),
            });
            mt.points.extend(t.points);
        }
        for mut a in idx.ablations {
            for r in &mut a.runs {
                r.dir = base.join(&r.dir);
            }
            match m.ablations.iter_mut().find(|x| x.name == a.name) {
                Some(x) => {
                    for r in a.runs {
                        if !x.runs.iter().any(|y| y.label == r.label) {
                            x.runs.push(r);
                        }
                    }
                    x.runs.sort_by_key(|r| (r.value, r.seed));
                }
                None => m.ablations.push(a),
            }
        }
    }
    let m = merged.ok_or_else(|| Error::Invalid("merge needs at least one directory".into()))?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    m.save(out)?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::run_in_order;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    /// On a pool of two threads the first two items run at the same time (each waits, up to
    /// 20 s, for the other to start: on one thread one after the other, neither would see the
    /// other), and every item runs exactly once.
    #[test]
    fn the_first_items_start_together_and_every_item_runs_once() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let items: Vec<usize> = (0..9).collect();
        let started = AtomicUsize::new(0);
        let met = Mutex::new(Vec::new());
        let ran = Mutex::new(Vec::new());
        pool.install(|| {
            run_in_order(&items, |&i| {
                if i < 2 {
                    started.fetch_add(1, Ordering::SeqCst);
                    let clock = Instant::now();
                    while started.load(Ordering::SeqCst) < 2 && clock.elapsed().as_secs() < 20 {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    met.lock()
                        .unwrap()
                        .push(started.load(Ordering::SeqCst) >= 2);
                }
                ran.lock().unwrap().push(i);
            })
        });
        assert_eq!(*met.lock().unwrap(), vec![true, true]);
        let mut ran = ran.into_inner().unwrap();
        ran.sort_unstable();
        assert_eq!(ran, items);
    }
}
