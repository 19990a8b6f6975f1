//! The Bogacki–Shampine 3(2) embedded Runge–Kutta pair (Bogacki & Shampine 1989, MATLAB's
//! `ode23`): third-order steps with a second-order embedded solution for the error estimate,
//! and the cubic Hermite interpolant of the step's two ends as its continuous extension (third
//! order, so an event located on it lies as close to the true one as the step's end does).
//!
//! FSAL like Dormand–Prince: the fourth stage is the field at the step's end, so a step costs
//! three new evaluations instead of six. It is the cheaper step while the next kink event, not
//! the accuracy, sets the step length (see `pairs.rs`); at a tolerance that lets both pairs
//! take long steps the fifth-order pair needs far fewer. It fills the same [`Step`] as
//! [`super::dopri`], so event location and output read either pair's steps alike.

use super::dopri::{Field, Step, Tolerances};
use crate::error::Result;

const A21: f64 = 1.0 / 2.0;
const A32: f64 = 3.0 / 4.0;
// Third-order weights (also the last row of the tableau: FSAL).
const B1: f64 = 2.0 / 9.0;
const B2: f64 = 1.0 / 3.0;
const B3: f64 = 4.0 / 9.0;
// Error weights: third-order weights minus the embedded second-order ones (7/24, 1/4, 1/3, 1/8).
const E1: f64 = 2.0 / 9.0 - 7.0 / 24.0;
const E2: f64 = 1.0 / 3.0 - 1.0 / 4.0;
const E3: f64 = 4.0 / 9.0 - 1.0 / 3.0;
const E4: f64 = -1.0 / 8.0;

/// The error estimate scales as h³ (the second-order solution's local error).
pub const ESTIMATE_ORDER: u32 = 3;

/// The stage vectors of a step, kept between steps.
#[derive(Default)]
pub struct Workspace {
    tmp: Vec<f64>,
    k2: Vec<f64>,
    k3: Vec<f64>,
}

