//! Runs from Python: `train` (one run directory, written by the CLI's
//! [`gradflow::run::execute`] from the model's own θ), `reproduce` (the paper's Section 4),
//! reports, and reading parameter files back.

use crate::arrays::vector_to_py;
use crate::model::{CoreModel, Recipe};
use crate::{interruptible, parse_config, to_py};
use gradflow::config::{DataConfig, Precision, Solver};
use gradflow::error::Error;
use gradflow::experiment::{self, ReproduceOptions, Scale, Shard};
use gradflow::run::{self, RunOptions};
use numpy::PyArray1;
use pyo3::prelude::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Stops a run at its next epoch boundary (what Ctrl-C does on the command line).
fn request_stop() {
    gradflow::interrupt::request();
}

/// Trains `model` from its current θ on the data in `data_dir` (`x.npy`, `y.npy`), with the
/// `[train]` and `[ntk]` tables in `run_json`, and writes the run directory `out` and its
/// report. Returns `summary.json`'s text. A diverged run is returned (its status says so);
/// Ctrl-C stops the run at the next epoch boundary, keeps the directory (status
/// "interrupted") and raises `KeyboardInterrupt`.
#[pyfunction]
#[pyo3(signature = (model, run_json, data_dir, out, force=false, progress=false))]
pub fn train(
    py: Python<'_>,
    model: &CoreModel,
    run_json: &str,
    data_dir: &str,
    out: &str,
    force: bool,
    progress: bool,
) -> PyResult<String> {
    let mut config: serde_json::Value = match &model.built.recipe {
        Recipe::Config { json, .. } => json.clone(),
        // A layer list trains as the CLI trains `[[model.layers]]`: the spec becomes the
        // config's [model] section (the same builder, so the same p and parameter order).
        Recipe::Spec { json, seed } => {
            let spec: serde_json::Value = serde_json::from_str(json)
                .map_err(|e| to_py(Error::Invalid(format!("the model's layer list: {e}"))))?;
            serde_json::json!({ "seed": seed, "model": spec })
        }
    };
    let extra: serde_json::Value = serde_json::from_str(run_json)
        .map_err(|e| to_py(Error::Invalid(format!("train options: {e}"))))?;
    for key in ["train", "ntk"] {
        match extra.get(key) {
            Some(v) => config[key] = v.clone(),
            None => {
                config.as_object_mut().map(|o| o.remove(key));
            }
        }
    }
    config["data"] = serde_json::json!({"kind": "npy", "x": "x.npy", "y": "y.npy"});
    let data_dir = PathBuf::from(data_dir);
    let mut parsed =
        parse_config(&config.to_string(), "gradflow.train", &data_dir).map_err(to_py)?;
    let out = PathBuf::from(out);
    run::check_output_dir(&out, force).map_err(to_py)?;
    let theta = model.theta();
    gradflow::interrupt::clear();
    interruptible(
        py,
        move || {
            let mut prep = run::prepare(&parsed)?;
            if prep.model.p() != theta.len() {
                return Err(Error::Invalid(format!(
                    "the model rebuilt for training has p = {} but θ has {} entries",
                    prep.model.p(),
                    theta.len()
                )));
            }
            if prep.m() != prep.model.out_dim() {
                return Err(Error::Invalid(format!(
                    "y has {} columns but the model has {} outputs: pass y with shape (n, {})",
                    prep.m(),
                    prep.model.out_dim(),
                    prep.model.out_dim()
                )));
            }
            prep.theta0 = theta.as_ref().clone();
            // The run directory holds its own x.npy and y.npy: its config.toml points at them.
            parsed.data = DataConfig::Npy {
                x: "x.npy".into(),
                y: "y.npy".into(),
            };
            prep.config = parsed;
            let opts = RunOptions {
                progress,
                force,
                resume: false,
                ..RunOptions::default()
            };
            let summary = match run::execute(&prep, &out, &opts) {
                Ok(s) => s,
                Err(Error::Diverged(_)) => read_summary(&out)?,
                Err(e) => return Err(e),
            };
            // The report is extra: a failure to draw it leaves the run intact.
            let _ = gradflow::report::single::build_run_report(&out, &Default::default());
            serde_json::to_string(&summary).map_err(|e| Error::Invalid(e.to_string()))
        },
        request_stop,
        Duration::from_secs(600),
    )
}

