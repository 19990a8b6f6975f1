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

pub mod flow_run;
mod progress;
pub use progress::{CertificationTally, PERSISTENCE_DRAWS, PERSISTENCE_REL};
pub mod witness;

use crate::config::{
    check_layer_outputs, Architecture, Config, DataConfig, GraphConfig, ModelSpec, Preset,
};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::init::init_params;
use crate::io;
use crate::kinks::KinkSummary;
use crate::layers::ImageShape;
use crate::model::Model;
use crate::ntk::NtkSummary;
use crate::presets;
use crate::spec::{build_layers, GraphOperators, LayerSpec, Shape, SpecSite};
use crate::theory::BoundCheck;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    let (n, width, m_data) = match config.data {
        DataConfig::Ball { n, d, m } | DataConfig::Pairs { n, d, m } => (n, d, m),
        DataConfig::Images {
            n,
            channels,
            height,
            width,
            m,
        } => (n, channels * height * width, m),
        DataConfig::Npy { .. } => (0, 0, 0),
    };
    let bytes = (n as u64)
        .saturating_mul((2 * width + m_data) as u64)
        .saturating_mul(8);
    if available_bytes().is_some_and(|avail| bytes > avail) {
        return Err(Error::config(
            &config.source,
            "data.n",
            format!(
                "the data alone need {:.1} GB (n·(d+m) f64 values), more than this machine has: lower data.n or data.d",
                bytes as f64 / 1e9
            ),
        ));
    }
    let (model_cfg, seed) = (&config.model, config.seed);
    let mut data = match config.data {
        DataConfig::Ball { n, d, m } => Dataset::ball(n, d, m, seed),
        DataConfig::Npy { ref x, ref y } => Dataset::from_npy(x, y)?,
        DataConfig::Pairs { n, d, m } => Dataset::pairs(n, d, m, seed),
        DataConfig::Images {
            n,
            channels,
            height,
            width,
            m,
        } => {
            // A U-Net's targets are images with m channels.
            let target = if model_cfg.preset() == Some(Preset::Unet) {
                m * height * width
            } else {
                m
            };
            Dataset::images(n, channels, height, width, target, seed)
        }
    };
    let act = &model_cfg.activation;
    let (d, m) = (data.d(), data.m());
    let image = match config.data {
        DataConfig::Images {
            channels,
            height,
            width,
            ..
        } => Some(ImageShape::new(channels, height, width)),
        _ => None,
    };
    let need_image = || {
        image.ok_or_else(|| {
            Error::config(
                &config.source,
                "data.kind",
                format!("{} needs kind = \"images\"", model_cfg.label()),
            )
        })
    };
    let graph = if model_cfg.needs_graph() {
        let graph = match config.graph.as_ref() {
            Some(GraphConfig::Edges { path }) => {
                Graph::from_edges(data.n(), io::read_edges(path, data.n())?)
            }
            Some(GraphConfig::Knn { k }) => knn_graph(&data, *k, config)?,
            None => knn_graph(&data, crate::config::DEFAULT_K, config)?,
        };
        data.graph = Some(graph.clone());
        Some(graph)
    } else {
        None
    };
    let spec = match &model_cfg.arch {
        Architecture::Preset(spec) => spec,
        Architecture::Layers(layers) => {
            let input = image.map_or(Shape::Vector(d), Shape::Image);
            let model = layer_model(config, layers, input, m, graph.as_ref())?;
            return finish_prepare(config, data, model);
        }
    };
    let need_graph = || {
        graph.as_ref().ok_or_else(|| {
            Error::Invalid(format!(
                "{} needs a graph on the samples",
                model_cfg.label()
            ))
        })
    };
    // One arm per preset, no catch-all: a new ModelSpec variant needs its builder here.
    let model = match spec {
        ModelSpec::Dnn { hidden } => presets::dnn(d, hidden, m, act),
        ModelSpec::Resnet { depth } => presets::resnet(d, *depth, m, act),
        ModelSpec::Gcn { hidden } => {
            let a_hat = need_graph()?.normalized_adjacency();
            presets::gcn(Arc::new(a_hat), d, hidden, m, act)
        }
        ModelSpec::Cheb { hidden, order } => presets::cheb(
            Arc::new(crate::graph::scaled_laplacian(need_graph()?, None)),
            d,
            hidden,
            *order,
            m,
            act,
        ),
        ModelSpec::GraphConv { hidden } => {
            presets::graphconv(Arc::new(need_graph()?.adjacency()), d, hidden, m, act)
        }
        ModelSpec::Cnn { channels, kernel } => {
            presets::cnn(need_image()?, channels, *kernel, m, act)
        }
        ModelSpec::ConvResnet {
            width,
            depth,
            kernel,
        } => presets::conv_resnet(need_image()?, *width, *depth, *kernel, m, act),
        ModelSpec::Unet { channels, kernel } => {
            let shape = need_image()?;
            presets::unet(shape, channels, *kernel, m / (shape.h * shape.w), act)
        }
        ModelSpec::Mobilenet { channels, kernel } => {
            presets::mobilenet(need_image()?, channels, *kernel, m, act)
        }
        ModelSpec::Siamese { hidden, combine } => {
            if d % 2 != 0 {
                return Err(Error::Invalid(format!(
                    "siamese inputs are pairs [a; b]: the data have {d} features, an odd number"
                )));
            }
            presets::siamese(d / 2, hidden, *combine, m, act)
        }
    };
    finish_prepare(config, data, model)
}

