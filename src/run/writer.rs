//! The one writer both run loops (GD and flow) write a run directory through: the inputs a run
//! starts from (resolved config, data, graph, θ₀), metrics.csv rows, ntk.csv rows at NTK
//! checkpoints, and at the end sliding.csv, θ (completed) or the checkpoint (interrupted), the
//! witness of a counterexample and `summary.json`. A resumed run appends to the CSV files of
//! the session it continues.

use super::output::CHECKPOINT_FILE;
use super::state::Checkpoint;
use super::summary::{with_verdict, RunSummary, Status, NTK_HEADER};
use super::{witness, Prepared};
use crate::error::{Error, Result};
use crate::flow::kernel::Drift;
use crate::io::{self, CsvWriter};
use crate::ntk::NtkOptions;
use crate::params;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// An open run directory.
pub(super) struct RunWriter<'a> {
    prep: &'a Prepared,
    dir: &'a Path,
    metrics: CsvWriter,
    /// ntk.csv, when `ntk.enabled`.
    ntk: Option<CsvWriter>,
    ntk_opts: NtkOptions,
    /// c in L = c‖e‖².
    loss_constant: f64,
}

impl<'a> RunWriter<'a> {
    /// Opens the run directory `dir`: a fresh run writes its inputs and creates metrics.csv
    /// (with `metrics_header`) and ntk.csv; a resumed run appends to both.
    pub(super) fn open(
        prep: &'a Prepared,
        dir: &'a Path,
        metrics_header: &[&str],
        resuming: bool,
    ) -> Result<Self> {
        if !resuming {
            write_inputs(prep, dir)?;
        }
        let open = |name: &str, header: &[&str]| {
            if resuming {
                CsvWriter::append(&dir.join(name), header)
            } else {
                CsvWriter::create(&dir.join(name), header)
            }
        };
        let cfg = &prep.config;
        let metrics = open("metrics.csv", metrics_header)?;
        let ntk = if cfg.ntk.enabled {
            Some(open("ntk.csv", &NTK_HEADER)?)
        } else {
            None
        };
        Ok(Self {
            prep,
            dir,
            metrics,
            ntk,
            ntk_opts: ntk_options(prep),
            loss_constant: cfg.train.loss.c(prep.data.n(), prep.data.m()),
        })
    }

    pub(super) fn metrics_row(&mut self, row: &[f64]) -> Result<()> {
        self.metrics.row(row)
    }

    /// Flushes metrics.csv, ignoring errors (the final [`Self::flush`] reports them).
    pub(super) fn flush_metrics_lazily(&mut self) {
        let _ = self.metrics.flush();
    }

    /// True when NTK checkpoints are written (`ntk.enabled`).
    pub(super) fn has_ntk(&self) -> bool {
        self.ntk.is_some()
    }

    /// One NTK checkpoint at record `index` (time t, loss L), recorded in `ck` (see
    /// [`Checkpoint::ntk_checkpoint`]) and written to ntk.csv at once. No-op without ntk.csv.
    pub(super) fn ntk_checkpoint(
        &mut self,
        ck: &mut Checkpoint,
        theta: &[f64],
        drift: Option<&Drift>,
        at: (usize, f64, f64),
        gd_step: Option<f64>,
        sliding: &[(usize, u16)],
    ) -> Result<()> {
        let Some(csv) = self.ntk.as_mut() else {
            return Ok(());
        };
        let row = ck.ntk_checkpoint(
            self.prep,
            theta,
            sliding,
            &self.ntk_opts,
            drift,
            self.loss_constant,
            at,
            gd_step,
        )?;
        csv.row(&row)?;
        csv.flush()
    }

    /// Flushes metrics.csv and ntk.csv.
    pub(super) fn flush(&mut self) -> Result<()> {
        self.metrics.flush()?;
        if let Some(csv) = self.ntk.as_mut() {
            csv.flush()?;
        }
        Ok(())
    }

