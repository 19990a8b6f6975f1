//! `CoreModel`: one network and its current parameters θ, built from a config exactly as the
//! CLI builds it ([`gradflow::run::prepare`]), with the NTK H = J Jᵀ, its spectrum and λ_min.

use crate::arrays::{batch_from, matrix_to_py, theta_from, vector_to_py};
use crate::{interruptible, parse_config, to_py};
use gradflow::config::Config;
use gradflow::error::Error;
use gradflow::io::safetensors::NamedTensor;
use gradflow::model::Model;
use gradflow::ntk::{self, NtkOptions};
use numpy::{PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::prelude::*;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How a model was described: a config (its `[model]` table is reused by `train`), or a layer
/// list in the dict form of docs/layer-spec.md (`gradflow_core::spec`).
pub enum Recipe {
    Config {
        json: serde_json::Value,
        config: Box<Config>,
    },
    Spec {
        json: String,
        seed: u64,
    },
}

/// The network and its recipe.
pub struct Built {
    pub model: Model,
    pub recipe: Recipe,
}

#[pyclass(module = "gradflow._gradflow", frozen)]
pub struct CoreModel {
    pub built: Arc<Built>,
    pub theta: Mutex<Arc<Vec<f64>>>,
}

impl CoreModel {
    fn with(model: Model, recipe: Recipe, theta: Vec<f64>) -> Self {
        Self {
            built: Arc::new(Built { model, recipe }),
            theta: Mutex::new(Arc::new(theta)),
        }
    }
    pub fn theta(&self) -> Arc<Vec<f64>> {
        self.theta.lock().expect("θ lock").clone()
    }
    fn theta_or(&self, params: Option<PyReadonlyArray1<'_, f64>>) -> PyResult<Arc<Vec<f64>>> {
        match params {
            None => Ok(self.theta()),
            Some(t) => Ok(Arc::new(
                theta_from(&t, self.built.model.p(), "params").map_err(to_py)?,
            )),
        }
    }
}

fn nothing() {}

#[pymethods]
impl CoreModel {
    /// Builds the model of a config given as JSON (the TOML file's structure; `data` fixes the
    /// input shape); θ is the config's initialisation (its `init` and `seed`).
    #[new]
    fn new(config_json: &str, label: &str) -> PyResult<Self> {
        let cwd = std::env::current_dir().unwrap_or_default();
        let config = parse_config(config_json, label, &cwd).map_err(to_py)?;
        let prep = gradflow::run::prepare(&config).map_err(to_py)?;
        let json = serde_json::from_str(config_json).expect("parsed above");
        let recipe = Recipe::Config {
            json,
            config: Box::new(config),
        };
        Ok(Self::with(prep.model, recipe, prep.theta0))
    }

    /// Builds the model of a layer list in its dict form (JSON), θ drawn by its `init` from
    /// `seed` as the CLI draws it.
    #[staticmethod]
    fn from_spec(spec_json: &str, seed: u64) -> PyResult<Self> {
        let built = gradflow::spec::model_from_json(spec_json, None).map_err(to_py)?;
        let theta = built.init_params(seed);
        let recipe = Recipe::Spec {
            json: spec_json.to_string(),
            seed,
        };
        Ok(Self::with(built.model, recipe, theta))
    }

    #[getter]
    fn p(&self) -> usize {
        self.built.model.p()
    }
    #[getter]
    fn in_dim(&self) -> usize {
        self.built.model.in_dim()
    }
    #[getter]
    fn out_dim(&self) -> usize {
        self.built.model.out_dim()
    }
    #[getter]
    fn preset(&self) -> String {
        self.built.model.preset_name().to_string()
    }
    #[getter]
    fn activation(&self) -> String {
        self.built.model.activation.to_string()
    }
    /// The architecture, one line per layer (as `gradflow inspect` prints it).
    fn summary_lines(&self) -> Vec<String> {
        self.built.model.summary_lines()
    }
    /// (name, shape) of every parameter tensor, in θ's order.
    fn param_specs(&self) -> Vec<(String, Vec<usize>)> {
        let specs = self.built.model.param_specs();
        specs.into_iter().map(|s| (s.name, s.shape)).collect()
    }
    /// θ as a flat array (a copy).
    fn theta_array<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        vector_to_py(py, self.theta().as_ref().clone())
    }
    /// θ (flat, in the model's order) from named tensors, every one of the model's present
    /// with its shape and nothing else; `source` names them in errors.
    fn flatten_tensors<'py>(
        &self,
        py: Python<'py>,
        tensors: Vec<(String, Vec<usize>, PyReadonlyArray1<'py, f64>)>,
        source: &str,
    ) -> PyResult<Bound<'py, PyArray1<f64>>> {
        let tensors = tensors
            .into_iter()
            .map(|(name, shape, data)| NamedTensor {
                name,
                shape,
                data: data.as_array().iter().copied().collect(),
            })
            .collect();
        let theta = gradflow::params::from_tensors(
            &self.built.model.param_specs(),
            tensors,
            Path::new(source),
        )
        .map_err(to_py)?;
        Ok(vector_to_py(py, theta))
    }
    /// Replaces θ by a flat vector of length p.
    fn set_theta(&self, theta: PyReadonlyArray1<'_, f64>) -> PyResult<()> {
        let theta = theta_from(&theta, self.built.model.p(), "params").map_err(to_py)?;
        *self.theta.lock().expect("θ lock") = Arc::new(theta);
        Ok(())
    }
    /// The network's outputs u(θ) on x, n × m.
    #[pyo3(signature = (x, params=None))]
    fn forward<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArray2<'py, f64>,
        params: Option<PyReadonlyArray1<'py, f64>>,
    ) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let model = &self.built.model;
        let x = batch_from(&x, model.in_dim(), "x").map_err(to_py)?;
        let theta = self.theta_or(params)?;
        let built = self.built.clone();
        let (n, m) = (x.n(), model.out_dim());
        let u = interruptible(
            py,
            move || Ok(built.model.outputs(&theta, &x).into_vec()),
            nothing,
            Duration::ZERO,
        )?;
        Ok(matrix_to_py(py, u, n, m))
    }
    /// The empirical NTK H = J Jᵀ on x (nm × nm, index i·m + a), dense; refused past
    /// `memory_budget_gb` (use `spectrum` / `lambda_min`, which go matrix-free).
    #[pyo3(signature = (x, params=None, memory_budget_gb=8.0))]
    fn ntk<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArray2<'py, f64>,
        params: Option<PyReadonlyArray1<'py, f64>>,
        memory_budget_gb: f64,
    ) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let model = &self.built.model;
        let x = batch_from(&x, model.in_dim(), "x").map_err(to_py)?;
        let theta = self.theta_or(params)?;
        let dim = x.n() * model.out_dim();
        let need = ntk::gram_bytes(model, x.n());
        let budget = budget_bytes(memory_budget_gb).map_err(to_py)?;
        if need > budget {
            return Err(to_py(Error::Invalid(format!(
                "the dense NTK ({dim} × {dim}) needs about {:.2} GB, more than memory_budget_gb = {memory_budget_gb}: \
                 raise memory_budget_gb, or use model.lambda_min(x) / model.spectrum(x), which go matrix-free",
                need as f64 / 1e9
            ))));
        }
        let built = self.built.clone();
        let h = interruptible(
            py,
            move || {
                let (h, _) = ntk::gram(&built.model, &theta, &x);
                // H is symmetric: its column-major entries are its row-major ones.
                let mut out = Vec::with_capacity(dim * dim);
                for j in 0..dim {
                    out.extend_from_slice(h.col_as_slice(j));
                }
                Ok(out)
            },
            nothing,
            Duration::ZERO,
        )?;
        Ok(matrix_to_py(py, h, dim, dim))
    }
    /// The spectrum summary of H on x as JSON (the `ntk_initial` record of `summary.json`):
    /// dense within `memory_budget_gb`, matrix-free past it; with `jacobian`, J's rank and the
    /// certified λ_min where J fits the budget.
    #[pyo3(signature = (x, params=None, memory_budget_gb=8.0, jacobian=true, full=false))]
    fn spectrum_json(
        &self,
        py: Python<'_>,
        x: PyReadonlyArray2<'_, f64>,
        params: Option<PyReadonlyArray1<'_, f64>>,
        memory_budget_gb: f64,
        jacobian: bool,
        full: bool,
    ) -> PyResult<String> {
        let model = &self.built.model;
        let x = batch_from(&x, model.in_dim(), "x").map_err(to_py)?;
        let theta = self.theta_or(params)?;
        let opts = NtkOptions {
            memory_budget_bytes: budget_bytes(memory_budget_gb).map_err(to_py)?,
            full_spectrum: full,
            jacobian,
            block_ranks: jacobian,
            ..NtkOptions::default()
        };
        let built = self.built.clone();
        interruptible(
            py,
            move || {
                let s = ntk::ntk_spectrum(&built.model, &theta, &x, &opts)?;
                serde_json::to_string(&s).map_err(|e| Error::Invalid(e.to_string()))
            },
            nothing,
            Duration::ZERO,
        )
    }
    /// The description the model was built from, as JSON: the config, or the layer list.
    fn recipe_json(&self) -> String {
        match &self.built.recipe {
            Recipe::Config { json, .. } => json.to_string(),
            Recipe::Spec { json, .. } => json.clone(),
        }
    }
    /// The resolved config as the CLI would write it (`config.toml`); None for a layer list.
    fn config_toml(&self) -> Option<String> {
        match &self.built.recipe {
            Recipe::Config { config, .. } => Some(config.to_toml()),
            Recipe::Spec { .. } => None,
        }
    }
}

fn budget_bytes(gb: f64) -> Result<u64, Error> {
    if !(gb.is_finite() && gb > 0.0) {
        return Err(Error::Invalid(format!(
            "memory_budget_gb = {gb}: it must be a positive number of gigabytes"
        )));
    }
    Ok((gb * (1u64 << 30) as f64) as u64)
}
