//! `gradflow train`: one run from a config file into its run directory, resumable after a
//! signal, with its report built at the end.

use gradflow::config::Config;
use gradflow::error::{Error, Result};
use gradflow::run::{self, RunOptions};
use std::path::{Path, PathBuf};

pub(crate) fn default_out(config: &Path) -> PathBuf {
    let stem = config
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "run".into());
    PathBuf::from("runs").join(stem)
}

pub(crate) fn train(
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
pub(crate) fn run_report(out: &Path) {
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
