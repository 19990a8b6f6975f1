//! The `gradflow` command line: a thin layer over the library. Each subcommand parses its
//! arguments, calls one library function, prints a short human summary, and maps errors to a
//! message on stderr and a non-zero exit code.

mod commands;

use clap::{Parser, Subcommand};
use commands::inspect::{inspect, ntk_cmd};
use commands::reproduce::{emit_slurm_job, print_verdicts, report, reproduce};
use commands::train::train;
use gradflow::error::{Error, Result};
use gradflow::experiment::{self};
use std::path::PathBuf;
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
        /// quick (about 2.5 minutes on 2 idle cores by the flow, one by GD) or paper (the paper's sizes).
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
        /// Output directory (default: runs/reproduce-<scale>-flow for the flow, runs/reproduce-<scale> for GD).
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
        /// flow: every run integrated by the kink-aware gradient-flow solver to t = lr·epochs,
        /// the dynamics the theorem is about (--out defaults to runs/reproduce-<scale>-flow); gd:
        /// the paper's gradient descent. Default: flow at quick scale in f64; gd at paper scale
        /// (the flow takes weeks a run at those sizes) or with --precision f32.
        #[arg(long, value_parser = ["gd", "flow"])]
        solver: Option<String>,
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
            let defaulted = solver.is_none();
            let solver = solver
                .unwrap_or_else(|| commands::reproduce::default_solver(&scale, &precision).into());
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
                (
                    &precision,
                    &solver,
                    defaulted,
                    ntk_every,
                    no_ntk,
                    threshold_seeds,
                ),
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
