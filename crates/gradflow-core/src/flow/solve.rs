//! The kink-aware gradient-flow solve: Runge–Kutta steps on one smooth piece at a time (by
//! Dormand–Prince 5(4) or, where events set the step length, Bogacki–Shampine 3(2): `pairs.rs`),
//! kink crossings located as events, Filippov sliding for pre-activations that the flow pins
//! to a kink, and output at requested times by the continuous extension.
//!
//! One accepted step on the frozen pattern ends at θ₁ with the field (and every pre-activation)
//! already evaluated there (FSAL). If some unpinned pre-activation left its piece, or some pinned
//! one stopped being pushed into its kink from both sides, the step holds an event: its time is
//! bracketed on the continuous extension (secant estimates with a bisection safeguard; forward
//! passes only unless a pinned entry is involved) to 1e-12 in the event function or 1e-13 in
//! t (a release alone to 1e-6 of the step: the field is continuous there), and the solve
//! restarts there with the pattern switched:
//! - an entry reaching its kink is pinned tentatively; the projected field (see `system/`)
//!   says whether the two sides push it into the kink (it stays: sliding starts) or one side
//!   pushes it through or back (it takes that piece: a crossing, or a touch);
//! - a pinned entry that one side stops pushing is released onto that side.
//!
//! Decisions are repeated until consistent (several entries can interact). Where the leaving
//! entry's slope reaches no other pinned entry, the field after it leaves comes from the
//! evaluation that decided it (`system/release.rs`). Pinned entries are
//! pulled back onto their kinks after every step by one Gauss–Newton projection.
//!
//! A solve can pause after any accepted step and resume from its state ([`gradient_flow_from`],
//! `snapshot.rs`), ending bit-identical to one that never paused.

use super::dopri;
use super::events::Solver;
use super::pairs::{self, Outcome, PairState};
use super::snapshot::{resumable, FlowSnapshot, Position};
use super::system::{Counts, KinkSystem};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::loss::LossKind;
use crate::model::Model;
use crate::train::Control;
use serde::Serialize;
use std::collections::BTreeMap;

/// Settings of a flow solve.
#[derive(Clone, Debug)]
pub struct FlowOptions {
    /// End time T of the solve (t ∈ [0, T]).
    pub t_end: f64,
    pub rtol: f64,
    pub atol: f64,
    /// Times at which to report (sorted, within [0, T]).
    pub outputs: Vec<f64>,
    pub loss: LossKind,
    /// Handle kinks (events + sliding). When false the true, discontinuous field is given to
    /// the adaptive solver as is — the classic approach, for comparison.
    pub kink_aware: bool,
    /// Give up (with an error naming this limit) after this many gradient evaluations.
    pub max_gradient_evaluations: u64,
    /// Evaluate dnn/resnet/gcn presets by the compiled route (false: the general layer path).
    pub compiled: bool,
    /// Let the kink-aware solve take Bogacki–Shampine 3(2) steps (three evaluations instead of
    /// six) where kink events, not accuracy, set the step length, chosen per step by expected
    /// evaluations per unit time (see `pairs.rs`). False: Dormand–Prince 5(4) throughout.
    pub cheap_steps: bool,
}

impl FlowOptions {
    /// `count` + 1 equally spaced output times on [0, T].
    pub fn new(t_end: f64, rtol: f64, atol: f64, count: usize, loss: LossKind) -> Self {
        let count = count.max(1);
        Self {
            t_end,
            rtol,
            atol,
            outputs: (0..=count)
                .map(|k| t_end * k as f64 / count as f64)
                .collect(),
            loss,
            kink_aware: true,
            max_gradient_evaluations: 5_000_000,
            compiled: true,
            cheap_steps: true,
        }
    }
}

/// What is known at an output time.
#[derive(Clone, Debug, Serialize)]
pub struct FlowRecord {
    /// Index of the output time.
    pub index: usize,
    pub t: f64,
    pub loss: f64,
    /// ‖dθ/dt‖ (the projected field while entries slide).
    pub speed: f64,
    /// Pre-activations pinned to a kink at t.
    pub pinned: usize,
    /// Those entries (global entry, piece left of its knot): what [`super::filippov_ntk`]
    /// needs to form the kernel of the sliding field at this point.
    pub sliding: Vec<(usize, u16)>,
    /// Since the previous record: kink crossings, sliding starts, releases from sliding.
    pub crossings: u64,
    pub slides: u64,
    pub releases: u64,
    /// Gradient evaluations so far.
    pub gradient_evaluations: u64,
}

