//! One training run from a validated [`Config`]: build data, graph, model and θ₀ ([`prepare`]),
//! then train and write the run directory ([`execute`]):
//!
//! `config.toml` (resolved), `x.npy`, `y.npy`, `edges.csv` (graph presets), `params_init.safetensors`,
//! `params_final.safetensors`, `metrics.csv` (`epoch,t,loss,grad_norm,kink_crossings,chattering`),
//! `ntk.csv` (`epoch,t,loss,lambda_min,lambda_max,condition,lambda_min_accuracy,integral_lambda_min,
//! bound,bound_holds,gd_stability`)
//! and `summary.json`.
//!
//! The directory is built under a hidden staging name next to the target and renamed into place
//! when the run ends (completed or diverged), so a killed run never leaves a directory that
//! looks finished. Everything that can be wrong with the input is checked in [`prepare`], before
//! anything is written.

use crate::config::{Config, DataConfig, GraphConfig, Preset};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::init::init_params;
use crate::io::{self, CsvWriter};
use crate::kinks::KinkSummary;
use crate::model::Model;
use crate::ntk::{self, NtkOptions, NtkSummary};
use crate::theory::{fitted_rate, overparametrized, BoundCheck, BoundTracker};
use crate::train::{gradient_descent, Control, GdOptions};
use crate::{params, presets};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Everything a run needs, built and checked.
pub struct Prepared {
    pub config: Config,
    pub data: Dataset,
    pub model: Model,
    pub theta0: Vec<f64>,
}

impl Prepared {
    pub fn n(&self) -> usize {
        self.data.n()
    }
    pub fn m(&self) -> usize {
        self.data.m()
    }
    pub fn nm(&self) -> usize {
        self.n() * self.m()
    }
}

/// Builds data, graph, model and θ₀ from `config`, checking everything that can be wrong.
pub fn prepare(config: &Config) -> Result<Prepared> {
    let mut data = match &config.data {
        DataConfig::Ball { n, d, m } => Dataset::ball(*n, *d, *m, config.seed),
        DataConfig::Npy { x, y } => Dataset::from_npy(x, y)?,
    };
    let act = &config.model.activation;
    let (d, m) = (data.d(), data.m());
    let model = match config.model.preset {
        Preset::Dnn => presets::dnn(d, &config.model.hidden, m, act),
        Preset::Resnet => presets::resnet(d, config.model.depth, m, act),
        Preset::Gcn => {
            let graph = match config.graph.as_ref() {
                Some(GraphConfig::Edges { path }) => {
                    Graph::from_edges(data.n(), io::read_edges(path, data.n())?)
                }
                Some(GraphConfig::Knn { k }) => knn_graph(&data, *k, config)?,
                None => knn_graph(&data, crate::config::DEFAULT_K, config)?,
            };
            let a_hat = Arc::new(graph.normalized_adjacency());
            data.graph = Some(graph);
            presets::gcn(a_hat, d, &config.model.hidden, m, act)
        }
    };
    let theta0 = init_params(&model.param_specs(), &config.model.init, config.seed);
    Ok(Prepared {
        config: config.clone(),
        data,
        model,
        theta0,
    })
}

fn knn_graph(data: &Dataset, k: usize, config: &Config) -> Result<Graph> {
    if k >= data.n() {
        return Err(Error::config(
            &config.source,
            "graph.k",
            format!(
                "k = {k} must be smaller than the number of samples n = {} in the data: lower k in [graph] \
                 (the default is {})",
                data.n(),
                crate::config::DEFAULT_K
            ),
        ));
    }
    Graph::knn(&data.x, k)
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Completed,
    Diverged,
}