/// The model of a layer list on inputs of shape `input` with `m` targets per sample.
fn layer_model(
    config: &Config,
    layers: &[LayerSpec],
    input: Shape,
    m: usize,
    graph: Option<&Graph>,
) -> Result<Model> {
    let site = SpecSite {
        file: &config.source,
        root: "model.layers",
    };
    let operators = graph.map(GraphOperators::new);
    let activation = &config.model.activation;
    let built = build_layers(layers, input, activation, operators.as_ref(), &site)?;
    check_layer_outputs(built.output, Some(m), &config.source)?;
    Ok(built.into_model(activation.clone()))
}

/// The memory check and θ₀, once the model is built.
fn finish_prepare(config: &Config, data: Dataset, model: Model) -> Result<Prepared> {
    check_training_memory(&model, data.n(), config)?;
    let theta0 = init_params(&model.param_specs(), &config.model.init, config.seed);
    Ok(Prepared {
        config: config.clone(),
        data,
        model,
        theta0,
    })
}

/// Bytes a GD epoch needs, estimated: data, θ with its gradient and the update, and every
/// layer's output kept for the reverse pass plus the cotangents flowing back (×3).
pub fn training_bytes(model: &Model, n: usize) -> u64 {
    fn widths(l: &dyn crate::layers::Layer) -> u64 {
        let kids = l.children();
        if kids.is_empty() {
            l.out_dim() as u64
        } else {
            kids.into_iter().map(widths).sum()
        }
    }
    let (n, p) = (n as u64, model.p() as u64);
    8 * (n * (model.in_dim() + model.out_dim()) as u64 + 3 * p + 3 * n * widths(model.net.as_ref()))
}

/// Memory this machine can still give (MemAvailable), when the OS tells.
fn available_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    line.split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()
        .map(|kb| kb * 1024)
}

/// Refuses a run whose training would not fit in memory, before anything is allocated or written.
fn check_training_memory(model: &Model, n: usize, config: &Config) -> Result<()> {
    let need = training_bytes(model, n);
    if let Some(avail) = available_bytes() {
        if need > avail {
            return Err(Error::config(
                &config.source,
                "model",
                format!(
                    "training would need about {:.1} GB (data, parameters and activations for n = {n}, p = {}), \
                     but only {:.1} GB of memory is available: use fewer samples (data.n) or narrower/shallower \
                     layers (model.hidden / model.depth)",
                    need as f64 / 1e9,
                    model.p(),
                    avail as f64 / 1e9
                ),
            ));
        }
    }
    Ok(())
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
    /// Stopped by Ctrl-C/SIGTERM at an epoch boundary; resumable from `checkpoint.json`.
    Interrupted,
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
    /// The linearised prediction and the NTK's drift (when the dense NTK is small enough).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<flow_run::KernelSummary>,
    /// solver = "flow" only: the solve's events, counts and the comparison with GD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<flow_run::FlowRunSummary>,
    /// Where the run's wall-clock time went, and the training's floating-point work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timing: Option<RunTiming>,
    /// Certified λ_min over the NTK checkpoints.
    #[serde(default)]
    pub certification: CertificationTally,
    /// Per activation layer at θ(0): distinct piece patterns across the samples and the units
    /// that keep one piece on every sample (such a layer acts linearly on the data).
    #[serde(default)]
    pub activation_patterns: Vec<crate::ntk::ActivationPatterns>,
    /// Continuous symmetries of the network and the bound rank J ≤ p − #symmetries.
    #[serde(default)]
    pub symmetries: Option<crate::ntk::Symmetries>,
    /// What the run proves (`verdict.kind`, `verdict.line`).
    #[serde(default)]
    pub verdict: Option<crate::experiment::Verdict>,
}

