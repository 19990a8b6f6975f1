//! A paused kink-aware flow solve: everything the solve carries from one accepted step to the
//! next, as one serialisable [`FlowSnapshot`], so that a solve paused after an accepted step and
//! resumed from the snapshot (at the θ it paused at) ends bit-identical to one that never paused.
//!
//! What a step reads from the previous one, and so what is kept:
//! - the time, the step size to try, the next output index, the step counters and the stall
//!   guard, L(θ(0)) for the outcome, and the choice between the embedded pairs (the cheap pair's
//!   step size, both pairs' running mean sizes, the event rate's running mean, the probe count);
//! - the field at θ that the next step's first stage reuses (FSAL: for a step without an event
//!   it was evaluated before the pinned entries were pulled back onto their knots, so it is not
//!   f(θ) and cannot be recomputed);
//! - the pattern: every entry's frozen piece, the pinned set and each pin's chosen slope (which
//!   the layers' controls or the compiled pin table are rebuilt from), the evaluation counts;
//! - PReLU's slope a as the last forward pass saw it, per activation layer (per stage with σ on
//!   the compiled route; the layer path keeps it while an observer has the controls removed):
//!   the kink's one-sided slopes σ'(b±) depend on a, and installing the pins reads them (a pin
//!   without a chosen slope is evaluated at their mean) before the next forward pass. A resumed
//!   solve rebuilds its system by a forward pass at the θ it paused at, which is not where the
//!   paused solve last evaluated (the projection onto the knots and output times come after),
//!   so the restore sets a back before the pins are installed. Snapshots written before this
//!   field existed load for networks without PReLU (a is not read there) and are refused for
//!   PReLU networks;
//! - the last evaluation (`LastEval`: z, the pinned entries' normal speeds, and on the layer
//!   path the rows ∇z_j and G⁻¹): a step's event functions start from it, and a rejected step
//!   restores it;
//! - the event state: entries in grace, open sliding intervals, event totals and the counts since
//!   the last output, entries that ever slid.
//!
//! Not kept: the factorisation of G = R Rᵀ and the compiled route's rows. Every field evaluation
//! with pinned entries forms the rows and factorises G afresh, and a step reads them only after
//! such an evaluation. Floats are kept as their bit patterns (u64), so every value comes back
//! exactly and NaN (an undefined effective slope) survives JSON.

use super::events::Solver;
use super::pairs::PairState;
use super::solve::{EventSummary, FlowOptions};
use super::system::{Counts, LastEval};
use crate::error::{Error, Result};
use crate::model::Model;
use serde::{Deserialize, Serialize};

/// Where the solve stands after an accepted step.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Position {
    /// Time reached.
    pub t: f64,
    /// The step size the next step tries.
    pub h: f64,
    /// Index of the next output time.
    pub next_output: usize,
    pub steps_accepted: u64,
    pub steps_rejected: u64,
    /// Consecutive event steps without progress in t (the stall guard).
    pub stalled: usize,
    /// L(θ(0)).
    pub initial_loss: f64,
    /// The choice between the embedded pairs (`pairs.rs`); absent in older snapshots, which
    /// never took the cheap pair.
    #[serde(default)]
    pub pairs: PairState,
}

/// The state of a kink-aware flow solve after an accepted step (see the module docs).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FlowSnapshot {
    pub position: Position,
    /// The field the next step starts from (bit patterns).
    field: Vec<u64>,
    /// True when the compiled route evaluated the field (a resume must take the same route).
    compiled: bool,
    /// Frozen piece per entry (pinned entries: the piece left of their knot).
    pieces: Vec<u16>,
    /// Pinned entries (sorted) and the slopes chosen for them (bit patterns).
    pinned: Vec<usize>,
    pin_slopes: Vec<(usize, u64)>,
    /// PReLU's slope at the last forward pass per activation layer (per stage with σ on the
    /// compiled route), in entry order; 0 for other activations (bit patterns). Empty in
    /// snapshots written before it was kept.
    #[serde(default)]
    activation_slopes: Vec<u64>,
    counts: Counts,
    last: EvalBits,
    /// Entries in grace, entries that ever slid, open sliding intervals (entry, start).
    grace: Vec<usize>,
    entries_slid: Vec<usize>,
    slide_start: Vec<(usize, f64)>,
    events: EventSummary,
    /// Crossings, slides and releases since the last output.
    since: (u64, u64, u64),
}

