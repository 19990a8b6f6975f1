//! The `gradflow` command line: a thin layer over the library. Each subcommand parses its
//! arguments, calls one library function, prints a short human summary, and maps errors to a
//! message on stderr and a non-zero exit code.

use clap::{Parser, Subcommand};
use gradflow::config::Config;
use gradflow::error::{Error, Result};
use gradflow::experiment::{self, ReproduceIndex, ReproduceOptions, Scale, Shard};
use gradflow::ntk::{self, NtkOptions};
use gradflow::run::{self, RunOptions};
use gradflow::theory::overparametrized;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "gradflow",
    version,
    about = "Put the gradient-flow convergence theorem on trial: train, track the NTK, check the bound."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train by full-batch gradient descent and write a run directory.
    Train {
        /// The run's TOML config (see examples/).
        config: PathBuf,
        /// Output directory (default: runs/<config name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Replace an existing output directory.
        #[arg(long)]
        force: bool,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
        /// Continue the interrupted run in --out from its checkpoint (bit-identical results).
        #[arg(long, requires = "out")]
        resume: bool,
    },
    /// Print the architecture, p, n, m, p/(nm) and the activation's class, without training.
    Inspect { config: PathBuf },
    /// The NTK spectrum of one state: λ_min, λ_max, condition number.
    Ntk {
        config: PathBuf,
        /// Parameters to evaluate at (safetensors); default: the config's initialisation.
        #[arg(long)]
        params: Option<PathBuf>,
        /// Save the Gram matrix H as .npy (nm × nm, f64, index i·m + a).
        #[arg(long)]
        save_gram: Option<PathBuf>,
        /// Print every eigenvalue (dense route only).
        #[arg(long)]
        full: bool,
        /// Write the summary as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Reproduce the paper's Section 4: DNN, ResNet and GCN sweeps across p = nm, with verdicts,
    /// plots and a report. Re-running the same command resumes: finished runs are kept.
    Reproduce {
        /// quick (about two minutes on 2 cores) or paper (the paper's sizes).
        #[arg(long, default_value = "quick")]
        scale: String,
        /// Run only these ablations (repeat or comma-separate): dnn, resnet, gcn, threshold
        /// (J's rank at initialisation over many seeds across p/nm ≈ 0.8–2.5: is H(0) positive
        /// definite almost surely?), activations (Corollaries 3.1.1/3.1.2: leaky ReLU α → 0 and
        /// piecewise sigmoids), cnn, conv-resnet, unet, mobilenet, cheb, graphconv, siamese.
        /// Default: dnn, resnet, gcn and threshold.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Repeat every run over seeds 0..N.
        #[arg(long, default_value_t = 1)]
        seeds: u64,
        /// Output directory (default: runs/reproduce-<scale>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Run only slice i of N (e.g. `--shard $SLURM_ARRAY_TASK_ID/8`); join with `gradflow merge`.
        #[arg(long)]
        shard: Option<String>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
        /// Training precision, f64 or f32 (f32 applies to the dnn, resnet and gcn runs; the
        /// other presets train in f64; NTK spectra are always f64).
        #[arg(long, default_value = "f64")]
        precision: String,
        /// gd (the paper's experiments) or flow: every run integrated by the kink-aware
        /// gradient-flow solver to t = lr·epochs instead (default --out runs/reproduce-<scale>-flow).
        #[arg(long, default_value = "gd", value_parser = ["gd", "flow"])]
        solver: String,
        /// Epochs between NTK λ_min checkpoints in every run, replacing the sweep's own spacing
        /// (0 = only at the start and the end). Paper-scale checkpoints are matrix-free solves on
        /// nm = 50,000: fewer of them shortens a paper-scale reproduce by hours.
        #[arg(long, conflicts_with = "no_ntk")]
        ntk_every: Option<usize>,
        /// No NTK checkpoints at all: training only (e.g. to time it at paper scale, where the
        /// matrix-free checkpoints take 30–60 s each); verdicts then rest on the loss.
        #[arg(long)]
        no_ntk: bool,
        /// Seeds per width/depth in the threshold ablation.
        #[arg(long, default_value_t = 20)]
        threshold_seeds: u64,
        /// Run nothing: write a Slurm job for N shards instead (an sbatch array running
        /// `--shard i/N` with these options, a merge job after it, and submit.sh) into
        /// <out>/slurm/.
        #[arg(long, value_name = "N", conflicts_with = "shard")]
        emit_slurm: Option<usize>,
    },
    /// Rebuild report.html, report.md and plots/ of a reproduce directory or of a single run
    /// directory (what `train` writes) from its saved results.
    Report { dir: PathBuf },
    /// Join the outputs of `reproduce --shard` runs into one index and report.
    Merge {
        /// Shard output directories.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// Where the merged index and report go.
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    gradflow::interrupt::install_handler();
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::Interrupted(msg)) => {
            eprintln!("{msg}");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cmd: Command) -> Result<()> {
    match cmd {
        Command::Train {
            config,
            out,
            force,
            quiet,
            resume,
        } => train(&config, out, force, quiet, resume),
        Command::Inspect { config } => inspect(&config),
        Command::Ntk {
            config,
            params,
            save_gram,
            full,
            json,
        } => ntk_cmd(
            &config,
            params.as_deref(),
            save_gram.as_deref(),
            full,
            json.as_deref(),
        ),
        Command::Reproduce {
            scale,
            only,
            seeds,
            out,
            shard,
            quiet,
            precision,
            solver,
            ntk_every,
            no_ntk,
            threshold_seeds,
            emit_slurm,
        } => {
            let out = out.unwrap_or_else(|| {
                let suffix = if solver == "flow" { "-flow" } else { "" };
                PathBuf::from("runs").join(format!("reproduce-{scale}{suffix}"))
            });
            if let Some(shards) = emit_slurm {
                let mut args = vec![
                    "--scale".to_string(),
                    scale,
                    "--seeds".into(),
                    seeds.to_string(),
                    "--precision".into(),
                    precision,
                    "--solver".into(),
                    solver,
                    "--threshold-seeds".into(),
                    threshold_seeds.to_string(),
                ];
                if !only.is_empty() {
                    args.extend(["--only".into(), only.join(",")]);
                }
                if let Some(every) = ntk_every {
                    args.extend(["--ntk-every".into(), every.to_string()]);
                }
                if no_ntk {
                    args.push("--no-ntk".into());
                }
                return emit_slurm_job(args, shards, out);
            }
            reproduce(
                &scale,
                only,
                seeds,
                Some(out),
                shard.as_deref(),
                quiet,
                (&precision, &solver, ntk_every, no_ntk, threshold_seeds),
            )
        }
        Command::Report { dir } => report(&dir),
        Command::Merge { dirs, out } => {
            let idx = experiment::merge(&dirs, &out)?;
            print_verdicts(&idx);
            report(&out)
        }
    }
}

/// `reproduce --emit-slurm N`: checks the options by parsing them as a shard would, then writes
/// the job ([`gradflow::experiment::slurm`]) and says how to submit it.
fn emit_slurm_job(args: Vec<String>, shards: usize, out: PathBuf) -> Result<()> {
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

fn default_out(config: &Path) -> PathBuf {
    let stem = config
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "run".into());
    PathBuf::from("runs").join(stem)
}

fn train(
    config_path: &Path,
    out: Option<PathBuf>,
    force: bool,
    quiet: bool,
    resume: bool,
) -> Result<()> {
    let config = Config::from_path(config_path)?;
    let out = out.unwrap_or_else(|| default_out(config_path));
    if !resume {
        run::check_output_dir(&out, force)?;
    }
    let prep = run::prepare(&config)?;
    let horizon = match config.train.solver {
        gradflow::config::Solver::Gd => format!("for {} epochs", config.train.epochs),
        gradflow::config::Solver::Flow => format!(
            "by the gradient-flow solve to t = {} (rtol {:e})",
            config.train.flow.t_end, config.train.flow.rtol
        ),
    };
    eprintln!(
        "training {} (p = {}, nm = {}, p/nm = {:.3}) {horizon} → {}",
        prep.model.preset_name(),
        prep.model.p(),
        prep.nm(),
        prep.model.p() as f64 / prep.nm() as f64,
        out.display()
    );
    let result = run::execute(
        &prep,
        &out,
        &RunOptions {
            progress: !quiet,
            force,
            resume,
            ..RunOptions::default()
        },
    );
    let s = match result {
        Ok(s) => s,
        Err(e @ (Error::Diverged(_) | Error::Interrupted(_))) => {
            // The run directory was kept: report what there is.
            run_report(&out);
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    println!(
        "loss {:.6e} → {:.6e} in {:.2} s",
        s.initial_loss, s.final_loss, s.seconds
    );
    if let (Some(a), Some(b)) = (&s.ntk_initial, &s.ntk_final) {
        println!(
            "λ_min(H): {:.6e} at t = 0, {:.6e} at t = {}",
            a.lambda_min, b.lambda_min, s.t_final
        );
    }
    if s.bound_checks > 0 {
        println!(
            "bound L(t) ≤ L(0)·exp(−4c∫λ_min): {} of {} checkpoints violate it",
            s.bound_violations.len(),
            s.bound_checks
        );
    }
    if let Some(f) = &s.flow {
        let e = &f.events;
        println!(
            "flow: {} gradient evaluations ({:.0} gradient-equivalents of work), {} steps; kinks: {} crossings, {} sliding intervals on {} pre-activations (up to {} pinned at once, longest {:.3}), {} releases",
            f.counts.gradients, f.gradient_equivalents, f.steps_accepted, e.crossings, e.slides, e.entries_slid, e.max_pinned, e.longest_slide, e.releases
        );
        if let Some(g) = &f.gd_comparison {
            println!(
                "GD (η = {}) against the flow: ‖θ_GD − θ_GF‖/‖θ_GF‖ ≤ {:.3e}, loss gap ≤ {:.3e} (relative)",
                g.lr, g.max_theta_gap, g.max_relative_loss_gap
            );
        }
    } else {
        println!(
            "kinks: {} crossings, {} pre-activations chattered (longest run {} steps)",
            s.kinks.total_crossings, s.kinks.units_crossed, s.kinks.longest_chatter
        );
    }
    if let Some(k) = &s.kernel {
        if let (Some(l), Some(g)) = (k.final_loss_linearised, k.max_relative_gap_linearised) {
            println!(
                "linearised (kernel-regime) prediction: L_lin = {l:.6e} at the end, max |L − L_lin|/L = {g:.3e}"
            );
        }
        if let Some(d) = k.ntk_drift_final {
            println!("NTK drift ‖H(t) − H(0)‖_F/‖H(0)‖_F = {d:.3e} at the end");
        }
    }
    println!("results in {}", out.display());
    run_report(&out);
    Ok(())
}

/// Builds the run's report (report.html, report.md, plots/) and prints its path; a failure is a
/// warning, since the run itself is complete.
fn run_report(out: &Path) {
    match gradflow::report::single::build_run_report(out, &Default::default()) {
        Ok(files) => {
            for w in &files.warnings {
                eprintln!("note: {w}");
            }
            println!("report: {}", files.html.display());
        }
        Err(e) => eprintln!("warning: the run's report was not built: {e}"),
    }
}

fn inspect(config_path: &Path) -> Result<()> {
    let config = Config::from_path(config_path)?;
    let prep = run::prepare(&config)?;
    let (p, n, m) = (prep.model.p(), prep.n(), prep.m());
    println!(
        "{}: preset {}",
        config_path.display(),
        prep.model.preset_name()
    );
    for line in prep.model.summary_lines() {
        println!("  {line}");
    }
    println!("p = {p}");
    println!("n = {n}, d = {}, m = {m}, nm = {}", prep.data.d(), n * m);
    println!("p/(nm) = {:.4}", p as f64 / (n * m) as f64);
    println!(
        "p ≥ nm: {}",
        if overparametrized(p, n, m) {
            "yes — over-parametrised, λ_min(H) > 0 is possible"
        } else {
            "no — rank(H) ≤ p < nm, so λ_min(H) = 0: Theorem 3.1 does not apply"
        }
    );
    let class = prep.model.activation.classify();
    println!("activation {}: {}", prep.model.activation, class.describe());
    if let Some(g) = &prep.data.graph {
        println!("graph: {} nodes, {} undirected edges", g.n, g.edges.len());
    }
    Ok(())
}

fn ntk_cmd(
    config_path: &Path,
    params: Option<&Path>,
    save_gram: Option<&Path>,
    full: bool,
    json: Option<&Path>,
) -> Result<()> {
    let config = Config::from_path(config_path)?;
    let prep = run::prepare(&config)?;
    let theta = match params {
        Some(p) => gradflow::params::load(p, &prep.model.param_specs())?,
        None => prep.theta0.clone(),
    };
    let budget = (config.ntk.memory_budget_gb * (1u64 << 30) as f64) as u64;
    if let Some(path) = save_gram {
        let bytes = ntk::gram_bytes(&prep.model, prep.n());
        if bytes > budget {
            return Err(Error::Invalid(format!(
                "--save-gram needs the dense NTK: about {:.2} GB, over the budget of {:.2} GB \
                 (ntk.memory_budget_gb); raise the budget or drop --save-gram (λ_min is then found matrix-free)",
                bytes as f64 / 1e9,
                budget as f64 / 1e9
            )));
        }
        let (h, _) = ntk::gram(&prep.model, &theta, &prep.data.x);
        let dim = h.nrows();
        let data: Vec<f64> = (0..dim)
            .flat_map(|i| (0..dim).map(move |j| (i, j)))
            .map(|(i, j)| h[(i, j)])
            .collect();
        gradflow::io::write_matrix(path, &data, dim, dim)?;
        eprintln!("saved H ({dim} × {dim}) to {}", path.display());
    }
    let opts = NtkOptions {
        memory_budget_bytes: budget,
        full_spectrum: full,
        ..Default::default()
    };
    let s = ntk::ntk_spectrum(&prep.model, &theta, &prep.data.x, &opts)?;
    println!(
        "NTK of {} at {}: {} × {} (p = {})",
        prep.model.preset_name(),
        params.map_or("initialisation".into(), |p| p.display().to_string()),
        s.dim,
        s.dim,
        s.p
    );
    println!("route: {} ({}), {:.3} s", s.route, s.method, s.seconds);
    println!(
        "λ_min = {:.10e}  (an eigenvalue lies within {:.2e})",
        s.lambda_min, s.lambda_min_accuracy
    );
    println!("λ_max = {:.10e}", s.lambda_max);
    match (
        s.condition,
        s.jacobian.lambda_min_lower,
        s.jacobian.lambda_min_svd,
    ) {
        (Some(c), _, _) => println!("condition number = {c:.6e}"),
        (None, Some(_), Some(l)) if l > 0.0 => println!(
            "condition number = {:.6e} (from J's singular values; H's eigensolver alone cannot \
             resolve λ_min below nm·ε·λ_max, the certificate below does)",
            s.lambda_max / l
        ),
        _ => println!(
            "condition number = ∞ (λ_min ≤ nm·ε·λ_max: H's eigenvalues cannot tell it from 0; \
             see rank J below)"
        ),
    }
    let j = &s.jacobian;
    match (j.jacobian_rank, j.rank_full) {
        (Some(rank), Some(full)) => {
            let gap = j.rank_gap.map_or("no gap (full rank)".to_string(), |g| {
                format!("gap σ_r/σ_r+1 = {g:.2e}")
            });
            let kind = if j.is_exact_deficient() {
                "EXACTLY rank-deficient"
            } else if rank == full {
                "full rank"
            } else {
                "numerically rank-deficient (no clean gap)"
            };
            println!("rank J = {rank} of {full} ({kind}; {gap})");
            if let Some(l) = j.lambda_min_svd {
                println!(
                    "λ_min by the SVD of J = {l:.10e}  (resolution {:.2e})",
                    j.lambda_min_resolution.unwrap_or(f64::NAN)
                );
            }
            match j.lambda_min_lower {
                Some(l) => println!(
                    "certified: λ_min ≥ {l:.6e}  ({} arithmetic, every rounding error included)",
                    j.certificate.as_deref().unwrap_or("?")
                ),
                None => println!(
                    "certified: nothing ({})",
                    j.certificate.as_deref().unwrap_or("not attempted")
                ),
            }
            if let Some(blocks) = &j.block_ranks {
                println!("block ranks (each parameter tensor's columns of J):");
                for (name, r) in blocks {
                    println!("  {name:<24} {r}");
                }
            }
        }
        _ => println!(
            "rank J: not computed ({})",
            j.jacobian_note.as_deref().unwrap_or("no Jacobian analysis")
        ),
    }
    if let Some(eig) = &s.eigenvalues {
        println!("eigenvalues (ascending):");
        for v in eig {
            println!("{v:.10e}");
        }
    }
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&s).map_err(|e| Error::Invalid(e.to_string()))?;
        gradflow::io::write_atomic(path, text.as_bytes())?;
    }
    Ok(())
}

fn reproduce(
    scale: &str,
    only: Vec<String>,
    seeds: u64,
    out: Option<PathBuf>,
    shard: Option<&str>,
    quiet: bool,
    (precision, solver, ntk_every, no_ntk, threshold_seeds): (&str, &str, Option<usize>, bool, u64),
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
    eprintln!(
        "reproducing Section 4 at {} scale{} → {}",
        scale.name(),
        if suffix.is_empty() {
            ""
        } else {
            " by the gradient-flow solver"
        },
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

fn print_verdicts(idx: &ReproduceIndex) {
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

fn report(dir: &Path) -> Result<()> {
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