/// `summary.json`.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct RunSummary {
    pub status: Status,
    pub message: Option<String>,
    pub preset: String,
    pub activation: String,
    pub activation_class: String,
    pub p: usize,
    pub n: usize,
    pub d: usize,
    pub m: usize,
    pub nm: usize,
    pub p_over_nm: f64,
    pub overparametrized: bool,
    pub loss: String,
    /// c in L = c‖e‖².
    pub loss_constant: f64,
    pub lr: f64,
    pub epochs: usize,
    pub last_epoch: usize,
    pub t_final: f64,
    pub initial_loss: f64,
    pub final_loss: f64,
    /// Least-squares rate r of ln L ≈ a − r t over the last half of the run.
    pub fitted_rate_tail: Option<f64>,
    pub gradient_evaluations: u64,
    pub seconds: f64,
    pub kinks: KinkSummary,
    pub ntk_initial: Option<NtkSummary>,
    pub ntk_final: Option<NtkSummary>,
    /// 4c·min λ_min over the checkpoints: the certified exponential rate.
    pub certified_rate: Option<f64>,
    pub bound_checks: usize,
    pub bound_violations: Vec<BoundCheck>,
    /// max over checkpoints of η·c·λ_max(H): GD on L = c‖e‖² is stable only below 1 (the loss
    /// Hessian's Gauss–Newton part has top eigenvalue 2c·λ_max), and tracks the flow well only
    /// far below it.
    #[serde(default)]
    pub gd_stability_max: Option<f64>,
    /// Graph presets: the smallest |eigenvalue| of Â (≤ 5,000 nodes), a ceiling on how
    /// non-singular the NTK can be.
    #[serde(default)]
    pub graph_min_abs_eigenvalue: Option<f64>,
}

/// Options that do not change results.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Draw a progress bar on stderr (hidden anyway when stderr is not a terminal).
    pub progress: bool,
    /// Replace an existing run directory at `out`.
    pub force: bool,
}

const METRICS_HEADER: [&str; 6] = [
    "epoch",
    "t",
    "loss",
    "grad_norm",
    "kink_crossings",
    "chattering",
];
const NTK_HEADER: [&str; 11] = [
    "epoch",
    "t",
    "loss",
    "lambda_min",
    "lambda_max",
    "condition",
    "lambda_min_accuracy",
    "integral_lambda_min",
    "bound",
    "bound_holds",
    "gd_stability",
];

/// Files whose presence marks a directory as a gradflow run (safe to replace with `--force`).
const RUN_MARKERS: [&str; 3] = ["summary.json", "metrics.csv", "config.toml"];

/// Refuses an output directory that cannot be (re)placed: the working directory or a root,
/// a file, or a non-empty directory without `force` — and, even with `force`, a non-empty
/// directory that is not a gradflow run (nothing of the user's is ever deleted).
pub fn check_output_dir(out: &Path, force: bool) -> Result<()> {
    let named = out.file_name().is_some() && !out.ends_with("..");
    let is_cwd = std::fs::canonicalize(out)
        .ok()
        .zip(std::env::current_dir().ok())
        .is_some_and(|(a, b)| a == b);
    if !named || is_cwd {
        return Err(Error::Invalid(format!(
            "--out {} must name a directory of its own (e.g. --out runs/my-run), not the current or a parent directory",
            out.display()
        )));
    }
    if out.exists() && !out.is_dir() {
        return Err(Error::Invalid(format!(
            "{} exists and is not a directory: choose another --out",
            out.display()
        )));
    }
    let non_empty = out
        .read_dir()
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    if non_empty && !force {
        return Err(Error::Invalid(format!(
            "{} already exists and is not empty: choose another --out, or pass --force to replace it",
            out.display()
        )));
    }
    if non_empty && !RUN_MARKERS.iter().any(|m| out.join(m).exists()) {
        return Err(Error::Invalid(format!(
            "{} is not empty and does not look like a gradflow run directory: --force only replaces runs; choose another --out",
            out.display()
        )));
    }
    Ok(())
}

fn staging_dir(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "run".into());
    out.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Invalid(e.to_string()))?;
    io::write_atomic(path, text.as_bytes())
}

fn param_metadata(prep: &Prepared) -> BTreeMap<String, String> {
    let mut md = BTreeMap::new();
    md.insert("format".into(), "pt".into());
    md.insert("preset".into(), prep.model.preset.clone());
    md.insert("p".into(), prep.model.p().to_string());
    md.insert("seed".into(), prep.config.seed.to_string());
    md.insert("activation".into(), prep.model.activation.to_string());
    md
}