/// Where a run's wall-clock time went (`summary.json` → `timing`). The three parts add up to
/// `seconds`; a resumed run sums its sessions.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct RunTiming {
    /// The precision θ was trained in ("f64" or "f32").
    pub precision: String,
    /// Training: the GD epochs or the flow solve, with metrics, kink tracking and (flow with
    /// `compare_gd`) the GD reference — everything but the two parts below.
    pub seconds_training: f64,
    /// The NTK checkpoints (λ_min, λ_max, bound, drift), `ntk_checkpoints` of them.
    pub seconds_ntk: f64,
    pub ntk_checkpoints: usize,
    /// Forming H(0) once for the linearised prediction and the NTK drift (small nm only).
    pub seconds_kernel_view: f64,
    /// The training's floating-point work by issue 7's convention: 6·n·p per gradient
    /// evaluation (forward and two backward products, 2 flops per multiply-add).
    pub training_work_flop: f64,
    /// Cores the run had: 1 when `reproduce` packed it with others one per core, else all of
    /// them (0 in records written before this field: read as all).
    #[serde(default)]
    pub cores: usize,
    /// Threads of the rayon pool the run trained in (`RAYON_NUM_THREADS`, default: every core).
    /// The engine cuts the samples into two parts per thread ([`crate::engine::Parts`]), which
    /// fixes the order of its sums: an engine run is bitwise reproducible for a given thread
    /// count. A resumed run records its last session's. 0 in records written before this field.
    #[serde(default)]
    pub threads: usize,
}

impl RunTiming {
    pub(crate) fn of(prep: &Prepared, ck: &progress::Checkpoint) -> Self {
        let evaluations = ck.gradient_evaluations.max(ck.series_t.len() as u64);
        let other = ck.ntk_seconds + ck.kernel_view_seconds;
        Self {
            precision: prep.config.train.precision.name().to_string(),
            seconds_training: (ck.seconds - other).max(0.0),
            seconds_ntk: ck.ntk_seconds,
            ntk_checkpoints: ck.ntk_checkpoints,
            seconds_kernel_view: ck.kernel_view_seconds,
            training_work_flop: 6.0 * (prep.data.n() * prep.model.p()) as f64 * evaluations as f64,
            cores: match crate::batch::par() {
                faer::Par::Seq => 1,
                faer::Par::Rayon(n) => n.get(),
            },
            threads: rayon::current_num_threads(),
        }
    }
}

/// Options that do not change results.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Draw a progress bar on stderr (hidden anyway when stderr is not a terminal).
    pub progress: bool,
    /// Replace an existing run directory at `out`.
    pub force: bool,
    /// Continue the interrupted run in `out` from its checkpoint.
    pub resume: bool,
    /// Behave as if interrupted right after this epoch (for tests of resumption).
    pub stop_after_epoch: Option<usize>,
}

const METRICS_HEADER: [&str; 7] = [
    "epoch",
    "t",
    "loss",
    "grad_norm",
    "kink_crossings",
    "chattering",
    "loss_linearised",
];
const NTK_HEADER: [&str; 14] = [
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
    "ntk_drift",
    "rank",
    "lambda_min_lower",
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

/// Fills in the verdict, writes the witness of a counterexample (`witness/`), then
/// `summary.json`; returns the final summary.
fn write_summary(prep: &Prepared, dir: &Path, summary: RunSummary) -> Result<RunSummary> {
    let summary = progress::with_verdict(summary);
    if summary.verdict.as_ref().map(|v| v.kind)
        == Some(crate::experiment::VerdictKind::Counterexample)
    {
        witness::write_run_witness(prep, &dir.join("witness"))?;
    }
    write_json(&dir.join("summary.json"), &summary)?;
    Ok(summary)
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Invalid(e.to_string()))?;
    io::write_atomic(path, text.as_bytes())
}