/// One interval on which a pre-activation slid along its kink.
#[derive(Clone, Copy, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct SlidingInterval {
    /// Global entry index (activation layers in order, then sample-major i·width + unit).
    pub entry: usize,
    pub start: f64,
    pub end: f64,
}

/// Event totals of a solve.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct EventSummary {
    /// Pre-activations tracked.
    pub tracked: usize,
    pub crossings: u64,
    /// Sliding intervals started.
    pub slides: u64,
    pub releases: u64,
    /// Kink touches: an entry reaching its kink and turning back.
    pub touches: u64,
    pub max_pinned: usize,
    /// Σ over entries of the time spent pinned.
    pub sliding_time: f64,
    pub longest_slide: f64,
    /// Entries that slid at least once.
    pub entries_slid: usize,
    /// The first 10,000 sliding intervals.
    pub intervals: Vec<SlidingInterval>,
}

#[derive(Clone, Debug, Serialize)]
pub struct FlowOutcome {
    /// Time reached (T unless stopped).
    pub t_reached: f64,
    pub stopped_early: bool,
    pub steps_accepted: u64,
    pub steps_rejected: u64,
    /// Accepted steps taken by the Bogacki–Shampine 3(2) pair (the rest: Dormand–Prince).
    pub steps_low_order: u64,
    /// Field evaluations inside steps, accepted or rejected (the rest went to events, outputs
    /// and the start).
    pub step_evaluations: u64,
    pub counts: Counts,
    /// Full-gradient equivalents of all the work (see [`Counts::gradient_equivalents`]).
    pub gradient_equivalents: f64,
    pub initial_loss: f64,
    pub final_loss: f64,
    pub events: EventSummary,
    /// Set when the solve paused after an accepted step (see [`gradient_flow_from`]): the state
    /// it continues from. Open sliding intervals are closed at `t_reached` in `events` only.
    #[serde(skip)]
    pub paused: Option<Box<FlowSnapshot>>,
}

/// Where a flow solve stands after an accepted step (for a progress display).
#[derive(Clone, Copy, Debug)]
pub struct FlowProgress {
    pub t: f64,
    pub t_end: f64,
    pub loss: f64,
    pub pinned: usize,
    pub steps_accepted: u64,
    /// Steps rejected so far (error estimate above tolerance).
    pub steps_rejected: u64,
    /// Length in t of the step just accepted (up to the event when it holds one), and whether
    /// it ended at an event (kink crossing, sliding start or release).
    pub step: f64,
    pub event: bool,
    pub gradient_evaluations: u64,
}

/// Solves dθ/dt = −∇L(θ) on [0, T] from θ (updated in place to θ(T)), calling
/// `observe(record, θ(t))` at every output time; `Control::Stop` ends the solve there.
/// The kink-aware solve runs on a worker of rayon's pool (hence `Send` callbacks): called from
/// outside it, the caller waits once instead of at every pass.
pub fn gradient_flow(
    model: &Model,
    data: &Dataset,
    theta: &mut [f64],
    opts: &FlowOptions,
    observe: impl FnMut(&FlowRecord, &[f64]) -> Control + Send,
) -> Result<FlowOutcome> {
    gradient_flow_with_progress(model, data, theta, opts, observe, &mut |_| {})
}

/// [`gradient_flow`], also calling `progress` after every accepted step of the kink-aware
/// solve (the classic solve reports at output times only).
pub fn gradient_flow_with_progress(
    model: &Model,
    data: &Dataset,
    theta: &mut [f64],
    opts: &FlowOptions,
    observe: impl FnMut(&FlowRecord, &[f64]) -> Control + Send,
    progress: &mut (dyn FnMut(&FlowProgress) + Send),
) -> Result<FlowOutcome> {
    let mut report = |p: &FlowProgress| {
        progress(p);
        Control::Continue
    };
    gradient_flow_from(model, data, theta, opts, None, observe, &mut report)
}

