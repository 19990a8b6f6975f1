//! The Dormand–Prince 5(4) embedded Runge–Kutta pair (Dormand & Prince 1980; the coefficients
//! of Hairer, Nørsett & Wanner, *Solving ODEs I*, §II.5), with its error estimate, the standard
//! step-size controller and the fourth-order continuous extension ("dense output") used for
//! output at requested times and for locating kink events inside a step.
//!
//! The stepper only sees a vector field through [`Field`]; everything about kinks, pinned
//! pre-activations and events lives in `system/` and `solve.rs`. FSAL: the last stage of an
//! accepted step is the field at the new point, so a step costs six new evaluations.
//!
//! [`Step`] (the step's end, its error estimate and continuous extension) is shared with the
//! cheaper Bogacki–Shampine 3(2) pair (`bs3.rs`): the first four coefficients of the extension
//! are the cubic Hermite interpolant of both ends, which that pair uses as it is.

use crate::error::Result;

/// A vector field y' = f(y) (autonomous: the gradient flow does not depend on t).
pub trait Field {
    /// Writes f(y) into `out`.
    fn eval(&mut self, y: &[f64], out: &mut [f64]) -> Result<()>;

    /// Writes f(y) into `out` at an intermediate stage of a step (stages 2–6: points nobody
    /// inspects afterwards, unlike the step's end), so a field may skip by-products there.
    fn eval_stage(&mut self, y: &[f64], out: &mut [f64]) -> Result<()> {
        self.eval(y, out)
    }
}

const A21: f64 = 1.0 / 5.0;
const A31: f64 = 3.0 / 40.0;
const A32: f64 = 9.0 / 40.0;
const A41: f64 = 44.0 / 45.0;
const A42: f64 = -56.0 / 15.0;
const A43: f64 = 32.0 / 9.0;
const A51: f64 = 19372.0 / 6561.0;
const A52: f64 = -25360.0 / 2187.0;
const A53: f64 = 64448.0 / 6561.0;
const A54: f64 = -212.0 / 729.0;
const A61: f64 = 9017.0 / 3168.0;
const A62: f64 = -355.0 / 33.0;
const A63: f64 = 46732.0 / 5247.0;
const A64: f64 = 49.0 / 176.0;
const A65: f64 = -5103.0 / 18656.0;
const A71: f64 = 35.0 / 384.0;
const A73: f64 = 500.0 / 1113.0;
const A74: f64 = 125.0 / 192.0;
const A75: f64 = -2187.0 / 6784.0;
const A76: f64 = 11.0 / 84.0;
// Error weights: fifth-order weights minus the embedded fourth-order ones.
const E1: f64 = 71.0 / 57600.0;
const E3: f64 = -71.0 / 16695.0;
const E4: f64 = 71.0 / 1920.0;
const E5: f64 = -17253.0 / 339200.0;
const E6: f64 = 22.0 / 525.0;
const E7: f64 = -1.0 / 40.0;
// Dense output (continuous extension of order 4).
const D1: f64 = -12715105075.0 / 11282082432.0;
const D3: f64 = 87487479700.0 / 32700410799.0;
const D4: f64 = -10690763975.0 / 1880347072.0;
const D5: f64 = 701980252875.0 / 199316789632.0;
const D6: f64 = -1453857185.0 / 822651844.0;
const D7: f64 = 69997945.0 / 29380423.0;

/// Error-control settings: a component is within tolerance when |err| ≤ atol + rtol·|y|.
#[derive(Clone, Copy, Debug)]
pub struct Tolerances {
    pub rtol: f64,
    pub atol: f64,
}

/// One attempted step from (t, y) with step h and f(y) = `f0`.
pub struct Step {
    pub h: f64,
    pub y_new: Vec<f64>,
    /// f(y_new) (the FSAL stage).
    pub f_new: Vec<f64>,
    /// The scaled RMS error estimate: the step is accepted when ≤ 1.
    pub error: f64,
    /// Coefficients of the continuous extension (5 vectors).
    dense: [Vec<f64>; 5],
}

fn axpy_into(out: &mut [f64], y: &[f64], h: f64, terms: &[(f64, &[f64])]) {
    for (j, o) in out.iter_mut().enumerate() {
        let mut acc = 0.0;
        for &(a, k) in terms {
            acc += a * k[j];
        }
        *o = y[j] + h * acc;
    }
}