impl FlowSnapshot {
    /// Number of entries pinned to a kink.
    pub fn pinned(&self) -> usize {
        self.pinned.len()
    }
}

/// [`LastEval`] with its floats as bit patterns.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct EvalBits {
    loss: u64,
    z: Vec<u64>,
    field_norm: u64,
    zdot_left: Vec<u64>,
    zdot_right: Vec<u64>,
    slopes: Vec<u64>,
    slopes_updated: bool,
    rows: Vec<Vec<u64>>,
    g_inv: Vec<u64>,
}

fn to_bits(v: &[f64]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn from_bits(v: &[u64]) -> Vec<f64> {
    v.iter().map(|&b| f64::from_bits(b)).collect()
}

impl EvalBits {
    fn of(l: &LastEval) -> Self {
        Self {
            loss: l.loss.to_bits(),
            z: to_bits(&l.z),
            field_norm: l.field_norm.to_bits(),
            zdot_left: to_bits(&l.zdot_left),
            zdot_right: to_bits(&l.zdot_right),
            slopes: to_bits(&l.slopes),
            slopes_updated: l.slopes_updated,
            rows: l.rows.iter().map(to_bits).collect(),
            g_inv: to_bits(&l.g_inv),
        }
    }

    fn eval(&self) -> LastEval {
        LastEval {
            loss: f64::from_bits(self.loss),
            z: from_bits(&self.z),
            field_norm: f64::from_bits(self.field_norm),
            zdot_left: from_bits(&self.zdot_left),
            zdot_right: from_bits(&self.zdot_right),
            slopes: from_bits(&self.slopes),
            slopes_updated: self.slopes_updated,
            // Read only right after a settle evaluation, which refills it.
            evaluated_slopes: Vec::new(),
            rows: self.rows.iter().map(|r| from_bits(r)).collect(),
            g_inv: from_bits(&self.g_inv),
        }
    }
}

/// True when a solve of `model` with `opts` can pause and resume: the kink-aware solve (the
/// classic one, `kink_aware = false`, has no pattern to keep and is not resumable), on any
/// network it accepts.
pub fn resumable(_model: &Model, opts: &FlowOptions) -> bool {
    opts.kink_aware
}

fn mismatch(what: &str) -> Error {
    Error::Invalid(format!(
        "cannot resume the flow solve: the checkpoint's {what} does not match this model and data \
         (was it written by another version of gradflow?); start the run again without --resume"
    ))
}

impl Solver<'_, '_> {
    /// The solve's state after an accepted step at `position`, with `field` the field the next
    /// step starts from.
    pub(super) fn snapshot(&self, position: Position, field: &[f64]) -> FlowSnapshot {
        let sys = &*self.sys;
        let indices = |v: &[bool]| (0..v.len()).filter(|&e| v[e]).collect();
        FlowSnapshot {
            position,
            field: to_bits(field),
            compiled: sys.is_compiled(),
            pieces: sys.pieces.clone(),
            pinned: sys.pinned.clone(),
            pin_slopes: sys
                .pin_slopes
                .iter()
                .map(|(&e, s)| (e, s.to_bits()))
                .collect(),
            activation_slopes: to_bits(&sys.remembered_slopes()),
            counts: sys.counts,
            last: EvalBits::of(&sys.last),
            grace: indices(&self.grace),
            entries_slid: indices(&self.entries_slid),
            slide_start: self.slide_start.iter().map(|(&e, &t)| (e, t)).collect(),
            events: self.events.clone(),
            since: self.since,
        }
    }

    /// Puts the solve back into the state of `s` (θ is the caller's) and returns the field the
    /// next step starts from. Refuses a snapshot that does not fit this model, data and route.
    pub(super) fn restore(&mut self, s: &FlowSnapshot, p: usize) -> Result<Vec<f64>> {
        let n = self.sys.entries();
        if s.compiled != self.sys.is_compiled() {
            return Err(mismatch("evaluation route (compiled or layer path)"));
        }
        if s.pieces.len() != n || s.field.len() != p || s.last.z.len() != n {
            return Err(mismatch("number of entries or parameters"));
        }
        let sorted = s.pinned.windows(2).all(|w| w[0] < w[1]);
        let inside = |v: &[usize]| v.iter().all(|&e| e < n);
        let slopes_inside = s.pin_slopes.iter().all(|&(e, _)| e < n);
        let starts_inside = s.slide_start.iter().all(|&(e, _)| e < n);
        let pieces_inside = (0..n).all(|e| (s.pieces[e] as usize) < self.sys.pieces_of(e));
        let k = s.pinned.len();
        let speeds = s.last.zdot_left.len() == k && s.last.zdot_right.len() == k;
        let pinned_have_knots = s
            .pinned
            .iter()
            .all(|&e| (s.pieces[e] as usize) + 1 < self.sys.pieces_of(e));
        if !(sorted
            && speeds
            && inside(&s.pinned)
            && inside(&s.grace)
            && inside(&s.entries_slid)
            && slopes_inside
            && starts_inside
            && pieces_inside
            && pinned_have_knots)
        {
            return Err(mismatch("pattern"));
        }
        let layers = self.sys.remembered_slopes().len();
        if s.activation_slopes.is_empty() && self.sys.has_trainable_slope() {
            return Err(Error::Invalid(
                "cannot resume the flow solve of a PReLU network: the checkpoint does not keep \
                 the PReLU slopes of its last forward pass (it was written by an older \
                 gradflow); start the run again without --resume"
                    .into(),
            ));
        }
        if !s.activation_slopes.is_empty() && s.activation_slopes.len() != layers {
            return Err(mismatch("number of activation layers"));
        }
        let sys = &mut *self.sys;
        sys.pieces.clone_from(&s.pieces);
        sys.pinned.clone_from(&s.pinned);
        sys.pin_slopes = s
            .pin_slopes
            .iter()
            .map(|&(e, b)| (e, f64::from_bits(b)))
            .collect();
        sys.counts = s.counts;
        sys.last = s.last.eval();
        if !s.activation_slopes.is_empty() {
            sys.set_remembered_slopes(&from_bits(&s.activation_slopes));
        }
        sys.refresh();
        let flags = |list: &[usize]| {
            let mut v = vec![false; n];
            for &e in list {
                v[e] = true;
            }
            v
        };
        self.grace = flags(&s.grace);
        self.graced = s.grace.clone();
        self.entries_slid = flags(&s.entries_slid);
        self.slide_start = s.slide_start.iter().copied().collect();
        self.events = s.events.clone();
        self.since = s.since;
        Ok(from_bits(&s.field))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::Activation;
    use crate::data::Dataset;
    use crate::flow::{gradient_flow_from, FlowProgress, FlowRecord};
    use crate::init::{init_params, InitScheme};
    use crate::loss::LossKind;
    use crate::presets;
    use crate::train::Control;

    const T_END: f64 = 10.0;

    /// Everything an output time reports, floats as bit patterns, with θ there.
    type Row = (usize, u64, u64, u64, usize, u64, u64, u64, u64, Vec<u64>);

    fn row(r: &FlowRecord, theta: &[f64]) -> Row {
        (
            r.index,
            r.t.to_bits(),
            r.loss.to_bits(),
            r.speed.to_bits(),
            r.pinned,
            r.crossings,
            r.slides,
            r.releases,
            r.gradient_evaluations,
            to_bits(theta),
        )
    }

    /// Solves from θ (or from `resume` at θ), pausing after the first accepted step at which
    /// `pause` holds; returns the rows and the outcome.
    fn solve(
        model: &Model,
        data: &Dataset,
        theta: &mut [f64],
        opts: &FlowOptions,
        resume: Option<&FlowSnapshot>,
        mut pause: impl FnMut(&FlowProgress) -> bool + Send,
    ) -> (Vec<Row>, crate::flow::FlowOutcome) {
        let mut rows = Vec::new();
        let observe = |r: &FlowRecord, th: &[f64]| {
            rows.push(row(r, th));
            Control::Continue
        };
        let mut progress = |p: &FlowProgress| {
            if pause(p) {
                Control::Pause
            } else {
                Control::Continue
            }
        };
        let out = gradient_flow_from(model, data, theta, opts, resume, observe, &mut progress)
            .expect("flow solve");
        (rows, out)
    }

    /// A solve paused with entries pinned (mid-slide), its snapshot through JSON, and resumed,
    /// must end exactly where one uninterrupted solve ends: θ(T), every output record and θ at
    /// it, the counts and the event totals, bit for bit. Both evaluation routes, and a Siamese
    /// network (entries of both tower applications and of |·|) on the layer path.
    fn paused_solve_resumes_bit_identically(model: &Model, data: &Dataset, compiled: bool) {
        let _lock = crate::parallelism_lock();
        let theta0 = init_params(&model.param_specs(), &InitScheme::Torch, 0);
        let mut opts = FlowOptions::new(T_END, 1e-8, 1e-10, 40, LossKind::Mse);
        opts.compiled = compiled;

        let mut whole = theta0.clone();
        let (rows, out) = solve(model, data, &mut whole, &opts, None, |_| false);
        assert!(out.paused.is_none() && out.t_reached == T_END);

        // Pause at the second accepted step with at least two entries pinned.
        let mut theta = theta0.clone();
        let mut seen = 0;
        let pinned_twice = |p: &FlowProgress| {
            seen += (p.pinned >= 2) as usize;
            seen == 2
        };
        let (mut resumed_rows, first) = solve(model, data, &mut theta, &opts, None, pinned_twice);
        let snap = first.paused.expect("the solve paused");
        assert!(snap.pinned() >= 2, "pins active at the pause");
        assert!(snap.position.t > 0.0 && snap.position.t < T_END);
        assert_eq!(first.t_reached, snap.position.t);
        let json = serde_json::to_string(&*snap).unwrap();
        let snap: FlowSnapshot = serde_json::from_str(&json).unwrap();
        let (rest, second) = solve(model, data, &mut theta, &opts, Some(&snap), |_| false);
        resumed_rows.extend(rest);

        assert_eq!(to_bits(&theta), to_bits(&whole), "θ(T)");
        assert_eq!(resumed_rows.len(), rows.len());
        for (a, b) in resumed_rows.iter().zip(&rows) {
            assert_eq!(a, b, "output {}", b.0);
        }
        assert_eq!(second.counts, out.counts);
        assert_eq!(second.events, out.events);
        assert_eq!(
            (second.steps_accepted, second.steps_rejected),
            (out.steps_accepted, out.steps_rejected)
        );
        // The choice between the pairs was under way at the pause (the cheap pair tried, events
        // counted) and carried over: the same steps by each pair, the same evaluations in them.
        let pairs = snap.position.pairs;
        assert!(pairs.h_low > 0.0 && pairs.mean_gap > 0.0, "{pairs:?}");
        assert_eq!(
            (second.steps_low_order, second.step_evaluations),
            (out.steps_low_order, out.step_evaluations)
        );
        assert_eq!(second.initial_loss.to_bits(), out.initial_loss.to_bits());
        assert_eq!(second.final_loss.to_bits(), out.final_loss.to_bits());
        assert!(out.events.slides > 0, "the solve slid");
    }

    fn dnn() -> (Model, Dataset) {
        let model = presets::dnn(4, &[8, 8], 2, &Activation::leaky_relu());
        (model, Dataset::ball(10, 4, 2, 0))
    }

    #[test]
    fn paused_solve_resumes_bit_identically_compiled() {
        let (model, data) = dnn();
        paused_solve_resumes_bit_identically(&model, &data, true);
    }

    #[test]
    fn paused_solve_resumes_bit_identically_layer_path() {
        let (model, data) = dnn();
        paused_solve_resumes_bit_identically(&model, &data, false);
    }

    /// PReLU: a trainable slope, so the kink's one-sided slopes move with θ and the slope of
    /// the last forward pass must come back with the snapshot.
    fn dnn_prelu() -> (Model, Dataset) {
        let model = presets::dnn(4, &[8, 8], 2, &Activation::Prelu { init: 0.25 });
        (model, Dataset::ball(10, 4, 2, 0))
    }

    #[test]
    fn paused_prelu_solve_resumes_bit_identically_compiled() {
        let (model, data) = dnn_prelu();
        paused_solve_resumes_bit_identically(&model, &data, true);
    }

    #[test]
    fn paused_prelu_solve_resumes_bit_identically_layer_path() {
        let (model, data) = dnn_prelu();
        paused_solve_resumes_bit_identically(&model, &data, false);
    }

    /// A gcn (Â mixes samples): the compiled passes with the layers' rows.
    fn gcn(act: &Activation) -> (Model, Dataset) {
        let data = Dataset::ball(10, 4, 2, 2);
        let graph = crate::graph::Graph::knn(&data.x, 2).expect("graph");
        let a_hat = std::sync::Arc::new(graph.normalized_adjacency());
        (presets::gcn(a_hat, 4, &[8, 8], 2, act), data)
    }

    fn gcn_resumes_on_the_compiled_route(act: &Activation) {
        let (model, data) = gcn(act);
        let theta0 = init_params(&model.param_specs(), &InitScheme::Torch, 0);
        let sys =
            super::super::system::KinkSystem::new(&model, &data, LossKind::Mse, &theta0, true);
        assert!(
            sys.unwrap().is_compiled(),
            "the gcn takes the compiled route"
        );
        paused_solve_resumes_bit_identically(&model, &data, true);
    }

    #[test]
    fn paused_gcn_solve_resumes_bit_identically_compiled() {
        gcn_resumes_on_the_compiled_route(&Activation::leaky_relu());
    }

    #[test]
    fn paused_gcn_prelu_solve_resumes_bit_identically_compiled() {
        gcn_resumes_on_the_compiled_route(&Activation::Prelu { init: 0.25 });
    }

    #[test]
    fn paused_solve_resumes_bit_identically_siamese() {
        let combine = crate::layers::PairCombine::AbsDiff;
        let model = presets::siamese(4, &[6, 3], combine, 2, &Activation::leaky_relu());
        paused_solve_resumes_bit_identically(&model, &Dataset::pairs(8, 4, 2, 1), false);
    }

    /// A snapshot of another network is refused with an error, not a panic.
    #[test]
    fn snapshot_of_another_model_is_refused() {
        let act = Activation::leaky_relu();
        let model = presets::dnn(4, &[8, 8], 2, &act);
        let data = Dataset::ball(10, 4, 2, 0);
        let theta0 = init_params(&model.param_specs(), &InitScheme::Torch, 0);
        let opts = FlowOptions::new(T_END, 1e-8, 1e-10, 40, LossKind::Mse);
        let mut theta = theta0.clone();
        let (_, first) = solve(&model, &data, &mut theta, &opts, None, |p| {
            p.steps_accepted == 5
        });
        let snap = first.paused.expect("paused");
        let other = presets::dnn(4, &[8, 6], 2, &act);
        let mut th = init_params(&other.param_specs(), &InitScheme::Torch, 0);
        let err = gradient_flow_from(
            &other,
            &data,
            &mut th,
            &opts,
            Some(&snap),
            |_, _| Control::Continue,
            &mut |_| Control::Continue,
        )
        .unwrap_err();
        assert!(err.to_string().contains("cannot resume"), "{err}");
    }

    /// What a resumed PReLU solve cannot rebuild by itself: the system it builds at θ remembers
    /// θ's PReLU slopes, while the paused solve's last forward pass was before the projection
    /// onto the knots or at an output time. The first pause (after ≥ 2 pinned steps) where a pinned entry's
    /// layer remembers another slope than θ's is taken; one of those entries loses its chosen
    /// slope in the snapshot (as when the effective slope was undefined), and the restored
    /// system must install it with the mean of its kink's one-sided slopes at the *paused*
    /// solve's slope: (a + 1) / 2 for PReLU at 0, bit for bit.
    fn restored_pin_uses_remembered_prelu_slope(compiled: bool) {
        use super::super::system::KinkSystem;
        let _lock = crate::parallelism_lock();
        let (model, data) = dnn_prelu();
        let theta0 = init_params(&model.param_specs(), &InitScheme::Torch, 0);
        let mut opts = FlowOptions::new(T_END, 1e-8, 1e-10, 40, LossKind::Mse);
        opts.compiled = compiled;
        let layer_of = |sys: &KinkSystem, e: usize| {
            sys.layer_ranges()
                .position(|(a, b, _)| a <= e && e < b)
                .unwrap()
        };
        for stop in 1..300u64 {
            let mut theta = theta0.clone();
            let (_, out) = solve(&model, &data, &mut theta, &opts, None, |p| {
                p.steps_accepted == stop
            });
            let snap = out.paused.expect("paused before T");
            let json = serde_json::to_string(&*snap).unwrap();
            let mut snap: FlowSnapshot = serde_json::from_str(&json).unwrap();
            let mut sys = KinkSystem::new(&model, &data, opts.loss, &theta, compiled).unwrap();
            assert_eq!(sys.is_compiled(), compiled);
            let rebuilt = to_bits(&sys.remembered_slopes());
            let differs = |e: &usize| {
                let l = layer_of(&sys, *e);
                rebuilt[l] != snap.activation_slopes[l]
            };
            let Some(e) = snap.pinned.iter().copied().find(differs) else {
                continue;
            };
            snap.pin_slopes.retain(|&(f, _)| f != e);
            let a = f64::from_bits(snap.activation_slopes[layer_of(&sys, e)]);
            Solver::new(&mut sys, &opts)
                .restore(&snap, theta.len())
                .unwrap();
            let installed = sys.installed_slope(e).expect("e is pinned");
            assert_eq!(
                installed.to_bits(),
                (0.5 * (a + 1.0)).to_bits(),
                "entry {e}"
            );
            assert_eq!(to_bits(&sys.remembered_slopes()), snap.activation_slopes);
            return;
        }
        panic!("no pause found where a pinned entry's layer remembers another slope than θ's");
    }

    #[test]
    fn restored_pin_uses_remembered_prelu_slope_compiled() {
        restored_pin_uses_remembered_prelu_slope(true);
    }

    #[test]
    fn restored_pin_uses_remembered_prelu_slope_layer_path() {
        restored_pin_uses_remembered_prelu_slope(false);
    }

    /// A paused solve's snapshot as JSON, with the activation slopes removed (as an older
    /// gradflow wrote it), and a resume from it.
    fn resume_without_activation_slopes(act: &Activation) -> Result<()> {
        let _lock = crate::parallelism_lock();
        let model = presets::dnn(4, &[8, 8], 2, act);
        let data = Dataset::ball(10, 4, 2, 0);
        let opts = FlowOptions::new(T_END, 1e-8, 1e-10, 40, LossKind::Mse);
        let mut theta = init_params(&model.param_specs(), &InitScheme::Torch, 0);
        let (_, first) = solve(&model, &data, &mut theta, &opts, None, |p| {
            p.steps_accepted == 5
        });
        let snap = first.paused.expect("paused");
        let mut json: serde_json::Value = serde_json::to_value(&*snap).unwrap();
        let removed = json.as_object_mut().unwrap().remove("activation_slopes");
        assert!(
            removed.is_some(),
            "the snapshot keeps the activation slopes"
        );
        let old: FlowSnapshot = serde_json::from_value(json).expect("loads without the field");
        gradient_flow_from(
            &model,
            &data,
            &mut theta,
            &opts,
            Some(&old),
            |_, _| Control::Continue,
            &mut |_| Control::Continue,
        )
        .map(|_| ())
    }

    /// Without the field, a leaky-ReLU snapshot still resumes (its slopes are never read); a
    /// PReLU one is refused with an error that says why.
    #[test]
    fn snapshot_without_activation_slopes_loads_unless_prelu() {
        resume_without_activation_slopes(&Activation::leaky_relu()).expect("leaky ReLU resumes");
        let err = resume_without_activation_slopes(&Activation::Prelu { init: 0.25 }).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("PReLU") && msg.contains("without --resume"),
            "{msg}"
        );
    }
}
