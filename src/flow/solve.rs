//! The kink-aware gradient-flow solve: Dormand–Prince steps on one smooth piece at a time,
//! kink crossings located as events, Filippov sliding for pre-activations that the flow pins
//! to a kink, and output at requested times by the continuous extension.
//!
//! One accepted step on the frozen pattern ends at θ₁ with the field (and every pre-activation)
//! already evaluated there (FSAL). If some unpinned pre-activation left its piece, or some pinned
//! one stopped being pushed into its kink from both sides, the step holds an event: its time is
//! bracketed on the continuous extension (secant estimates with a bisection safeguard; forward
//! passes only unless a pinned entry is involved) to 1e-12 in the event function or 1e-13 in
//! t, and the solve restarts there with the pattern switched:
//! - an entry reaching its kink is pinned tentatively; the projected field (see `system.rs`)
//!   says whether the two sides push it into the kink (it stays: sliding starts) or one side
//!   pushes it through or back (it takes that piece: a crossing, or a touch);
//! - a pinned entry that one side stops pushing is released onto that side.
//!
//! Decisions are repeated until consistent (several entries can interact). Pinned entries are
//! pulled back onto their kinks after every step by one Gauss–Newton projection.

use super::dopri::{self, Field, Step, Tolerances};
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
        }
    }
}

/// What is known at an output time.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct FlowRecord {
    /// Index of the output time.
    pub index: usize,
    pub t: f64,
    pub loss: f64,
    /// ‖dθ/dt‖ (the projected field while entries slide).
    pub speed: f64,
    /// Pre-activations pinned to a kink at t.
    pub pinned: usize,
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
    pub counts: Counts,
    /// Full-gradient equivalents of all the work (see [`Counts::gradient_equivalents`]).
    pub gradient_equivalents: f64,
    pub initial_loss: f64,
    pub final_loss: f64,
    pub events: EventSummary,
}

/// The true, discontinuous field −∇L (no kink handling), for comparisons.
struct PlainField<'a> {
    model: &'a Model,
    data: &'a Dataset,
    loss: LossKind,
    evaluations: u64,
    last_loss: f64,
}

impl Field for PlainField<'_> {
    fn eval(&mut self, y: &[f64], out: &mut [f64]) -> Result<()> {
        let (l, _) = self
            .model
            .loss_and_grad(y, &self.data.x, &self.data.y, self.loss, out);
        self.evaluations += 1;
        self.last_loss = l;
        out.iter_mut().for_each(|v| *v = -*v);
        Ok(())
    }
}

/// Solves dθ/dt = −∇L(θ) on [0, T] from θ (updated in place to θ(T)), calling
/// `observe(record, θ(t))` at every output time; `Control::Stop` ends the solve there.
pub fn gradient_flow(
    model: &Model,
    data: &Dataset,
    theta: &mut [f64],
    opts: &FlowOptions,
    observe: impl FnMut(&FlowRecord, &[f64]) -> Control,
) -> Result<FlowOutcome> {
    validate(opts)?;
    if !opts.kink_aware {
        return plain_flow(model, data, theta, opts, observe);
    }
    let mut sys = KinkSystem::new(model, data, opts.loss, theta)?;
    let result = Solver::new(&mut sys, opts).run(theta, observe);
    sys.uninstall();
    result
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
    Ok(())
}