/// The stage vectors of a step, kept between steps (a solve allocates them once).
#[derive(Default)]
pub struct Workspace {
    tmp: Vec<f64>,
    k: [Vec<f64>; 5],
}

/// Attempts one Dormand–Prince step (six field evaluations).
pub fn step(field: &mut dyn Field, y: &[f64], f0: &[f64], h: f64, tol: Tolerances) -> Result<Step> {
    let mut st = Step::empty();
    step_into(field, y, f0, h, tol, &mut Workspace::default(), &mut st)?;
    Ok(st)
}

/// [`step`] into a kept `Step` with kept stage vectors: no allocation once they have length p.
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
    let Workspace { tmp, k } = work;
    for v in std::iter::once(&mut *tmp).chain(k.iter_mut()) {
        v.resize(p, 0.0);
    }
    let [k2, k3, k4, k5, k6] = k;
    let k1 = f0;
    st.y_new.resize(p, 0.0);
    st.f_new.resize(p, 0.0);
    axpy_into(tmp, y, h, &[(A21, k1)]);
    field.eval_stage(tmp, k2)?;
    axpy_into(tmp, y, h, &[(A31, k1), (A32, k2)]);
    field.eval_stage(tmp, k3)?;
    axpy_into(tmp, y, h, &[(A41, k1), (A42, k2), (A43, k3)]);
    field.eval_stage(tmp, k4)?;
    axpy_into(tmp, y, h, &[(A51, k1), (A52, k2), (A53, k3), (A54, k4)]);
    field.eval_stage(tmp, k5)?;
    axpy_into(
        tmp,
        y,
        h,
        &[(A61, k1), (A62, k2), (A63, k3), (A64, k4), (A65, k5)],
    );
    field.eval_stage(tmp, k6)?;
    axpy_into(
        &mut st.y_new,
        y,
        h,
        &[(A71, k1), (A73, k3), (A74, k4), (A75, k5), (A76, k6)],
    );
    field.eval(&st.y_new, &mut st.f_new)?;
    let (y_new, k7) = (&st.y_new, &st.f_new);
    let mut sum = 0.0;
    for j in 0..p {
        let err = h * (E1 * k1[j] + E3 * k3[j] + E4 * k4[j] + E5 * k5[j] + E6 * k6[j] + E7 * k7[j]);
        let scale = tol.atol + tol.rtol * y[j].abs().max(y_new[j].abs());
        sum += (err / scale).powi(2);
    }
    st.error = (sum / p.max(1) as f64).sqrt();
    st.h = h;
    st.set_hermite(y, k1);
    let (r5, k7) = (&mut st.dense[4], &st.f_new);
    for j in 0..p {
        r5[j] = h * (D1 * k1[j] + D3 * k3[j] + D4 * k4[j] + D5 * k5[j] + D6 * k6[j] + D7 * k7[j]);
    }
    Ok(())
}

impl Step {
    /// Sets the continuous extension to the cubic Hermite interpolant of (y, f0) at the start
    /// and (`y_new`, `f_new`) at the end over `h` (the first four coefficients), with the
    /// quartic correction zero. Dormand–Prince adds that correction; a third-order pair uses
    /// the cubic as it is.
    pub(super) fn set_hermite(&mut self, y: &[f64], f0: &[f64]) {
        let (p, h) = (y.len(), self.h);
        for d in self.dense.iter_mut() {
            d.resize(p, 0.0);
        }
        let [r1, r2, r3, r4, r5] = &mut self.dense;
        for j in 0..p {
            let ydiff = self.y_new[j] - y[j];
            let bspl = h * f0[j] - ydiff;
            r1[j] = y[j];
            r2[j] = ydiff;
            r3[j] = bspl;
            r4[j] = ydiff - h * self.f_new[j] - bspl;
            r5[j] = 0.0;
        }
    }

    /// A step to be filled by [`step_into`].
    pub fn empty() -> Self {
        Self {
            h: 0.0,
            y_new: Vec::new(),
            f_new: Vec::new(),
            error: f64::NAN,
            dense: Default::default(),
        }
    }