/// Attempts one Bogacki–Shampine step from y with f(y) = `f0` into a kept `st` (three field
/// evaluations: two inner stages and the step's end).
pub fn step_into(
    field: &mut dyn Field,
    y: &[f64],
    f0: &[f64],
    h: f64,
    tol: Tolerances,
    work: &mut Workspace,
    st: &mut Step,
) -> Result<()> {
    let p = y.len();
    let Workspace { tmp, k2, k3 } = work;
    for v in [&mut *tmp, &mut *k2, &mut *k3] {
        v.resize(p, 0.0);
    }
    let k1 = f0;
    st.y_new.resize(p, 0.0);
    st.f_new.resize(p, 0.0);
    for j in 0..p {
        tmp[j] = y[j] + h * A21 * k1[j];
    }
    field.eval_stage(tmp, k2)?;
    for j in 0..p {
        tmp[j] = y[j] + h * A32 * k2[j];
    }
    field.eval_stage(tmp, k3)?;
    for j in 0..p {
        st.y_new[j] = y[j] + h * (B1 * k1[j] + B2 * k2[j] + B3 * k3[j]);
    }
    field.eval(&st.y_new, &mut st.f_new)?;
    let (y_new, k4) = (&st.y_new, &st.f_new);
    let mut sum = 0.0;
    for j in 0..p {
        let err = h * (E1 * k1[j] + E2 * k2[j] + E3 * k3[j] + E4 * k4[j]);
        let scale = tol.atol + tol.rtol * y[j].abs().max(y_new[j].abs());
        sum += (err / scale).powi(2);
    }
    st.error = (sum / p.max(1) as f64).sqrt();
    st.h = h;
    st.set_hermite(y, k1);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::dopri::tests::{exact, Spiral, LOOSE};
    use super::*;

    fn step(h: f64) -> Step {
        let y0 = [1.0, 0.0];
        let mut f0 = [0.0; 2];
        Spiral.eval(&y0, &mut f0).unwrap();
        let mut st = Step::empty();
        step_into(
            &mut Spiral,
            &y0,
            &f0,
            h,
            LOOSE,
            &mut Workspace::default(),
            &mut st,
        )
        .unwrap();
        st
    }

    fn distance(a: &[f64], b: &[f64]) -> f64 {
        ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt()
    }

    /// Local error O(h⁴): halving h divides it by ≈ 16 (a wrong coefficient breaks this).
    #[test]
    fn local_error_is_fourth_order() {
        let err = |h: f64| distance(&step(h).y_new, &exact(h));
        let order = (err(0.1) / err(0.05)).log2();
        assert!((order - 4.0).abs() < 0.2, "observed local order {order}");
    }

    /// The embedded estimate tracks the local error of the second-order solution: O(h³), and
    /// (with unit tolerances) its size, since the third-order error is an order smaller.
    #[test]
    fn error_estimate_is_third_order_and_sized() {
        let est = |h: f64| step(h).error;
        let order = (est(0.1) / est(0.05)).log2();
        assert!((order - 3.0).abs() < 0.2, "observed estimate order {order}");
        // The second-order solution y + h(7/24 k1 + 1/4 k2 + 1/3 k3 + 1/8 k4) against the
        // closed form, computed independently of the error weights.
        let h = 0.005;
        let st = step(h);
        let mut k = [[0.0; 2]; 4];
        let y0 = [1.0, 0.0];
        Spiral.eval(&y0, &mut k[0]).unwrap();
        let y2 = [y0[0] + h * 0.5 * k[0][0], y0[1] + h * 0.5 * k[0][1]];
        Spiral.eval(&y2, &mut k[1]).unwrap();
        let y3 = [y0[0] + h * 0.75 * k[1][0], y0[1] + h * 0.75 * k[1][1]];
        Spiral.eval(&y3, &mut k[2]).unwrap();
        Spiral.eval(&st.y_new, &mut k[3]).unwrap();
        let w = [7.0 / 24.0, 0.25, 1.0 / 3.0, 0.125];
        let low: Vec<f64> = (0..2)
            .map(|j| y0[j] + h * (0..4).map(|i| w[i] * k[i][j]).sum::<f64>())
            .collect();
        // The true error of the second-order solution in the estimate's norm: per component
        // scale 1 + max(|y0|, |y1|) (unit tolerances), RMS over the two components.
        let ex = exact(h);
        let scaled: f64 = (0..2)
            .map(|j| {
                let scale = 1.0 + y0[j].abs().max(st.y_new[j].abs());
                ((low[j] - ex[j]) / scale).powi(2)
            })
            .sum();
        let true_low = (scaled / 2.0).sqrt();
        // The estimate differs from it by the third-order solution's error, smaller by O(h).
        let ratio = st.error / true_low;
        assert!(
            (ratio - 1.0).abs() < 0.03,
            "estimate {} vs the second-order solution's error {true_low}",
            st.error
        );
    }

    /// The cubic Hermite extension is exact at both ends, third order inside (error O(h⁴)),
    /// and its derivative is the field at both ends.
    #[test]
    fn dense_output_is_third_order() {
        let err = |h: f64| {
            let st = step(h);
            let mut out = [0.0; 2];
            st.interpolate(1.0, &mut out);
            assert_eq!(out, [st.y_new[0], st.y_new[1]]);
            st.interpolate(0.0, &mut out);
            assert_eq!(out, [1.0, 0.0]);
            let (mut d, mut f) = ([0.0; 2], [0.0; 2]);
            st.interpolate_derivative(1.0, &mut d);
            assert!(distance(&d, &st.f_new) < 1e-12);
            st.interpolate_derivative(0.0, &mut d);
            Spiral.eval(&[1.0, 0.0], &mut f).unwrap();
            assert!(distance(&d, &f) < 1e-12);
            st.interpolate(0.37, &mut out);
            distance(&out, &exact(0.37 * h))
        };
        let order = (err(0.2) / err(0.1)).log2();
        assert!(order > 3.7, "observed dense-output local order {order}");
    }

    /// An adaptive solve with the pair's own controller exponent (1/3) meets a tight tolerance
    /// against the closed form.
    #[test]
    fn adaptive_solve_meets_tolerance() {
        let tol = Tolerances {
            rtol: 1e-9,
            atol: 1e-11,
        };
        let (mut y, mut f) = (vec![1.0, 0.0], vec![0.0; 2]);
        Spiral.eval(&y, &mut f).unwrap();
        let (mut st, mut work) = (Step::empty(), Workspace::default());
        let (mut t, mut h) = (0.0, 1e-3);
        while t < 5.0 {
            h = f64::min(h, 5.0 - t);
            step_into(&mut Spiral, &y, &f, h, tol, &mut work, &mut st).unwrap();
            if st.error <= 1.0 {
                t += h;
                y.copy_from_slice(&st.y_new);
                f.copy_from_slice(&st.f_new);
            }
            h = super::super::dopri::next_step_size_of_order(h, st.error, ESTIMATE_ORDER);
        }
        let ex = exact(5.0);
        assert!(distance(&y, &ex) < 1e-8, "error {}", distance(&y, &ex));
    }
}