/// [`gradient_flow_with_progress`] that can pause and resume. When `progress` returns
/// [`Control::Pause`] after an accepted step before T, the solve ends there (θ updated to that
/// step's end) with [`FlowOutcome::paused`] holding its state; given that state as `resume`,
/// with θ as it was left, the solve continues and ends bit-identical to one that never paused.
/// Only [`resumable`] solves pause (the others ignore `Control::Pause`); resuming any other
/// solve, or from a snapshot of another model or data, is an error.
pub fn gradient_flow_from(
    model: &Model,
    data: &Dataset,
    theta: &mut [f64],
    opts: &FlowOptions,
    resume: Option<&FlowSnapshot>,
    mut observe: impl FnMut(&FlowRecord, &[f64]) -> Control + Send,
    progress: &mut (dyn FnMut(&FlowProgress) -> Control + Send),
) -> Result<FlowOutcome> {
    validate(opts)?;
    let can_pause = resumable(model, opts);
    if resume.is_some() && !can_pause {
        return Err(Error::Invalid(
            "only the kink-aware flow solve can resume (kink_aware = false keeps no pattern to resume)".into(),
        ));
    }
    if !opts.kink_aware {
        return super::plain::plain_flow(model, data, theta, opts, |rec, th| {
            progress(&FlowProgress {
                t: rec.t,
                t_end: opts.t_end,
                loss: rec.loss,
                pinned: 0,
                steps_accepted: 0,
                steps_rejected: 0,
                step: 0.0,
                event: false,
                gradient_evaluations: rec.gradient_evaluations,
            });
            observe(rec, th)
        });
    }
    // On a worker of the pool, so the passes' rayon::join run one half here and leave the
    // other to be stolen, instead of injecting both from outside and blocking this thread.
    rayon::scope(|_| {
        let mut sys = KinkSystem::new(model, data, opts.loss, theta, opts.compiled)?;
        let mut ignore_pause = |p: &FlowProgress| match progress(p) {
            Control::Pause if !can_pause => Control::Continue,
            c => c,
        };
        let result = Solver::new(&mut sys, opts).run(theta, resume, observe, &mut ignore_pause);
        sys.uninstall();
        result
    })
}

fn validate(opts: &FlowOptions) -> Result<()> {
    let bad = |field: &str, msg: String| {
        Err(Error::Config {
            file: "<flow options>".into(),
            field: field.into(),
            message: msg,
        })
    };
    if !(opts.t_end.is_finite() && opts.t_end > 0.0) {
        return bad(
            "train.t_end",
            format!("t_end must be a finite time > 0, got {}", opts.t_end),
        );
    }
    if !(opts.rtol.is_finite() && opts.rtol > 0.0 && opts.rtol < 1.0) {
        return bad(
            "train.rtol",
            format!("rtol must lie in (0, 1), got {}", opts.rtol),
        );
    }
    if !(opts.atol.is_finite() && opts.atol > 0.0) {
        return bad("train.atol", format!("atol must be > 0, got {}", opts.atol));
    }
    let sorted = opts.outputs.windows(2).all(|w| w[0] <= w[1]);
    let inside = opts
        .outputs
        .iter()
        .all(|&t| t.is_finite() && (0.0..=opts.t_end).contains(&t));
    if !(sorted && inside) {
        return bad(
            "train.outputs",
            format!(
                "output times must be finite, sorted and within [0, t_end = {}]",
                opts.t_end
            ),
        );
    }
    Ok(())
}

pub(super) fn too_many(opts: &FlowOptions) -> Error {
    Error::Invalid(format!(
        "the flow solve needed more than {} gradient evaluations; loosen train.rtol/train.atol \
         or shorten train.t_end",
        opts.max_gradient_evaluations
    ))
}

pub(super) fn check_step(h: f64, t: f64) -> Result<()> {
    if h < 1e-14 * (1.0 + t.abs()) {
        return Err(Error::Invalid(format!(
            "the flow solve's step size fell to {h:e} at t = {t}: the field is not resolvable at \
             this tolerance; loosen train.rtol/train.atol"
        )));
    }
    Ok(())
}