    /// Ends the run: sliding.csv (`sliding`: rows entry, start, end), then by `summary.status`
    /// θ (completed: `params_final.safetensors`, and a stale checkpoint removed) or
    /// `checkpoint` (interrupted: [`CHECKPOINT_FILE`]), then the verdict, the witness of a
    /// counterexample and `summary.json`. Returns the summary, or the diverged / interrupted
    /// error carrying its message.
    pub(super) fn finish(
        mut self,
        summary: RunSummary,
        theta: &[f64],
        sliding: Option<&[[f64; 3]]>,
        checkpoint: Option<&impl Serialize>,
    ) -> Result<RunSummary> {
        self.flush()?;
        let dir = self.dir;
        if let Some(rows) = sliding {
            let mut csv = CsvWriter::create(&dir.join("sliding.csv"), &["entry", "start", "end"])?;
            for row in rows {
                csv.row(row)?;
            }
            csv.flush()?;
        }
        let (status, message) = (summary.status, summary.message.clone());
        match status {
            Status::Completed => {
                let (prep, specs) = (self.prep, self.prep.model.param_specs());
                let md = param_metadata(prep);
                params::save(&dir.join("params_final.safetensors"), &specs, theta, &md)?;
                let stale = dir.join(CHECKPOINT_FILE);
                if stale.exists() {
                    std::fs::remove_file(&stale).map_err(|e| Error::io(&stale, e))?;
                }
            }
            Status::Interrupted => {
                if let Some(ck) = checkpoint {
                    write_json(&dir.join(CHECKPOINT_FILE), ck)?;
                }
            }
            Status::Diverged => {}
        }
        let summary = write_summary(self.prep, dir, summary)?;
        match (status, message) {
            (Status::Diverged, Some(msg)) => Err(Error::Diverged(msg)),
            (Status::Interrupted, Some(msg)) => Err(Error::Interrupted(msg)),
            _ => Ok(summary),
        }
    }
}

/// The NTK settings of a run (its memory budget from `ntk.memory_budget_gb`).
pub(super) fn ntk_options(prep: &Prepared) -> NtkOptions {
    NtkOptions {
        memory_budget_bytes: memory_budget(prep),
        ..NtkOptions::default()
    }
}

/// `ntk.memory_budget_gb` in bytes.
pub(super) fn memory_budget(prep: &Prepared) -> u64 {
    (prep.config.ntk.memory_budget_gb * (1u64 << 30) as f64) as u64
}

/// Writes what a run starts from: the resolved config, the data (and graph), θ(0).
fn write_inputs(prep: &Prepared, dir: &Path) -> Result<()> {
    let data = &prep.data;
    io::write_atomic(&dir.join("config.toml"), prep.config.to_toml().as_bytes())?;
    io::write_matrix(&dir.join("x.npy"), data.x.as_slice(), data.n(), data.d())?;
    io::write_matrix(&dir.join("y.npy"), data.y.as_slice(), data.n(), data.m())?;
    if let Some(g) = &data.graph {
        io::write_edges(&dir.join("edges.csv"), &g.edges)?;
    }
    params::save(
        &dir.join("params_init.safetensors"),
        &prep.model.param_specs(),
        &prep.theta0,
        &param_metadata(prep),
    )
}

/// Fills in the verdict, writes the witness of a counterexample (`witness/`), then
/// `summary.json`; returns the final summary.
fn write_summary(prep: &Prepared, dir: &Path, summary: RunSummary) -> Result<RunSummary> {
    let summary = with_verdict(summary);
    if summary.verdict.as_ref().map(|v| v.kind)
        == Some(crate::experiment::VerdictKind::Counterexample)
    {
        witness::write_run_witness(prep, &dir.join("witness"))?;
    }
    write_json(&dir.join("summary.json"), &summary)?;
    Ok(summary)
}

/// The run's progress bar over `len` ticks with `template` (hidden when `show` is false).
pub(super) fn progress_bar(show: bool, len: u64, template: &str) -> indicatif::ProgressBar {
    let bar = if show {
        indicatif::ProgressBar::new(len)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let style = indicatif::ProgressStyle::with_template(template);
    bar.set_style(style.unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()));
    bar
}

pub(super) fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
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