/// The classic solve: adaptive steps on the true field, no events.
fn plain_flow(
    model: &Model,
    data: &Dataset,
    theta: &mut [f64],
    opts: &FlowOptions,
    mut observe: impl FnMut(&FlowRecord, &[f64]) -> Control,
) -> Result<FlowOutcome> {
    let tol = Tolerances {
        rtol: opts.rtol,
        atol: opts.atol,
    };
    let mut field = PlainField {
        model,
        data,
        loss: opts.loss,
        evaluations: 0,
        last_loss: f64::NAN,
    };
    let mut f = vec![0.0; theta.len()];
    field.eval(theta, &mut f)?;
    let initial_loss = field.last_loss;
    let mut h = dopri::initial_step(&mut field, theta, &f, tol)?;
    let (mut t, mut next, mut acc, mut rej) = (0.0, 0, 0u64, 0u64);
    let mut buf = vec![0.0; theta.len()];
    let mut emit = |idx: usize, t: f64, th: &[f64], speed: f64, ev: u64| {
        let loss = model.loss(th, &data.x, &data.y, opts.loss);
        let rec = FlowRecord {
            index: idx,
            t,
            loss,
            speed,
            pinned: 0,
            crossings: 0,
            slides: 0,
            releases: 0,
            gradient_evaluations: ev,
        };
        observe(&rec, th)
    };
    let mut stopped = false;
    while next < opts.outputs.len() && opts.outputs[next] <= 0.0 {
        stopped |= emit(next, 0.0, theta, norm(&f), field.evaluations) == Control::Stop;
        next += 1;
    }
    while t < opts.t_end && !stopped {
        if field.evaluations > opts.max_gradient_evaluations {
            return Err(too_many(opts));
        }
        h = h.min(opts.t_end - t);
        let st = dopri::step(&mut field, theta, &f, h, tol)?;
        if st.error.is_nan() || st.error > 1.0 {
            rej += 1;
            h = if st.error.is_finite() {
                dopri::next_step_size(h, st.error)
            } else {
                h * 0.2
            };
            check_step(h, t)?;
            continue;
        }
        acc += 1;
        while next < opts.outputs.len() && opts.outputs[next] <= t + h && !stopped {
            let s = ((opts.outputs[next] - t) / h).clamp(0.0, 1.0);
            st.interpolate(s, &mut buf);
            let mut d = vec![0.0; buf.len()];
            st.interpolate_derivative(s, &mut d);
            stopped |=
                emit(next, opts.outputs[next], &buf, norm(&d), field.evaluations) == Control::Stop;
            next += 1;
        }
        theta.copy_from_slice(&st.y_new);
        f.copy_from_slice(&st.f_new);
        t += h;
        h = dopri::next_step_size(h, st.error);
    }
    let counts = Counts {
        gradients: field.evaluations,
        ..Default::default()
    };
    Ok(FlowOutcome {
        t_reached: t,
        stopped_early: stopped,
        steps_accepted: acc,
        steps_rejected: rej,
        counts,
        gradient_equivalents: field.evaluations as f64,
        initial_loss,
        final_loss: model.loss(theta, &data.x, &data.y, opts.loss),
        events: EventSummary::default(),
    })
}

fn too_many(opts: &FlowOptions) -> Error {
    Error::Invalid(format!(
        "the flow solve needed more than {} gradient evaluations; loosen train.rtol/train.atol \
         or shorten train.t_end",
        opts.max_gradient_evaluations
    ))
}