    /// y(t + s·h) for s ∈ [0, 1] from the continuous extension (fourth order).
    pub fn interpolate(&self, s: f64, out: &mut [f64]) {
        let s1 = 1.0 - s;
        let [r1, r2, r3, r4, r5] = &self.dense;
        for (j, o) in out.iter_mut().enumerate() {
            *o = r1[j] + s * (r2[j] + s1 * (r3[j] + s * (r4[j] + s1 * r5[j])));
        }
    }
    /// d/dt of the continuous extension at t + s·h (≈ f(y(t + s·h))).
    pub fn interpolate_derivative(&self, s: f64, out: &mut [f64]) {
        let [_, r2, r3, r4, r5] = &self.dense;
        // y = r1 + s r2 + s(1−s) r3 + s²(1−s) r4 + s²(1−s)² r5, differentiated in s, over h.
        let (a3, a4, a5) = (
            1.0 - 2.0 * s,
            2.0 * s - 3.0 * s * s,
            2.0 * s * (1.0 - s) * (1.0 - 2.0 * s),
        );
        for (j, o) in out.iter_mut().enumerate() {
            *o = (r2[j] + a3 * r3[j] + a4 * r4[j] + a5 * r5[j]) / self.h;
        }
    }
}

/// The next step size from an error estimate of this pair (safety 0.9, growth between 0.2×
/// and 5×).
pub fn next_step_size(h: f64, error: f64) -> f64 {
    next_step_size_of_order(h, error, 5)
}

/// The next step size from an error estimate that scales as h^`estimate_order` (5 for a 5(4)
/// pair, 3 for a 3(2) pair): h · 0.9 · error^(−1/estimate_order), within 0.2× and 5×.
pub fn next_step_size_of_order(h: f64, error: f64, estimate_order: u32) -> f64 {
    let factor = if error == 0.0 {
        5.0
    } else {
        (0.9 * error.powf(-1.0 / estimate_order as f64)).clamp(0.2, 5.0)
    };
    h * factor
}

