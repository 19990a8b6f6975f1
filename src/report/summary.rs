//! The numbers the report states, computed once for both renderers ([`super::html`],
//! [`super::markdown`]): a summary line per ablation (how many runs agree with Theorem 3.1, how
//! many violate the bound, how many slid along kinks) and one table row per run, with the cells
//! as plain text (each renderer escapes them for its own format) and a flag for the rows a
//! reader must look at: a verdict that is not consistent with the theorem, or a bound violation.
//!
//! With `--seeds N` each configuration (an ablation's swept value) is run over N seeds, and since
//! the theorem holds only almost surely the spread across draws matters: [`seed_spread`] gathers
//! each configuration's seeds into one row of the "Across seeds" table, and
//! [`AblationSummary::seed_line`] says how many configurations were consistent on every seed.

use crate::experiment::{AblationRecord, ReproduceIndex, RunRecord};
use crate::run::Status;

use super::plots::fmt_g;

/// Column headers of the run table, in order; the verdict line is the last column.
pub const COLUMNS: [&str; 16] = [
    "ablation",
    "run",
    "p",
    "nm",
    "p/nm",
    "p ≥ nm",
    "activation class",
    "λ_min(H(0))",
    "λ_min at end",
    "fitted tail rate",
    "certified rate 4c·min λ_min",
    "bound violations",
    "kink crossings / chattering steps",
    "L(end)/L(0)",
    "GD at η: max η·c·λ_max (flow runs: GD's largest loss gap)",
    "verdict",
];

/// Counts over one ablation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AblationSummary {
    pub name: String,
    pub runs: usize,
    pub consistent: usize,
    pub overparametrized: usize,
    /// Runs with at least one checkpoint above the bound.
    pub bound_violation_runs: usize,
    /// Checkpoints above the bound, over all runs.
    pub bound_violations: usize,
    /// Runs whose bound was checked at all.
    pub bound_checked_runs: usize,
    /// Runs with chattering (sliding) pre-activations.
    pub sliding_runs: usize,
    pub diverged: usize,
    /// The swept variable ("width"), for the seed line.
    pub variable: String,
    /// Configurations (distinct swept values).
    pub values: usize,
    /// Fewest and most seeds (runs) of one configuration.
    pub min_seeds: usize,
    pub max_seeds: usize,
    /// Configurations whose every seed is consistent with the theorem.
    pub values_consistent_every_seed: usize,
}

impl AblationSummary {
    pub fn of(ab: &AblationRecord) -> Self {
        let mut s = Self {
            name: ab.name.clone(),
            runs: ab.runs.len(),
            ..Self::default()
        };
        for r in &ab.runs {
            let sum = &r.summary;
            s.consistent += r.verdict.consistent as usize;
            s.overparametrized += sum.overparametrized as usize;
            s.bound_checked_runs += (sum.bound_checks > 0) as usize;
            s.bound_violation_runs += !sum.bound_violations.is_empty() as usize;
            s.bound_violations += sum.bound_violations.len();
            s.sliding_runs += r.verdict.sliding as usize;
            s.diverged += (sum.status == Status::Diverged) as usize;
        }
        s.variable = ab.variable.clone();
        s.add_seeds(&spread_of(ab));
        s
    }

    /// Adds the per-configuration counts of `rows`.
    fn add_seeds(&mut self, rows: &[SeedSpread]) {
        for r in rows {
            self.min_seeds = if self.values == 0 {
                r.seeds
            } else {
                self.min_seeds.min(r.seeds)
            };
            self.max_seeds = self.max_seeds.max(r.seeds);
            self.values += 1;
            self.values_consistent_every_seed += (r.consistent == r.seeds) as usize;
        }
    }

