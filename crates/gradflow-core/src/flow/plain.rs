//! The classic solve, for comparison: the adaptive Dormand–Prince pair given the true,
//! discontinuous field −∇L with no kink handling — what a generic ODE solver does, and why it
//! grinds on a piecewise-linear network (docs/theory.md, 'Sliding').

use super::dopri::{self, Field, Tolerances};
use super::solve::{
    check_step, norm, too_many, EventSummary, FlowOptions, FlowOutcome, FlowRecord,
};
use super::system::Counts;
use crate::data::Dataset;
use crate::error::Result;
use crate::loss::LossKind;
use crate::model::Model;
use crate::train::Control;

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

/// The classic solve: adaptive steps on the true field, no events.
pub(super) fn plain_flow(
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
            sliding: Vec::new(),
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
            if stopped {
                theta.copy_from_slice(&buf);
                t = opts.outputs[next];
            }
            next += 1;
        }
        if stopped {
            break;
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
        steps_low_order: 0,
        step_evaluations: 6 * (acc + rej),
        counts,
        gradient_equivalents: field.evaluations as f64,
        initial_loss,
        final_loss: model.loss(theta, &data.x, &data.y, opts.loss),
        events: EventSummary::default(),
        paused: None,
    })
}