/// Hairer's starting step: h₀ from the sizes of y and f(y), then refined by one Euler probe
/// (one extra field evaluation).
pub fn initial_step(field: &mut dyn Field, y: &[f64], f0: &[f64], tol: Tolerances) -> Result<f64> {
    let p = y.len().max(1) as f64;
    let sc: Vec<f64> = y.iter().map(|v| tol.atol + tol.rtol * v.abs()).collect();
    let norm =
        |v: &[f64]| (v.iter().zip(&sc).map(|(a, s)| (a / s).powi(2)).sum::<f64>() / p).sqrt();
    let (d0, d1) = (norm(y), norm(f0));
    let h0 = if d0 < 1e-5 || d1 < 1e-5 {
        1e-6
    } else {
        0.01 * d0 / d1
    };
    let y1: Vec<f64> = y.iter().zip(f0).map(|(a, b)| a + h0 * b).collect();
    let mut f1 = vec![0.0; y.len()];
    field.eval(&y1, &mut f1)?;
    let diff: Vec<f64> = f1.iter().zip(f0).map(|(a, b)| a - b).collect();
    let d2 = norm(&diff) / h0;
    let h1 = if d1.max(d2) <= 1e-15 {
        (h0 * 1e-3).max(1e-6)
    } else {
        (0.01 / d1.max(d2)).powf(0.2)
    };
    Ok((100.0 * h0).min(h1))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// y' = A y with a rotation-plus-decay A: the exact solution is known in closed form (also
    /// the test problem of the other pairs).
    pub(in crate::flow) struct Spiral;
    impl Field for Spiral {
        fn eval(&mut self, y: &[f64], out: &mut [f64]) -> Result<()> {
            out[0] = -0.5 * y[0] - 2.0 * y[1];
            out[1] = 2.0 * y[0] - 0.5 * y[1];
            Ok(())
        }
    }
    pub(in crate::flow) fn exact(t: f64) -> [f64; 2] {
        let (c, s, e) = ((2.0 * t).cos(), (2.0 * t).sin(), (-0.5 * t).exp());
        [e * c, e * s]
    }
    pub(in crate::flow) const LOOSE: Tolerances = Tolerances {
        rtol: 1.0,
        atol: 1.0,
    };

    fn one_step_error(h: f64) -> f64 {
        let y0 = [1.0, 0.0];
        let mut f0 = [0.0; 2];
        Spiral.eval(&y0, &mut f0).unwrap();
        let st = step(&mut Spiral, &y0, &f0, h, LOOSE).unwrap();
        let ex = exact(h);
        ((st.y_new[0] - ex[0]).powi(2) + (st.y_new[1] - ex[1]).powi(2)).sqrt()
    }

    /// Local error O(h⁶): halving h divides it by ≈ 64 (a wrong coefficient breaks this).
    #[test]
    fn local_error_is_sixth_order() {
        let (e1, e2) = (one_step_error(0.1), one_step_error(0.05));
        let order = (e1 / e2).log2();
        assert!((order - 6.0).abs() < 0.3, "observed local order {order}");
    }

    /// The embedded estimate tracks the true local error of the 4th-order solution: O(h⁵).
    #[test]
    fn error_estimate_is_fifth_order() {
        let est = |h: f64| {
            let y0 = [1.0, 0.0];
            let mut f0 = [0.0; 2];
            Spiral.eval(&y0, &mut f0).unwrap();
            step(&mut Spiral, &y0, &f0, h, LOOSE).unwrap().error
        };
        let order = (est(0.1) / est(0.05)).log2();
        assert!((order - 5.0).abs() < 0.3, "observed estimate order {order}");
    }

    /// The continuous extension is exact at both ends and fourth order inside (error O(h⁵)).
    #[test]
    fn dense_output_is_fourth_order() {
        let err = |h: f64| {
            let y0 = [1.0, 0.0];
            let mut f0 = [0.0; 2];
            Spiral.eval(&y0, &mut f0).unwrap();
            let st = step(&mut Spiral, &y0, &f0, h, LOOSE).unwrap();
            let mut out = [0.0; 2];
            st.interpolate(1.0, &mut out);
            assert_eq!(out[0], st.y_new[0]);
            st.interpolate(0.0, &mut out);
            assert_eq!(out[0], 1.0);
            st.interpolate(0.37, &mut out);
            let ex = exact(0.37 * h);
            ((out[0] - ex[0]).powi(2) + (out[1] - ex[1]).powi(2)).sqrt()
        };
        let order = (err(0.2) / err(0.1)).log2();
        assert!(order > 4.6, "observed dense-output local order {order}");
    }

    /// The derivative of the continuous extension matches the field along the solution.
    #[test]
    fn dense_derivative_matches_field() {
        let y0 = [1.0, 0.0];
        let mut f0 = [0.0; 2];
        Spiral.eval(&y0, &mut f0).unwrap();
        let h = 0.05;
        let st = step(&mut Spiral, &y0, &f0, h, LOOSE).unwrap();
        let (mut y, mut d, mut f) = ([0.0; 2], [0.0; 2], [0.0; 2]);
        st.interpolate(0.6, &mut y);
        st.interpolate_derivative(0.6, &mut d);
        Spiral.eval(&y, &mut f).unwrap();
        assert!((d[0] - f[0]).abs() < 1e-5 && (d[1] - f[1]).abs() < 1e-5);
    }

    /// An adaptive solve to t = 5 meets a tight tolerance against the closed form.
    #[test]
    fn adaptive_solve_meets_tolerance() {
        let tol = Tolerances {
            rtol: 1e-10,
            atol: 1e-12,
        };
        let mut y = vec![1.0, 0.0];
        let mut f = vec![0.0; 2];
        Spiral.eval(&y, &mut f).unwrap();
        let mut h = initial_step(&mut Spiral, &y, &f, tol).unwrap();
        let mut t = 0.0;
        while t < 5.0 {
            h = h.min(5.0 - t);
            let st = step(&mut Spiral, &y, &f, h, tol).unwrap();
            if st.error <= 1.0 {
                t += h;
                y = st.y_new;
                f = st.f_new;
            }
            h = next_step_size(h, st.error);
        }
        let ex = exact(5.0);
        assert!((y[0] - ex[0]).abs() < 1e-8 && (y[1] - ex[1]).abs() < 1e-8);
    }
}