    /// "over 3 seeds: 5 of 6 widths consistent on every seed", when some configuration was run
    /// over more than one seed ("over 2–3 seeds" when they differ, e.g. in a shard).
    pub fn seed_line(&self) -> Option<String> {
        if self.max_seeds <= 1 {
            return None;
        }
        let seeds = if self.min_seeds == self.max_seeds {
            self.max_seeds.to_string()
        } else {
            format!("{}–{}", self.min_seeds, self.max_seeds)
        };
        let what = if self.variable.is_empty() {
            "configuration"
        } else {
            self.variable.as_str()
        };
        Some(format!(
            "over {seeds} seeds: {} of {} {what}{} consistent on every seed",
            self.values_consistent_every_seed,
            self.values,
            if self.values == 1 { "" } else { "s" }
        ))
    }

    /// Whether the ablation has a run the reader must look at.
    pub fn flagged(&self) -> bool {
        self.consistent < self.runs || self.bound_violation_runs > 0
    }

    /// One line: "dnn: 4 of 5 runs consistent with Theorem 3.1 (3 with p ≥ nm); bound violated
    /// in 0 of 5 checked runs; sliding/chattering in 2 runs".
    pub fn line(&self) -> String {
        if self.runs == 0 {
            return format!("{}: no finished runs in the index", self.name);
        }
        let plural = |k: usize| if k == 1 { "" } else { "s" };
        let mut s = format!(
            "{}: {} of {} run{} consistent with Theorem 3.1 ({} with p ≥ nm); ",
            self.name,
            self.consistent,
            self.runs,
            plural(self.runs),
            self.overparametrized
        );
        if self.bound_checked_runs == 0 {
            s.push_str("bound not checked (no NTK checkpoints)");
        } else {
            s.push_str(&format!(
                "bound violated in {} of {} checked run{}",
                self.bound_violation_runs,
                self.bound_checked_runs,
                plural(self.bound_checked_runs)
            ));
            if self.bound_violations > 0 {
                s.push_str(&format!(
                    " ({} checkpoint{})",
                    self.bound_violations,
                    plural(self.bound_violations)
                ));
            }
        }
        s.push_str(&format!(
            "; sliding/chattering in {} run{}",
            self.sliding_runs,
            plural(self.sliding_runs)
        ));
        if self.diverged > 0 {
            s.push_str(&format!("; {} diverged", self.diverged));
        }
        s
    }
}

/// Counts over every ablation together.
pub fn overall(index: &ReproduceIndex) -> AblationSummary {
    let mut t = AblationSummary {
        name: "all".into(),
        ..AblationSummary::default()
    };
    for a in index.ablations.iter().map(AblationSummary::of) {
        t.runs += a.runs;
        t.consistent += a.consistent;
        t.overparametrized += a.overparametrized;
        t.bound_violation_runs += a.bound_violation_runs;
        t.bound_violations += a.bound_violations;
        t.bound_checked_runs += a.bound_checked_runs;
        t.sliding_runs += a.sliding_runs;
        t.diverged += a.diverged;
    }
    t.add_seeds(&seed_spread(index));
    t
}

/// One row of the run table.
#[derive(Clone, Debug)]
pub struct RunRow {
    /// Plain-text cells, one per entry of [`COLUMNS`].
    pub cells: Vec<String>,
    /// Not consistent with the theorem, or the bound was violated.
    pub flagged: bool,
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "—".to_string(), sci)
}

fn sci(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3e}")
    } else {
        fmt_g(v, 3)
    }
}

/// The table row of run `r` of ablation `ab`.
pub fn run_row(ab: &AblationRecord, r: &RunRecord) -> RunRow {
    let s = &r.summary;
    let violated = !s.bound_violations.is_empty();
    let bound = if s.bound_checks == 0 {
        "not checked".to_string()
    } else {
        format!("{} of {}", s.bound_violations.len(), s.bound_checks)
    };
    let ratio = s.final_loss / s.initial_loss;
    let cells = vec![
        ab.name.clone(),
        r.label.clone(),
        s.p.to_string(),
        s.nm.to_string(),
        fmt_g(s.p_over_nm, 3),
        if s.overparametrized { "yes" } else { "no" }.to_string(),
        s.activation_class.clone(),
        lambda_cell(s.ntk_initial.as_ref(), s.nm),
        lambda_cell(s.ntk_final.as_ref(), s.nm),
        opt(s.fitted_rate_tail),
        opt(s.certified_rate),
        bound,
        match &s.flow {
            // A flow run slides where GD chatters.
            Some(f) => format!("{} / {} slides", f.events.crossings, f.events.slides),
            None => format!(
                "{} / {}",
                s.kinks.total_crossings, s.kinks.steps_with_chattering
            ),
        },
        sci(ratio),
        gd_cell(s),
        r.verdict.line.clone(),
    ];
    debug_assert_eq!(cells.len(), COLUMNS.len());
    RunRow {
        cells,
        flagged: !r.verdict.consistent || violated,
    }
}