fn check_step(h: f64, t: f64) -> Result<()> {
    if h < 1e-14 * (1.0 + t.abs()) {
        return Err(Error::Invalid(format!(
            "the flow solve's step size fell to {h:e} at t = {t}: the field is not resolvable at \
             this tolerance; loosen train.rtol/train.atol"
        )));
    }
    Ok(())
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// Direction an entry was moving when it reached its kink.
#[derive(Clone, Copy, PartialEq)]
enum Dir {
    Up,
    Down,
}

struct Solver<'s, 'a> {
    sys: &'s mut KinkSystem<'a>,
    opts: &'s FlowOptions,
    tol: Tolerances,
    /// Entries just switched whose z may sit a rounding error on the wrong side.
    grace: Vec<bool>,
    slide_start: BTreeMap<usize, f64>,
    events: EventSummary,
    since: (u64, u64, u64),
    entries_slid: Vec<bool>,
}

/// Event-function tolerance for entries in grace.
const GRACE: f64 = 1e-9;

impl<'s, 'a> Solver<'s, 'a> {
    fn new(sys: &'s mut KinkSystem<'a>, opts: &'s FlowOptions) -> Self {
        let n = sys.entries();
        Self {
            sys,
            opts,
            tol: Tolerances {
                rtol: opts.rtol,
                atol: opts.atol,
            },
            grace: vec![false; n],
            slide_start: BTreeMap::new(),
            events: EventSummary {
                tracked: n,
                ..Default::default()
            },
            since: (0, 0, 0),
            entries_slid: vec![false; n],
        }
    }

    /// Event values at the last evaluation: (entry, φ) for every entry with φ < 0 (unpinned:
    /// distance inside its piece; pinned: min(ż⁻, −ż⁺)). Clears grace where φ > 0.
    fn violations(&mut self, include_pinned: bool) -> Vec<(usize, f64)> {
        let mut out = Vec::new();
        let mut pinned_iter = self.sys.pinned.iter().peekable();
        for e in 0..self.sys.entries() {
            if pinned_iter.peek() == Some(&&e) {
                pinned_iter.next();
                continue;
            }
            let phi = self.sys.inside(e, self.sys.last.z[e]);
            if phi > 0.0 {
                self.grace[e] = false;
            } else if phi < 0.0 && !(self.grace[e] && phi > -GRACE) {
                out.push((e, phi));
            }
        }
        if include_pinned {
            for (j, &e) in self.sys.pinned.iter().enumerate() {
                let phi = self.sys.last.zdot_left[j].min(-self.sys.last.zdot_right[j]);
                if phi.is_nan() || phi < 0.0 {
                    out.push((e, if phi.is_nan() { -1.0 } else { phi }));
                }
            }
        }
        out
    }

    /// φ of entry e at the last evaluation (pinned entries by their normal speeds).
    fn phi(&self, e: usize) -> f64 {
        match self.sys.pinned.binary_search(&e) {
            Ok(j) => self.sys.last.zdot_left[j].min(-self.sys.last.zdot_right[j]),
            Err(_) => self.sys.inside(e, self.sys.last.z[e]),
        }
    }

    /// Brackets the first event inside the accepted step `st` (from s = 0 to s = 1, where the
    /// events `viol` hold). Returns s and θ(s) just after the event (all violators at s).
    fn locate(
        &mut self,
        st: &Step,
        mut viol: Vec<(usize, f64)>,
        start_phi: &BTreeMap<usize, f64>,
    ) -> Result<(f64, Vec<f64>)> {
        let (mut a, mut b) = (0.0f64, 1.0f64);
        let mut phi_a: BTreeMap<usize, f64> = viol
            .iter()
            .map(|&(e, _)| (e, *start_phi.get(&e).unwrap_or(&1.0)))
            .collect();
        let mut theta_b = st.y_new.clone();
        let mut buf = vec![0.0; st.y_new.len()];
        let mut field = vec![0.0; st.y_new.len()];
        let mut shrink_fails = 0;
        for _ in 0..80 {
            let width = b - a;
            let small_phi = viol.iter().all(|&(_, p)| p.abs() < 1e-12);
            if width * st.h < 1e-13 * (1.0 + st.h) || small_phi {
                break;
            }
            // Secant estimate of the earliest root among the violators; bisect when stalling.
            let mut s = b;
            for &(e, pb) in &viol {
                let pa = *phi_a.get(&e).unwrap_or(&1.0);
                let est = if pa > pb {
                    a + width * pa / (pa - pb)
                } else {
                    a + 0.5 * width
                };
                s = s.min(est);
            }
            if shrink_fails >= 2 {
                s = a + 0.5 * width;
                shrink_fails = 0;
            }
            s = s.clamp(a + 1e-3 * width, b - 1e-3 * width);
            st.interpolate(s, &mut buf);
            let use_field = viol
                .iter()
                .any(|(e, _)| self.sys.pinned.binary_search(e).is_ok());
            if use_field {
                self.sys.evaluate(&buf, &mut field)?;
            } else {
                self.sys.forward_z(&buf)?;
            }
            let now = self.violations(use_field);
            if now.is_empty() {
                for (e, p) in phi_a.iter_mut() {
                    *p = self.phi(*e);
                }
                a = s;
            } else {
                for &(e, _) in &now {
                    phi_a.entry(e).or_insert(1.0);
                }
                viol = now;
                b = s;
                theta_b.copy_from_slice(&buf);
            }
            if b - a > 0.5 * width {
                shrink_fails += 1;
            } else {
                shrink_fails = 0;
            }
        }
        // Leave the system evaluated at θ_b (the switch logic reads z there).
        self.sys.evaluate(&theta_b, &mut field)?;
        Ok((b, theta_b))
    }

    /// Switches the pattern at an event point θ (the system was just evaluated there). Returns
    /// the field at θ under the new pattern.
    fn switch(&mut self, theta: &mut [f64], t: f64) -> Result<Vec<f64>> {
        let p = theta.len();
        let viol = self.violations(true);
        let mut fresh: BTreeMap<usize, Dir> = BTreeMap::new();
        for &(e, _) in &viol {
            if self.sys.pinned.binary_search(&e).is_ok() {
                continue;
            }
            let z = self.sys.last.z[e];
            let k = self.sys.pieces[e] as usize;
            // Above the piece when z exceeds its upper knot.
            let up = k + 1 < self.sys.pieces_of(e) && self.sys.knot_of_piece(e, k) < z;
            if up {
                fresh.insert(e, Dir::Up);
            } else {
                self.sys.pieces[e] = (k - 1) as u16;
                fresh.insert(e, Dir::Down);
            }
            let pos = self.sys.pinned.binary_search(&e).unwrap_err();
            self.sys.pinned.insert(pos, e);
        }
        self.sys.refresh();
        let mut f = vec![0.0; p];
        // The first evaluation after the pinned set changed finds the effective slopes; the
        // classification uses cotangents evaluated with them (a second evaluation).
        let mut settle = true;
        for _ in 0..32 {
            self.sys.evaluate(theta, &mut f)?;
            if std::mem::take(&mut settle) {
                self.sys.evaluate(theta, &mut f)?;
            }
            let mut leaving = Vec::new();
            for (j, &e) in self.sys.pinned.iter().enumerate() {
                let (l, r) = (self.sys.last.zdot_left[j], self.sys.last.zdot_right[j]);
                if !(l > 0.0 && r < 0.0) {
                    let up = if l >= 0.0 && r >= 0.0 {
                        true
                    } else if l <= 0.0 && r <= 0.0 {
                        false
                    } else {
                        match fresh.get(&e) {
                            Some(d) => *d == Dir::Up,
                            None => r > -l,
                        }
                    };
                    if std::env::var_os("GRADFLOW_FLOW_DEBUG").is_some() {
                        eprintln!("  switch t {t:.9} entry {e} fresh {:?} zdot- {l:.3e} zdot+ {r:.3e} slope {:.3} z {:.3e} -> {}", fresh.get(&e).map(|d| *d == Dir::Up), self.sys.last.slopes[j], self.sys.last.z[e], if up { "up" } else { "down" });
                    }
                    leaving.push((e, up));
                }
            }
            if leaving.is_empty() {
                break;
            }
            // Put every pinned entry (the leaving ones included) exactly on its kink first, so
            // a leaving entry starts on the kink, not a rounding error on the wrong side.
            self.sys.project_onto_knots(theta);
            for (e, up) in leaving {
                let pos = self.sys.pinned.binary_search(&e).expect("pinned");
                self.sys.pinned.remove(pos);
                self.sys.pin_slopes.remove(&e);
                settle = true;
                if up {
                    self.sys.pieces[e] += 1;
                }
                self.grace[e] = true;
                match fresh.remove(&e) {
                    Some(d) if (d == Dir::Up) == up => {
                        self.events.crossings += 1;
                        self.since.0 += 1;
                    }
                    Some(_) => self.events.touches += 1,
                    None => {
                        self.events.releases += 1;
                        self.since.2 += 1;
                        if let Some(t0) = self.slide_start.remove(&e) {
                            self.close_interval(e, t0, t);
                        }
                    }
                }
            }
            self.sys.refresh();
        }
        for (&e, _) in fresh.iter() {
            if self.sys.pinned.binary_search(&e).is_ok() {
                self.events.slides += 1;
                self.since.1 += 1;
                self.slide_start.insert(e, t);
                if !self.entries_slid[e] {
                    self.entries_slid[e] = true;
                    self.events.entries_slid += 1;
                }
            }
        }
        self.events.max_pinned = self.events.max_pinned.max(self.sys.pinned.len());
        self.sys.project_onto_knots(theta);
        if std::env::var_os("GRADFLOW_FLOW_DEBUG").is_some() {
            let keep = self.sys.last.clone();
            let eps = 1e-7;
            let plus: Vec<f64> = theta.iter().zip(&f).map(|(a, b)| a + eps * b).collect();
            let minus: Vec<f64> = theta.iter().zip(&f).map(|(a, b)| a - eps * b).collect();
            self.sys.forward_z(&plus)?;
            let zp = self.sys.last.z.clone();
            self.sys.forward_z(&minus)?;
            let zm = self.sys.last.z.clone();
            for &(e, _) in &viol {
                eprintln!(
                    "  after switch: entry {e} piece {} FD zdot {:.3e}",
                    self.sys.pieces[e],
                    (zp[e] - zm[e]) / (2.0 * eps)
                );
            }
            self.sys.last = keep;
        }
        Ok(f)
    }

    fn close_interval(&mut self, e: usize, t0: f64, t1: f64) {
        let d = t1 - t0;
        self.events.sliding_time += d;
        self.events.longest_slide = self.events.longest_slide.max(d);
        if self.events.intervals.len() < 10_000 {
            self.events.intervals.push(SlidingInterval {
                entry: e,
                start: t0,
                end: t1,
            });
        }
    }

    fn run(
        mut self,
        theta: &mut [f64],
        mut observe: impl FnMut(&FlowRecord, &[f64]) -> Control,
    ) -> Result<FlowOutcome> {
        let p = theta.len();
        let mut f = vec![0.0; p];
        self.sys.evaluate(theta, &mut f)?;
        let initial_loss = self.sys.last.loss;
        let mut h = dopri::initial_step(self.sys, theta, &f, self.tol)?;
        self.sys.evaluate(theta, &mut f)?;
        let (mut t, mut next, mut acc, mut rej) = (0.0f64, 0usize, 0u64, 0u64);
        let mut stopped = false;
        let mut stalled = 0;
        let mut buf = vec![0.0; p];
        let mut dbuf = vec![0.0; p];
        while next < self.opts.outputs.len() && self.opts.outputs[next] <= 0.0 {
            let rec = self.record(next, 0.0, initial_loss, norm(&f));
            stopped |= self.observe_uncontrolled(&mut observe, &rec, theta);
            next += 1;
        }
        while t < self.opts.t_end && !stopped {
            if self.sys.counts.gradients > self.opts.max_gradient_evaluations {
                return Err(too_many(self.opts));
            }
            h = h.min(self.opts.t_end - t);
            let start_last = self.sys.last.clone();
            let start_z = start_last.z.clone();
            let start_pinned: Vec<f64> = (0..self.sys.pinned.len())
                .map(|j| self.sys.last.zdot_left[j].min(-self.sys.last.zdot_right[j]))
                .collect();
            let st = dopri::step(self.sys, theta, &f, h, self.tol)?;
            if st.error.is_nan() || st.error > 1.0 {
                rej += 1;
                h = if st.error.is_finite() {
                    dopri::next_step_size(h, st.error)
                } else {
                    h * 0.2
                };
                check_step(h, t)?;
                // Restore the evaluation at θ (the next step reads `last` at its start).
                self.sys.last = start_last;
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
                        Err(_) => self.sys.inside(e, start_z[e]),
                    };
                    start_phi.insert(e, v);
                }
                if std::env::var_os("GRADFLOW_FLOW_DEBUG").is_some() {
                    eprintln!(
                        "t {t:.6} h {h:.3e} viol {:?} pinned {:?}",
                        viol, self.sys.pinned
                    );
                }
                let (s, th) = self.locate(&st, viol, &start_phi)?;
                (s, Some(th))
            };
            let t_new = t + s_end * h;
            while next < self.opts.outputs.len() && self.opts.outputs[next] <= t_new && !stopped {
                let s = ((self.opts.outputs[next] - t) / h).clamp(0.0, 1.0);
                st.interpolate(s, &mut buf);
                st.interpolate_derivative(s, &mut dbuf);
                let loss = self.sys.loss_at(&buf)?;
                let rec = self.record(next, self.opts.outputs[next], loss, norm(&dbuf));
                stopped |= self.observe_uncontrolled(&mut observe, &rec, &buf);
                next += 1;
            }
            match event {
                None => {
                    theta.copy_from_slice(&st.y_new);
                    f.copy_from_slice(&st.f_new);
                    self.sys.project_onto_knots(theta);
                    t = t_new;
                    h = dopri::next_step_size(h, st.error);
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
                }
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
            counts: self.sys.counts,
            gradient_equivalents: self.sys.counts.gradient_equivalents(self.sys_n()),
            initial_loss,
            final_loss,
            events: self.events,
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
            crossings: c,
            slides: s,
            releases: r,
            gradient_evaluations: self.sys.counts.gradients,
        }
    }
}