fn param_metadata(prep: &Prepared) -> BTreeMap<String, String> {
    let mut md = BTreeMap::new();
    md.insert("format".into(), "pt".into());
    md.insert("preset".into(), prep.model.preset_name().to_string());
    md.insert("p".into(), prep.model.p().to_string());
    md.insert("seed".into(), prep.config.seed.to_string());
    md.insert("activation".into(), prep.model.activation.to_string());
    md
}

/// The checkpoint a paused run leaves in its directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.json";

/// Trains `prep` by gradient descent and writes the run directory `out`.
///
/// On divergence the directory is still written (metrics so far, status "diverged") and the
/// error is returned. On interruption (Ctrl-C, SIGTERM, [`crate::interrupt::request`] or
/// `opts.stop_after_epoch`) it is written with status "interrupted" and a checkpoint, and
/// `Error::Interrupted` says how to resume; with `opts.resume` a run continues from that
/// checkpoint and ends bit-identical to one that was never interrupted.
pub fn execute(prep: &Prepared, out: &Path, opts: &RunOptions) -> Result<RunSummary> {
    let resume = if opts.resume {
        Some(load_checkpoint(prep, out)?)
    } else {
        None
    };
    if resume.is_none() {
        check_output_dir(out, opts.force)?;
    }
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let stage = staging_dir(out);
    if stage.exists() {
        std::fs::remove_dir_all(&stage).map_err(|e| Error::io(&stage, e))?;
    }
    if resume.is_some() {
        std::fs::rename(out, &stage).map_err(|e| Error::io(out, e))?;
    } else {
        std::fs::create_dir_all(&stage).map_err(|e| Error::io(&stage, e))?;
    }
    let result = if prep.config.train.solver == crate::config::Solver::Flow {
        flow_run::write_flow_run(prep, &stage, opts)
    } else {
        progress::write_run(prep, &stage, opts, resume)
    };
    let result = result.map_err(|e| match e {
        Error::Interrupted(msg) => {
            Error::Interrupted(msg.replace("<this run>", &out.display().to_string()))
        }
        other => other,
    });
    let keep =
        result.is_ok() || matches!(result, Err(Error::Diverged(_)) | Err(Error::Interrupted(_)));
    if keep {
        if out.exists() {
            std::fs::remove_dir_all(out).map_err(|e| Error::io(out, e))?;
        }
        std::fs::rename(&stage, out).map_err(|e| Error::io(out, e))?;
    } else if opts.resume {
        // Put the interrupted run back as it was.
        let _ = std::fs::rename(&stage, out);
    } else {
        let _ = std::fs::remove_dir_all(&stage);
    }
    result
}

/// Reads the checkpoint of the interrupted run in `out`, checking it belongs to this config.
fn load_checkpoint(prep: &Prepared, out: &Path) -> Result<progress::Checkpoint> {
    let path = out.join(CHECKPOINT_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Error::Invalid(format!(
            "--resume: cannot read {} ({e}): only a run stopped by Ctrl-C/SIGTERM can be resumed; \
             start a new run without --resume",
            path.display()
        ))
    })?;
    let ck: progress::Checkpoint = serde_json::from_str(&text)
        .map_err(|e| Error::input(&path, format!("not a gradflow checkpoint: {e}")))?;
    if ck.config_toml != prep.config.to_toml() {
        return Err(Error::Invalid(format!(
            "--resume: {} was started from a different config (its config.toml differs from {}): \
             resume with the config it was started with",
            out.display(),
            prep.config.source.display()
        )));
    }
    if ck.theta.len() != prep.model.p() {
        return Err(Error::input(
            &path,
            "the checkpoint's θ does not match the model's p",
        ));
    }
    Ok(ck)
}