/// GD's step against the run: its stability ratio η·c·λ_max (below 1 GD is stable, far below
/// it tracks the flow), and for a flow run that compared against GD the largest relative loss
/// gap |L_GD − L_flow|/L_flow over the output times.
fn gd_cell(s: &crate::run::RunSummary) -> String {
    let stability = |g: Option<f64>| g.map_or("—".to_string(), |g| fmt_g(g, 3));
    match s.flow.as_ref().and_then(|f| f.gd_comparison.as_ref()) {
        Some(c) => format!(
            "{} (loss gap {})",
            stability(c.stability_max),
            sci(c.max_relative_loss_gap)
        ),
        None if s.flow.is_some() => "not compared".into(),
        None => stability(s.gd_stability_max),
    }
}

/// λ_min of one NTK summary as a table cell: "0 (rank r of nm)" when J is exactly deficient or
/// λ_min ≤ 0, never a negative number; "—" without an NTK.
fn lambda_cell(n: Option<&gradflow_core::ntk::NtkSummary>, nm: usize) -> String {
    n.map_or("—".to_string(), |n| {
        crate::experiment::verdict::lambda_min_text(n, nm)
    })
}

/// Every run's row, ablation by ablation.
pub fn run_rows(index: &ReproduceIndex) -> Vec<RunRow> {
    index.all_runs().map(|(a, r)| run_row(a, r)).collect()
}

/// Column headers of the "Across seeds" table, in order.
pub const SPREAD_COLUMNS: [&str; 12] = [
    "ablation",
    "swept value",
    "seeds",
    "p/nm",
    "seeds with λ_min(H(0)) > 0",
    "min λ_min(H(0))",
    "median λ_min(H(0))",
    "max λ_min(H(0))",
    "min L(end)/L(0)",
    "max L(end)/L(0)",
    "seeds violating the bound",
    "seeds consistent",
];

/// The paragraph above the "Across seeds" table (plain text).
pub const SPREAD_NOTE: &str = "Theorem 3.1 holds almost surely over the random inputs and \
     initialisation, so one draw shows little: each row gathers the seeds of one configuration (one \
     swept value). \"λ_min(H(0)) > 0\" counts the seeds whose λ_min(H(0)) is resolvably positive \
     (above its accuracy and 1e-12·λ_max); with p ≥ nm the theorem predicts every seed. Rows where \
     some seed is not consistent with the theorem or violates the bound are flagged.";

/// Smallest, median and largest of some numbers (the median of an even count is the mean of the
/// middle two).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Spread {
    /// The spread of the values that are not NaN; `None` if there are none.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Self> {
        let mut v: Vec<f64> = values.into_iter().filter(|x| !x.is_nan()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let k = v.len() / 2;
        let median = if v.len() % 2 == 1 {
            v[k]
        } else {
            (v[k - 1] + v[k]) / 2.0
        };
        Some(Self {
            min: v[0],
            median,
            max: v[v.len() - 1],
        })
    }
}

