//! `gradflow reproduce` and `gradflow report`: the paper's sweeps (sharded, resumable, or as a
//! Slurm job), their verdicts on the terminal, and the report of a reproduce directory.

use crate::Cli;
use clap::Parser;
use gradflow::error::{Error, Result};
use gradflow::experiment::{self, ReproduceIndex, ReproduceOptions, Scale, Shard};
use std::path::{Path, PathBuf};

/// `reproduce --emit-slurm N`: checks the options by parsing them as a shard would, then writes
/// the job ([`gradflow::experiment::slurm`]) and says how to submit it.
pub(crate) fn emit_slurm_job(args: Vec<String>, shards: usize, out: PathBuf) -> Result<()> {
    let mut check = vec!["gradflow".to_string(), "reproduce".into()];
    check.extend(args.iter().cloned());
    Cli::try_parse_from(&check).map_err(|e| Error::Invalid(format!("--emit-slurm: {e}")))?;
    Scale::parse(&args[1])?;
    let binary = std::env::current_exe().map_err(|e| Error::io("gradflow binary", e))?;
    let out = std::path::absolute(&out).map_err(|e| Error::io(&out, e))?;
    let job = gradflow::experiment::slurm::SlurmJob {
        binary,
        reproduce_args: args,
        shards,
        out,
    };
    let dir = job.write()?;
    println!(
        "wrote the Slurm job for {shards} shards to {}: submit with `{}`",
        dir.display(),
        dir.join("submit.sh").display()
    );
    Ok(())
}

/// `--solver`'s default for `--scale` and `--precision` ([`Scale::default_solver`]); "gd" when
/// either is invalid (the error comes when they are parsed).
pub(crate) fn default_solver(scale: &str, precision: &str) -> &'static str {
    use gradflow::config::{Precision, Solver};
    let precision = if precision == "f32" {
        Precision::F32
    } else {
        Precision::F64
    };
    match Scale::parse(scale).map(|s| s.default_solver(precision)) {
        Ok(Solver::Flow) => "flow",
        _ => "gd",
    }
}

pub(crate) fn reproduce(
    scale: &str,
    only: Vec<String>,
    seeds: u64,
    out: Option<PathBuf>,
    shard: Option<&str>,
    quiet: bool,
    (precision, solver, defaulted, ntk_every, no_ntk, threshold_seeds): (
        &str,
        &str,
        bool,
        Option<usize>,
        bool,
        u64,
    ),
) -> Result<()> {
    let scale = Scale::parse(scale)?;
    let precision = match precision {
        "f64" => gradflow::config::Precision::F64,
        "f32" => gradflow::config::Precision::F32,
        other => {
            return Err(Error::Invalid(format!(
                "--precision `{other}`: choose f64 or f32 (f32 trains the dnn, resnet and gcn runs in f32)"
            )))
        }
    };
    let solver = match solver {
        "flow" => gradflow::config::Solver::Flow,
        _ => gradflow::config::Solver::Gd,
    };
    if solver == gradflow::config::Solver::Flow && precision == gradflow::config::Precision::F32 {
        return Err(Error::Invalid(
            "--precision f32 applies to GD runs; the flow solver integrates in f64: drop one of \
             --precision f32 / --solver flow"
                .into(),
        ));
    }
    let suffix = match solver {
        gradflow::config::Solver::Flow => "-flow",
        gradflow::config::Solver::Gd => "",
    };
    if seeds == 0 {
        return Err(Error::Invalid("--seeds must be at least 1".into()));
    }
    let shard = shard.map(Shard::parse).transpose()?;
    let out = out.unwrap_or_else(|| {
        PathBuf::from("runs").join(format!("reproduce-{}{suffix}", scale.name()))
    });
    let by = match (solver, defaulted) {
        (gradflow::config::Solver::Flow, true) => {
            " by the gradient-flow solver (the default at quick scale; --solver gd runs GD)"
        }
        (gradflow::config::Solver::Flow, false) => " by the gradient-flow solver",
        (gradflow::config::Solver::Gd, true) if scale == Scale::Paper => {
            " by GD, the paper's method (the flow takes weeks a run at this size)"
        }
        (gradflow::config::Solver::Gd, _) => " by GD",
    };
    eprintln!(
        "reproducing Section 4 at {} scale{by} → {}",
        scale.name(),
        out.display()
    );
    let opts = ReproduceOptions {
        scale,
        only,
        seeds,
        out: out.clone(),
        shard,
        progress: !quiet,
        precision,
        solver,
        ntk_every,
        no_ntk,
        threshold_seeds,
    };
    let idx = experiment::reproduce(&opts)?;
    print_verdicts(&idx);
    if let Some(t) = &idx.timing {
        println!("{}", t.line());
    }
    if shard.is_some() {
        println!("shard done: join all shards with `gradflow merge DIR... --out DIR`");
        return Ok(());
    }
    report(&out)
}

pub(crate) fn print_verdicts(idx: &ReproduceIndex) {
    use gradflow::experiment::VerdictKind;
    for a in &idx.ablations {
        let count = |k: VerdictKind| a.runs.iter().filter(|r| r.verdict.kind == k).count();
        println!(
            "{} — {} runs: {} confirmed, {} counterexample(s), {} under-parametrised, {} undecided",
            a.name,
            a.runs.len(),
            count(VerdictKind::Confirmed),
            count(VerdictKind::Counterexample),
            count(VerdictKind::UnderParametrised),
            count(VerdictKind::Undecided),
        );
        for r in &a.runs {
            let mark = match r.verdict.kind {
                VerdictKind::Confirmed => "  ✓",
                VerdictKind::Counterexample => "  ✗",
                VerdictKind::UnderParametrised => "  ·",
                _ => "  ?",
            };
            println!("{mark} {:<16} {}", r.label, r.verdict.line);
        }
    }
    if let Some(t) = &idx.threshold {
        let (c, k) = t.counts();
        println!(
            "threshold — {} initialisations at θ(0): {c} of {k} with p ≥ nm are counterexamples (J exactly rank-deficient, persistent under perturbation)",
            t.points.len()
        );
        if let Some(h) = t.headline() {
            println!("  {h}");
        }
    }
}

pub(crate) fn report(dir: &Path) -> Result<()> {
    let files = gradflow::report::build_report(dir)?;
    for w in &files.warnings {
        eprintln!("warning: {w}");
    }
    println!(
        "report: {} ({} plots in {})",
        files.html.display(),
        files.plots.len(),
        dir.join("plots").display()
    );
    Ok(())
}
