//! `gradflow inspect` and `gradflow ntk`: what a config builds (sizes, p against nm) and the NTK
//! spectrum at θ(0) with J's rank evidence, without training.

use gradflow::config::Config;
use gradflow::error::{Error, Result};
use gradflow::ntk::{self, NtkOptions};
use gradflow::run::{self};
use gradflow::theory::overparametrized;
use std::path::Path;

pub(crate) fn inspect(config_path: &Path) -> Result<()> {
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

pub(crate) fn ntk_cmd(
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