/// One configuration (ablation, swept value) over its seeds: a row of the "Across seeds" table.
#[derive(Clone, Debug, PartialEq)]
pub struct SeedSpread {
    pub ablation: String,
    pub variable: String,
    pub value: usize,
    /// Runs of this configuration, one per seed.
    pub seeds: usize,
    /// p/nm (the same for every seed: the seed changes the draws, not the sizes).
    pub p_over_nm: f64,
    /// Seeds whose λ_min(H(0)) was resolvably positive (`verdict.lambda_min_positive`).
    pub lambda_positive: usize,
    /// λ_min(H(0)) over the seeds that computed it.
    pub lambda_min: Option<Spread>,
    /// L(end)/L(0) over the seeds (NaN ratios, from a zero initial loss, left out).
    pub loss_ratio: Option<Spread>,
    /// Seeds whose bound was checked at all.
    pub bound_checked: usize,
    /// Seeds with at least one checkpoint above the bound.
    pub bound_violated: usize,
    /// Seeds consistent with the theorem (`verdict.consistent`).
    pub consistent: usize,
}

impl SeedSpread {
    /// Plain-text cells, one per entry of [`SPREAD_COLUMNS`].
    pub fn cells(&self) -> Vec<String> {
        let lam = |f: fn(&Spread) -> f64| opt(self.lambda_min.as_ref().map(f));
        let loss = |f: fn(&Spread) -> f64| opt(self.loss_ratio.as_ref().map(f));
        let cells = vec![
            self.ablation.clone(),
            format!("{} = {}", self.variable, self.value),
            self.seeds.to_string(),
            fmt_g(self.p_over_nm, 3),
            self.lambda_positive.to_string(),
            lam(|s| s.min),
            lam(|s| s.median),
            lam(|s| s.max),
            loss(|s| s.min),
            loss(|s| s.max),
            if self.bound_checked == 0 {
                "not checked".to_string()
            } else {
                self.bound_violated.to_string()
            },
            self.consistent.to_string(),
        ];
        debug_assert_eq!(cells.len(), SPREAD_COLUMNS.len());
        cells
    }

    /// Some seed is not consistent with the theorem, or violated the bound.
    pub fn flagged(&self) -> bool {
        self.consistent < self.seeds || self.bound_violated > 0
    }
}

/// The configurations of one ablation, swept values ascending.
fn spread_of(ab: &AblationRecord) -> Vec<SeedSpread> {
    let mut values: Vec<usize> = ab.runs.iter().map(|r| r.value).collect();
    values.sort_unstable();
    values.dedup();
    values
        .into_iter()
        .map(|value| {
            let runs: Vec<&RunRecord> = ab.runs.iter().filter(|r| r.value == value).collect();
            let count = |f: fn(&RunRecord) -> bool| runs.iter().filter(|r| f(r)).count();
            SeedSpread {
                ablation: ab.name.clone(),
                variable: ab.variable.clone(),
                value,
                seeds: runs.len(),
                p_over_nm: runs[0].summary.p_over_nm,
                lambda_positive: count(|r| r.verdict.lambda_min_positive == Some(true)),
                lambda_min: Spread::of(
                    runs.iter()
                        .filter_map(|r| r.summary.ntk_initial.as_ref().map(|n| n.lambda_min)),
                ),
                loss_ratio: Spread::of(
                    runs.iter()
                        .map(|r| r.summary.final_loss / r.summary.initial_loss),
                ),
                bound_checked: count(|r| r.summary.bound_checks > 0),
                bound_violated: count(|r| !r.summary.bound_violations.is_empty()),
                consistent: count(|r| r.verdict.consistent),
            }
        })
        .collect()
}

/// One row per (ablation, swept value), ablation by ablation, values ascending.
pub fn seed_spread(index: &ReproduceIndex) -> Vec<SeedSpread> {
    index.ablations.iter().flat_map(spread_of).collect()
}

/// Whether the "Across seeds" table is worth showing: some configuration has more than one seed.
pub fn has_repeats(rows: &[SeedSpread]) -> bool {
    rows.iter().any(|r| r.seeds > 1)
}