pub(super) fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

impl Solver<'_, '_> {
    fn run(
        mut self,
        theta: &mut [f64],
        resume: Option<&FlowSnapshot>,
        mut observe: impl FnMut(&FlowRecord, &[f64]) -> Control,
        progress: &mut dyn FnMut(&FlowProgress) -> Control,
    ) -> Result<FlowOutcome> {
        let p = theta.len();
        let (mut f, start) = match resume {
            Some(s) => (self.restore(s, p)?, s.position),
            None => {
                let mut f = vec![0.0; p];
                self.sys.evaluate(theta, &mut f)?;
                let initial_loss = self.sys.last.loss;
                let h = dopri::initial_step(self.sys, theta, &f, self.tol)?;
                self.sys.evaluate(theta, &mut f)?;
                let start = Position {
                    t: 0.0,
                    h,
                    next_output: 0,
                    steps_accepted: 0,
                    steps_rejected: 0,
                    stalled: 0,
                    initial_loss,
                    pairs: PairState::default(),
                };
                (f, start)
            }
        };
        let initial_loss = start.initial_loss;
        let (mut t, mut h, mut next) = (start.t, start.h, start.next_output);
        let (mut acc, mut rej) = (start.steps_accepted, start.steps_rejected);
        let mut stalled = start.stalled;
        let mut pair_state = start.pairs;
        let mut stopped = false;
        let mut paused = None;
        let mut buf = vec![0.0; p];
        let mut dbuf = vec![0.0; p];
        // Kept across steps: the step, its stages, the evaluation at its start.
        let (mut st, mut work) = (dopri::Step::empty(), pairs::Workspaces::default());
        let mut saved = super::system::LastEval::default();
        let mut start_pinned: Vec<f64> = Vec::new();
        while next < self.opts.outputs.len() && self.opts.outputs[next] <= 0.0 {
            let rec = self.record(next, 0.0, initial_loss, norm(&f));
            stopped |= self.observe_uncontrolled(&mut observe, &rec, theta);
            next += 1;
        }
        while t < self.opts.t_end && !stopped {
            if self.sys.counts.gradients > self.opts.max_gradient_evaluations {
                return Err(too_many(self.opts));
            }
            let pair = pair_state.choose(self.opts.cheap_steps, t, h);
            let h_pair = pair_state.step_size(pair, h).min(self.opts.t_end - t);
            saved.copy_from(&self.sys.last);
            start_pinned.clear();
            start_pinned.extend(
                (0..self.sys.pinned.len())
                    .map(|j| self.sys.last.zdot_left[j].min(-self.sys.last.zdot_right[j])),
            );
            pairs::step_into(
                pair, self.sys, theta, &f, h_pair, self.tol, &mut work, &mut st,
            )?;
            if st.error.is_nan() || st.error > 1.0 {
                rej += 1;
                let h_next = if st.error.is_finite() {
                    pair.next_step_size(h_pair, st.error)
                } else {
                    h_pair * 0.2
                };
                pair_state.stepped(pair, Outcome::Rejected, h_next, &mut h);
                check_step(h_next, t)?;
                // Restore the evaluation at θ (the next step reads `last` at its start).
                std::mem::swap(&mut self.sys.last, &mut saved);
                continue;
            }
            acc += 1;
            let viol = self.violations(true);
            let (s_end, event) = if viol.is_empty() {
                (1.0, None)
            } else {
                let mut start_phi = BTreeMap::new();
                for &(e, _) in &viol {
                    let v = match self.sys.pinned.binary_search(&e) {
                        Ok(j) => start_pinned.get(j).copied().unwrap_or(1.0),
                        Err(_) => self.sys.inside(e, saved.z[e]),
                    };
                    start_phi.insert(e, v);
                }
                let (s, th) = self.locate(&st, viol, &start_phi)?;
                (s, Some(th))
            };
            let t_new = t + s_end * h_pair;
            let (cut, step_len) = (event.is_some(), s_end * h_pair);
            while next < self.opts.outputs.len() && self.opts.outputs[next] <= t_new && !stopped {
                let s = ((self.opts.outputs[next] - t) / h_pair).clamp(0.0, 1.0);
                st.interpolate(s, &mut buf);
                st.interpolate_derivative(s, &mut dbuf);
                let loss = self.sys.loss_at(&buf)?;
                let rec = self.record(next, self.opts.outputs[next], loss, norm(&dbuf));
                stopped |= self.observe_uncontrolled(&mut observe, &rec, &buf);
                if stopped {
                    // End exactly at the output time the observer stopped at.
                    theta.copy_from_slice(&buf);
                    t = self.opts.outputs[next];
                }
                next += 1;
            }
            if stopped {
                break;
            }
            match event {
                None => {
                    theta.copy_from_slice(&st.y_new);
                    f.copy_from_slice(&st.f_new);
                    self.sys.project_onto_knots(theta);
                    t = t_new;
                    let h_next = pair.next_step_size(h_pair, st.error);
                    pair_state.stepped(pair, Outcome::Uncut, h_next, &mut h);
                }
                Some(th) => {
                    theta.copy_from_slice(&th);
                    stalled = if t_new - t <= 1e-12 * (1.0 + t) {
                        stalled + 1
                    } else {
                        0
                    };
                    if stalled > 200 {
                        return Err(Error::Invalid(format!(
                            "the flow solve stalled at t = {t}: 200 kink events without progress \
                             (entries {:?}); please report this configuration",
                            self.sys.pinned
                        )));
                    }
                    t = t_new;
                    f = self.switch(theta, t)?;
                    // A step cut by an event keeps its size (clipped at T like any step).
                    pair_state.event(t);
                    pair_state.stepped(pair, Outcome::Cut, h_pair, &mut h);
                }
            }
            let control = progress(&FlowProgress {
                t,
                t_end: self.opts.t_end,
                loss: self.sys.last.loss,
                pinned: self.sys.pinned.len(),
                steps_accepted: acc,
                steps_rejected: rej,
                step: step_len,
                event: cut,
                gradient_evaluations: self.sys.counts.gradients,
            });
            if control == Control::Pause && t < self.opts.t_end {
                let position = Position {
                    t,
                    h,
                    next_output: next,
                    steps_accepted: acc,
                    steps_rejected: rej,
                    stalled,
                    initial_loss,
                    pairs: pair_state,
                };
                paused = Some(Box::new(self.snapshot(position, &f)));
                break;
            }
        }
        for (e, t0) in std::mem::take(&mut self.slide_start) {
            self.close_interval(e, t0, t);
        }
        let final_loss = self.sys.loss_at(theta)?;
        Ok(FlowOutcome {
            t_reached: t,
            stopped_early: stopped,
            steps_accepted: acc,
            steps_rejected: rej,
            steps_low_order: pair_state.low_order_steps,
            step_evaluations: pair_state.step_evaluations,
            counts: self.sys.counts,
            gradient_equivalents: self.sys.counts.gradient_equivalents(self.sys_n()),
            initial_loss,
            final_loss,
            events: self.events,
            paused,
        })
    }

    /// Calls the observer with the layers released (so that whatever it evaluates — the NTK,
    /// the loss — sees the ordinary network), then takes control again. True to stop.
    fn observe_uncontrolled(
        &mut self,
        observe: &mut impl FnMut(&FlowRecord, &[f64]) -> Control,
        rec: &FlowRecord,
        theta: &[f64],
    ) -> bool {
        self.sys.uninstall();
        let stop = observe(rec, theta) == Control::Stop;
        self.sys.refresh();
        stop
    }

    fn sys_n(&self) -> usize {
        self.sys.samples()
    }

    fn record(&mut self, index: usize, t: f64, loss: f64, speed: f64) -> FlowRecord {
        let (c, s, r) = std::mem::take(&mut self.since);
        FlowRecord {
            index,
            t,
            loss,
            speed,
            pinned: self.sys.pinned.len(),
            sliding: self
                .sys
                .pinned
                .iter()
                .map(|&e| (e, self.sys.pieces[e]))
                .collect(),
            crossings: c,
            slides: s,
            releases: r,
            gradient_evaluations: self.sys.counts.gradients,
        }
    }
}