/// Trains `prep` by gradient descent and writes the run directory `out`.
///
/// On divergence the directory is still written (metrics so far, status "diverged") and the
/// error is returned.
pub fn execute(prep: &Prepared, out: &Path, opts: &RunOptions) -> Result<RunSummary> {
    check_output_dir(out, opts.force)?;
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let stage = staging_dir(out);
    if stage.exists() {
        std::fs::remove_dir_all(&stage).map_err(|e| Error::io(&stage, e))?;
    }
    std::fs::create_dir_all(&stage).map_err(|e| Error::io(&stage, e))?;
    let result = write_run(prep, &stage, opts);
    if result.is_ok() || matches!(result, Err(Error::Diverged(_))) {
        if out.exists() {
            std::fs::remove_dir_all(out).map_err(|e| Error::io(out, e))?;
        }
        std::fs::rename(&stage, out).map_err(|e| Error::io(out, e))?;
    } else {
        let _ = std::fs::remove_dir_all(&stage);
    }
    result
}

fn write_run(prep: &Prepared, dir: &Path, opts: &RunOptions) -> Result<RunSummary> {
    let start = Instant::now();
    let cfg = &prep.config;
    let (model, data) = (&prep.model, &prep.data);
    let specs = model.param_specs();
    io::write_atomic(&dir.join("config.toml"), cfg.to_toml().as_bytes())?;
    io::write_matrix(&dir.join("x.npy"), data.x.as_slice(), data.n(), data.d())?;
    io::write_matrix(&dir.join("y.npy"), data.y.as_slice(), data.n(), data.m())?;
    if let Some(g) = &data.graph {
        io::write_edges(&dir.join("edges.csv"), &g.edges)?;
    }
    let md = param_metadata(prep);
    params::save(
        &dir.join("params_init.safetensors"),
        &specs,
        &prep.theta0,
        &md,
    )?;

    let (n, m) = (data.n(), data.m());
    let loss_kind = cfg.train.loss;
    let c = loss_kind.c(n, m);
    let gd = GdOptions {
        lr: cfg.train.lr,
        epochs: cfg.train.epochs,
        loss: loss_kind,
        track_kinks: model.activation.has_kinks(),
    };
    let ntk_opts = NtkOptions {
        memory_budget_bytes: (cfg.ntk.memory_budget_gb * (1u64 << 30) as f64) as u64,
        ..NtkOptions::default()
    };
    let mut metrics = CsvWriter::create(&dir.join("metrics.csv"), &METRICS_HEADER)?;
    let mut ntk_csv = if cfg.ntk.enabled {
        Some(CsvWriter::create(&dir.join("ntk.csv"), &NTK_HEADER)?)
    } else {
        None
    };
    let bar = if opts.progress {
        ProgressBar::new(gd.epochs as u64 + 1)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} epochs {per_sec} ETA {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut tracker: Option<BoundTracker> = None;
    let (mut ntk_first, mut ntk_last) = (None::<NtkSummary>, None::<NtkSummary>);
    let mut series = (Vec::new(), Vec::new());
    let mut max_lambda_max: Option<f64> = None;
    let mut io_error = None;
    let every = cfg.ntk.every;
    let log_every = cfg.train.log_every.max(1);
    let mut theta_run = prep.theta0.clone();
    let outcome = gradient_descent(model, data, &mut theta_run, &gd, |rec, theta| {
        let last = rec.epoch == gd.epochs;
        series.0.push(rec.t);
        series.1.push(rec.loss);
        if rec.epoch % log_every == 0 || last {
            let row = [
                rec.epoch as f64,
                rec.t,
                rec.loss,
                rec.grad_norm,
                rec.kinks.crossings as f64,
                rec.kinks.chattering as f64,
            ];
            if let Err(e) = metrics.row(&row) {
                io_error = Some(e);
                return Control::Stop;
            }
        }
        if let Some(csv) = ntk_csv.as_mut() {
            if rec.epoch == 0 || last || (every > 0 && rec.epoch % every == 0) {
                bar.set_message(format!("loss {:.3e} · NTK λ_min …", rec.loss));
                let s = ntk::ntk_spectrum(model, theta, &data.x, &ntk_opts);
                let tr = tracker.get_or_insert_with(|| BoundTracker::new(c, rec.loss));
                let chk = tr.observe(rec.epoch, rec.t, rec.loss, s.lambda_min);
                let row = [
                    rec.epoch as f64,
                    rec.t,
                    rec.loss,
                    s.lambda_min,
                    s.lambda_max,
                    s.condition.unwrap_or(f64::INFINITY),
                    s.lambda_min_accuracy,
                    chk.integral,
                    chk.bound,
                    chk.holds as u8 as f64,
                    gd.lr * c * s.lambda_max,
                ];
                if let Err(e) = csv.row(&row).and_then(|_| csv.flush()) {
                    io_error = Some(e);
                    return Control::Stop;
                }
                max_lambda_max =
                    Some(max_lambda_max.map_or(s.lambda_max, |v: f64| v.max(s.lambda_max)));
                if ntk_first.is_none() {
                    ntk_first = Some(s.clone());
                }
                ntk_last = Some(s);
            }
        }
        if rec.epoch % 64 == 0 || last {
            bar.set_message(format!("loss {:.3e}", rec.loss));
            let _ = metrics.flush();
        }
        bar.inc(1);
        Control::Continue
    });
    bar.finish_and_clear();
    metrics.flush()?;
    if let Some(e) = io_error {
        return Err(e);
    }
    let (status, message, outcome) = match outcome {
        Ok(o) => (Status::Completed, None, Some(o)),
        Err(Error::Diverged(msg)) => (Status::Diverged, Some(msg), None),
        Err(e) => return Err(e),
    };
    let (t, l) = &series;
    let half = t.len() / 2;
    let p = model.p();
    let min_lambda = tracker
        .as_ref()
        .and_then(|tr| tr.checks.iter().map(|c| c.lambda_min).reduce(f64::min));
    let summary = RunSummary {
        status,
        message: message.clone(),
        preset: model.preset.clone(),
        activation: model.activation.to_string(),
        activation_class: model.activation.classify().short().into(),
        p,
        n,
        d: data.d(),
        m,
        nm: n * m,
        p_over_nm: p as f64 / (n * m) as f64,
        overparametrized: overparametrized(p, n, m),
        loss: loss_kind.name().into(),
        loss_constant: c,
        lr: gd.lr,
        epochs: gd.epochs,
        last_epoch: outcome
            .as_ref()
            .map_or(t.len().saturating_sub(1), |o| o.last_epoch),
        t_final: t.last().copied().unwrap_or(0.0),
        initial_loss: l.first().copied().unwrap_or(f64::NAN),
        final_loss: l.last().copied().unwrap_or(f64::NAN),
        fitted_rate_tail: fitted_rate(&t[half..], &l[half..]),
        gradient_evaluations: outcome
            .as_ref()
            .map_or(t.len() as u64, |o| o.gradient_evaluations),
        seconds: start.elapsed().as_secs_f64(),
        kinks: outcome
            .as_ref()
            .map(|o| o.kinks.clone())
            .unwrap_or_default(),
        ntk_initial: ntk_first,
        ntk_final: ntk_last,
        certified_rate: min_lambda.map(|lm| 4.0 * c * lm),
        bound_checks: tracker.as_ref().map_or(0, |tr| tr.checks.len()),
        bound_violations: tracker
            .as_ref()
            .map(|tr| tr.violations())
            .unwrap_or_default(),
        gd_stability_max: max_lambda_max.map(|l| gd.lr * c * l),
        graph_min_abs_eigenvalue: data
            .graph
            .as_ref()
            .filter(|g| g.n <= 5000)
            .map(|g| crate::graph::min_abs_eigenvalue(&g.normalized_adjacency())),
    };
    if status == Status::Completed {
        params::save(
            &dir.join("params_final.safetensors"),
            &specs,
            &theta_run,
            &md,
        )?;
    }
    write_json(&dir.join("summary.json"), &summary)?;
    match message {
        Some(msg) => Err(Error::Diverged(msg)),
        None => Ok(summary),
    }
}