/// "Scale quick · 1 seed per value · 16 runs in 3 ablations" (+ the shard of a partial index).
pub fn scale_line(index: &ReproduceIndex) -> String {
    let runs: usize = index.ablations.iter().map(|a| a.runs.len()).sum();
    let mut s = format!(
        "Scale {} · {} seed{} per swept value · {} run{} in {} ablation{}",
        index.scale.name(),
        index.seeds,
        if index.seeds == 1 { "" } else { "s" },
        runs,
        if runs == 1 { "" } else { "s" },
        index.ablations.len(),
        if index.ablations.len() == 1 { "" } else { "s" },
    );
    if let Some(sh) = index.shard {
        s.push_str(&format!(
            " · shard {}/{} only (merge the shards for the full picture)",
            sh.index, sh.count
        ));
    }
    if let Some(t) = &index.timing {
        s.push_str(&format!(" · {}", t.line()));
    }
    s
}

/// The paragraphs of "How to read this" (plain text; the notation of docs/theory.md).
pub const HOW_TO_READ: [(&str, &str); 4] = [
    (
        "λ_min",
        "λ_min is the least eigenvalue of the neural tangent kernel H = J Jᵀ, an nm × nm matrix (J is \
         the Jacobian of the n·m stacked outputs with respect to the p parameters). Under gradient flow \
         dL/dt ≤ −4c·λ_min(H(t))·L, so while λ_min stays positive the loss falls at least exponentially: \
         linear convergence, a straight line on the log-scale loss plots.",
    ),
    (
        "p ≥ nm",
        "H has rank at most min(nm, p). With fewer parameters than outputs (p < nm) λ_min = 0 exactly \
         and the theorem says nothing: such runs typically plateau. Theorem 3.1 states that with p ≥ nm, \
         a covered activation (continuous, piecewise polynomial, finitely many zeros, e.g. leaky ReLU) \
         and absolutely continuous inputs and initialisation, λ_min(H(t)) > 0 for all t almost surely. \
         The threshold plots show λ_min(H(0)) against p/nm with the line p = nm.",
    ),
    (
        "The bound",
        "Integrating gives L(t) ≤ L(0)·exp(−4c∫₀ᵗ λ_min(H(s)) ds) (c = 1/(nm) for mse, 1/2 for \
         half-sse), evaluated at the NTK checkpoints with the trapezoid rule. A bound violation is a \
         checkpoint where the loss lies above it. The certified rate is 4c·min λ_min over the \
         checkpoints; the fitted tail rate is the slope r of ln L ≈ a − r·t over the last half of the \
         run. Training is gradient descent, a small-step approximation of the flow.",
    ),
    (
        "Kinks and sliding",
        "With a piecewise activation the flow's vector field has kinks where a pre-activation crosses a \
         breakpoint. The paper's Lemma 2.1 assumes the trajectory crosses these surfaces and moves on; \
         it can instead slide along one (a Filippov sliding mode), which gradient descent shows as \
         chattering: a pre-activation flipping sign back and forth on consecutive steps. \"Kink \
         crossings\" counts sign changes, \"chattering steps\" the steps with at least one chattering \
         pre-activation. Runs that chatter are outside the lemma's picture; whether the bound survives \
         there is what the table reports.",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::Scale;
    use crate::report::tests::{record, summary};
    use crate::run::RunSummary;

    /// One DNN ablation, widths 2 (p < nm) and 8 (p ≥ nm), three seeds each, listed out of order.
    fn three_seeds() -> ReproduceIndex {
        // summary(p, nm, λ_min(H(0)), bound violations, chattering steps, final loss); L(0) = 1,
        // λ_max = 12 and accuracy 1e-14, so λ_min(H(0)) counts as positive above 1.2e-11.
        let run = |value: usize, seed: u64, s: RunSummary| {
            let mut r = record(&format!("w={value}-seed{seed}"), value, s);
            r.seed = seed;
            r
        };
        let runs = vec![
            run(8, 2, summary(40, 20, 0.1, 1, 0, 4e-3)),
            run(2, 0, summary(10, 20, 0.0, 0, 0, 0.5)),
            run(8, 0, summary(40, 20, 0.3, 0, 0, 1e-3)),
            run(2, 1, summary(10, 20, 0.0, 0, 3, 0.6)),
            run(8, 1, summary(40, 20, 0.0, 0, 0, 0.2)),
            run(2, 2, summary(10, 20, 0.0, 0, 0, 0.4)),
        ];
        ReproduceIndex {
            timing: None,
            threshold: None,
            scale: Scale::Quick,
            seeds: 3,
            shard: None,
            ablations: vec![AblationRecord {
                name: "dnn".into(),
                title: "DNN".into(),
                variable: "width".into(),
                skip_epochs: 0,
                runs,
            }],
        }
    }

    #[test]
    fn spread_over_three_seeds_by_hand() {
        let index = three_seeds();
        let rows = seed_spread(&index);
        assert_eq!(rows.len(), 2);
        assert!(has_repeats(&rows));
        assert_eq!(rows.iter().map(|r| r.value).collect::<Vec<_>>(), vec![2, 8]);
        // Width 8, p = 40 ≥ nm = 20:
        // seed 0: λ_min 0.3 (positive), no violation, L ratio 1e-3 → consistent;
        // seed 1: λ_min 0 with p ≥ nm, J exactly and persistently deficient → a counterexample;
        // seed 2: λ_min 0.1 (positive), 1 violation while GD stayed stable, L ratio 4e-3 →
        // undecided (no evidence against the theorem, but flagged by the violation).
        let r = &rows[1];
        assert_eq!(r.ablation, "dnn");
        assert_eq!(r.variable, "width");
        assert_eq!(r.value, 8);
        assert_eq!(r.seeds, 3);
        assert_eq!(r.p_over_nm, 2.0);
        assert_eq!(r.lambda_positive, 2);
        assert_eq!(
            r.lambda_min,
            Some(Spread {
                min: 0.0,
                median: 0.1,
                max: 0.3
            })
        );
        let loss = r.loss_ratio.unwrap();
        assert_eq!((loss.min, loss.max), (1e-3, 0.2));
        assert_eq!(r.bound_checked, 3);
        assert_eq!(r.bound_violated, 1);
        assert_eq!(r.consistent, 2);
        assert!(r.flagged());
        assert_eq!(
            r.cells(),
            vec![
                "dnn",
                "width = 8",
                "3",
                "2",
                "2",
                "0.000e0",
                "1.000e-1",
                "3.000e-1",
                "1.000e-3",
                "2.000e-1",
                "1",
                "2"
            ]
        );
        // Width 2, p < nm: λ_min = 0 on every seed, as the rank bound says; all consistent.
        let r = &rows[0];
        assert_eq!((r.seeds, r.lambda_positive, r.consistent), (3, 0, 3));
        assert_eq!((r.bound_violated, r.p_over_nm), (0, 0.5));
        assert!(!r.flagged());

        let s = AblationSummary::of(&index.ablations[0]);
        assert_eq!(
            s.seed_line().as_deref(),
            Some("over 3 seeds: 1 of 2 widths consistent on every seed")
        );
        assert_eq!(overall(&index).values_consistent_every_seed, 1);
    }

    #[test]
    fn one_seed_per_value_has_no_spread_table_or_seed_line() {
        let mut index = three_seeds();
        index.ablations[0].runs.retain(|r| r.seed == 0);
        assert!(!has_repeats(&seed_spread(&index)));
        assert_eq!(AblationSummary::of(&index.ablations[0]).seed_line(), None);
        // Uneven seed counts (a shard) give a range.
        let mut index = three_seeds();
        index.ablations[0]
            .runs
            .retain(|r| r.value == 8 || r.seed < 2);
        assert_eq!(
            AblationSummary::of(&index.ablations[0])
                .seed_line()
                .as_deref(),
            Some("over 2–3 seeds: 1 of 2 widths consistent on every seed")
        );
    }

    #[test]
    fn spread_median_and_nan() {
        let s = Spread::of([4.0, f64::NAN, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!((s.min, s.median, s.max), (1.0, 2.5, 4.0));
        assert_eq!(Spread::of([f64::NAN]), None);
        let s = Spread::of([f64::INFINITY, 1.0, -1.0]).unwrap();
        assert_eq!((s.min, s.median, s.max), (-1.0, 1.0, f64::INFINITY));
    }
}