fn read_summary(dir: &Path) -> Result<run::RunSummary, Error> {
    let path = dir.join("summary.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::input(&path, e.to_string()))
}

/// The solver `reproduce` runs at `scale` and `precision` when none is given: "flow" at quick
/// scale in f64, else "gd" ([`Scale::default_solver`]).
#[pyfunction]
pub fn default_solver(scale: &str, precision: &str) -> PyResult<&'static str> {
    let scale = Scale::parse(scale).map_err(to_py)?;
    let precision = if precision == "f32" {
        Precision::F32
    } else {
        Precision::F64
    };
    Ok(match scale.default_solver(precision) {
        Solver::Flow => "flow",
        Solver::Gd => "gd",
    })
}

/// The paper's Section 4 (`gradflow reproduce`), written to `out` with its report; returns
/// `reproduce.json`'s text. Ctrl-C stops it as on the command line (finished runs kept, the
/// same call resumes).
#[pyfunction]
#[pyo3(signature = (scale, only, out, seeds=1, shard=None, solver=None, precision="f64", ntk_every=None, no_ntk=false, threshold_seeds=20, progress=false))]
#[allow(clippy::too_many_arguments)]
pub fn reproduce(
    py: Python<'_>,
    scale: &str,
    only: Vec<String>,
    out: &str,
    seeds: u64,
    shard: Option<&str>,
    solver: Option<&str>,
    precision: &str,
    ntk_every: Option<usize>,
    no_ntk: bool,
    threshold_seeds: u64,
    progress: bool,
) -> PyResult<String> {
    let scale = Scale::parse(scale).map_err(to_py)?;
    let precision = match precision {
        "f64" => Precision::F64,
        "f32" => Precision::F32,
        other => {
            return Err(to_py(Error::Invalid(format!(
                "precision `{other}`: choose \"f64\" or \"f32\" (f32 trains the dnn, resnet and gcn runs in f32)"
            ))))
        }
    };
    let solver = match solver {
        None => scale.default_solver(precision),
        Some("gd") => Solver::Gd,
        Some("flow") => Solver::Flow,
        Some(other) => {
            return Err(to_py(Error::Invalid(format!(
                "solver `{other}`: choose \"gd\" or \"flow\" (or leave it out: flow at quick scale, gd at paper scale)"
            ))))
        }
    };
    if seeds == 0 {
        return Err(to_py(Error::Invalid("seeds must be at least 1".into())));
    }
    let shard = shard.map(Shard::parse).transpose().map_err(to_py)?;
    let opts = ReproduceOptions {
        scale,
        only,
        seeds,
        out: PathBuf::from(out),
        shard,
        progress,
        precision,
        solver,
        ntk_every,
        no_ntk,
        threshold_seeds,
    };
    gradflow::interrupt::clear();
    interruptible(
        py,
        move || {
            let index = experiment::reproduce(&opts)?;
            if opts.shard.is_none() {
                let _ = gradflow::report::build_report(&opts.out);
            }
            serde_json::to_string(&index).map_err(|e| Error::Invalid(e.to_string()))
        },
        request_stop,
        Duration::from_secs(600),
    )
}

/// (Re)builds the report of a run or reproduce directory; returns the path of report.html and
/// the warnings.
#[pyfunction]
pub fn build_report(py: Python<'_>, dir: &str) -> PyResult<(String, Vec<String>)> {
    let dir = PathBuf::from(dir);
    interruptible(
        py,
        move || {
            let files = if dir.join("reproduce.json").exists() {
                gradflow::report::build_report(&dir)?
            } else {
                gradflow::report::single::build_run_report(&dir, &Default::default())?
            };
            Ok((files.html.display().to_string(), files.warnings))
        },
        || {},
        Duration::ZERO,
    )
}

/// One tensor for Python: name, shape, flat float64 data.
type PyTensor<'py> = (String, Vec<usize>, Bound<'py, PyArray1<f64>>);

/// The tensors of a safetensors file (f64 or f32) as (name, shape, flat float64 array).
#[pyfunction]
pub fn read_safetensors<'py>(py: Python<'py>, path: &str) -> PyResult<Vec<PyTensor<'py>>> {
    let tensors = gradflow::io::safetensors::read_tensors(Path::new(path)).map_err(to_py)?;
    Ok(tensors
        .into_iter()
        .map(|t| (t.name, t.shape, vector_to_py(py, t.data)))
        .collect())
}
