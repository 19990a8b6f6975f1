//! [`SharedPair`]: a Siamese pair, one tower with shared weights applied to both halves of the
//! input, combined by |f(a) − f(b)| or [f(a); f(b)]; the tower's θ̄ accumulates both halves.
//!
//! The |·| of AbsDiff is an [`ActivationLayer`] (σ = |t|, piecewise linear, knot 0, slopes
//! −1/+1), listed among the pair's children, so the kink-aware flow solver controls it like any
//! other activation: frozen pieces, pinned entries on the kink f(a)_j = f(b)_j, seeded rows. In
//! ordinary use (no control installed) the pair computes |d| and sign(d) itself, with
//! `torch.abs`'s sign(0) = 0, exactly as before the layer existed; under control the layer's
//! pieces decide.

use super::{cat_cols, cat_rows, join, prefixed, split_cols};
use crate::activation::{Activation, PiecewisePolynomial};
use crate::layers::{
    no_tape, tape_ref, ActivationLayer, Batch, Layer, ParamSpec, PreActivation, Tape,
};

/// How [`SharedPair`] combines the tower's outputs f(a), f(b).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairCombine {
    /// |f(a) − f(b)| element-wise: piecewise linear, with a kink where f(a)_j = f(b)_j (derivative
    /// sign(0) = 0 there, as `torch.abs`). The difference is reported to kink diagnostics.
    AbsDiff,
    /// [f(a); f(b)].
    Concat,
}

/// A Siamese pair: x = [a; b], y = combine(f(a), f(b)) with one tower f whose weights are shared.
#[derive(Debug)]
pub struct SharedPair {
    pub tower: Box<dyn Layer>,
    pub combine: PairCombine,
    /// |t| as a piecewise-polynomial activation layer on the tower's outputs, so the AbsDiff
    /// kink is visible to kink diagnostics and controllable by the flow solver.
    abs: ActivationLayer,
}

/// How the tower was run: on both halves at once (2n columns [a_0 … a_{n−1}, b_0 … b_{n−1}]) when
/// it does not mix samples, else once per half (each half is a whole graph signal).
enum TowerRun {
    Joint {
        x2: Batch,
        tape: Tape,
    },
    Separate {
        xa: Batch,
        xb: Batch,
        ta: Tape,
        tb: Tape,
    },
}

struct PairTape {
    run: TowerRun,
    /// f(a) − f(b), for AbsDiff.
    diff: Option<Batch>,
}

fn sign(v: f64) -> f64 {
    if v > 0.0 {
        1.0
    } else if v < 0.0 {
        -1.0
    } else {
        0.0
    }
}

impl SharedPair {
    pub fn new(tower: Box<dyn Layer>, combine: PairCombine) -> Self {
        let abs = PiecewisePolynomial::new(vec![0.0], vec![vec![0.0, -1.0], vec![0.0, 1.0]])
            .expect("|t| is continuous");
        let e = tower.out_dim();
        Self {
            tower,
            combine,
            abs: ActivationLayer::new(Activation::Piecewise(abs), e),
        }
    }

    /// True while the flow solver controls the |·| layer (its pieces decide, not sign(d)).
    fn abs_controlled(&self) -> bool {
        self.abs.control.lock().is_some()
    }

    fn d(&self) -> usize {
        self.tower.in_dim()
    }
    fn e(&self) -> usize {
        self.tower.out_dim()
    }

    /// The halves a, b of x.
    fn halves(&self, x: &Batch) -> (Batch, Batch) {
        (x.rows(0, self.d()), x.rows(self.d(), self.d()))
    }

    /// Combines per-half tangents ha, hb into ẏ, given f(a) − f(b).
    fn combine_halves(&self, ha: &Batch, hb: &Batch, diff: Option<&Batch>) -> Batch {
        match self.combine {
            PairCombine::AbsDiff if self.abs_controlled() => {
                let diff = diff.expect("AbsDiff keeps f(a) − f(b)");
                let mut d_dot = ha.clone();
                for (v, b) in d_dot.as_mut_slice().iter_mut().zip(hb.as_slice()) {
                    *v -= b;
                }
                self.abs.jvp(&[], diff, &no_tape(), &d_dot, &[])
            }
            PairCombine::AbsDiff => {
                let diff = diff.expect("AbsDiff keeps f(a) − f(b)");
                let mut y = ha.clone();
                for ((v, b), d) in y
                    .as_mut_slice()
                    .iter_mut()
                    .zip(hb.as_slice())
                    .zip(diff.as_slice())
                {
                    *v = sign(*d) * (*v - b);
                }
                y
            }
            PairCombine::Concat => cat_rows(&[ha.clone(), hb.clone()]),
        }
    }

    /// The tower-output cotangents (ā, b̄) of y-cotangents ȳ whose column c belongs to sample
    /// c / reps.
    fn half_cotangents(&self, t: &PairTape, y_bar: &Batch, reps: usize) -> (Batch, Batch) {
        match self.combine {
            PairCombine::AbsDiff => {
                let diff = t.diff.as_ref().expect("AbsDiff keeps f(a) − f(b)");
                let a = if !self.abs_controlled() {
                    let mut a = y_bar.clone();
                    for c in 0..a.n() {
                        for (g, d) in a.col_mut(c).iter_mut().zip(diff.col(c / reps)) {
                            *g *= sign(*d);
                        }
                    }
                    a
                } else if reps == 1 {
                    // The layer's own reverse pass also records and seeds for the flow solver.
                    self.abs.vjp(&[], diff, &no_tape(), y_bar, &mut [])
                } else {
                    let mut unused = faer::Mat::<f64>::zeros(0, 0);
                    self.abs
                        .vjp_gram(&[], diff, &no_tape(), y_bar, reps, &mut unused)
                };
                let mut b = a.clone();
                b.as_mut_slice().iter_mut().for_each(|v| *v = -*v);
                (a, b)
            }
            PairCombine::Concat => (y_bar.rows(0, self.e()), y_bar.rows(self.e(), self.e())),
        }
    }
}

impl Layer for SharedPair {
    fn describe(&self) -> String {
        let how = match self.combine {
            PairCombine::AbsDiff => "|f(a) − f(b)|",
            PairCombine::Concat => "[f(a); f(b)]",
        };
        format!(
            "shared-weight pair {how}, tower {} → {}",
            self.d(),
            self.e()
        )
    }
    fn in_dim(&self) -> usize {
        2 * self.d()
    }
    fn out_dim(&self) -> usize {
        match self.combine {
            PairCombine::AbsDiff => self.e(),
            PairCombine::Concat => 2 * self.e(),
        }
    }
    fn param_specs(&self) -> Vec<ParamSpec> {
        prefixed(self.tower.as_ref(), "tower")
    }
    fn num_params(&self) -> usize {
        self.tower.num_params()
    }

    fn forward(&self, theta: &[f64], x: &Batch) -> (Batch, Tape) {
        let (xa, xb) = self.halves(x);
        let (fa, fb, run) = if self.tower.mixes_samples() {
            let (fa, ta) = self.tower.forward(theta, &xa);
            let (fb, tb) = self.tower.forward(theta, &xb);
            (fa, fb, TowerRun::Separate { xa, xb, ta, tb })
        } else {
            let x2 = cat_cols(&xa, &xb);
            let (y2, tape) = self.tower.forward(theta, &x2);
            let (fa, fb) = split_cols(&y2, x.n());
            (fa, fb, TowerRun::Joint { x2, tape })
        };
        let (y, diff) = match self.combine {
            PairCombine::AbsDiff => {
                let mut diff = fa;
                for (v, b) in diff.as_mut_slice().iter_mut().zip(fb.as_slice()) {
                    *v -= b;
                }
                let y = if self.abs_controlled() {
                    self.abs.forward(&[], &diff).0
                } else {
                    let mut y = diff.clone();
                    y.as_mut_slice().iter_mut().for_each(|v| *v = v.abs());
                    y
                };
                (y, Some(diff))
            }
            PairCombine::Concat => (cat_rows(&[fa, fb]), None),
        };
        (y, Box::new(PairTape { run, diff }))
    }

    fn vjp(
        &self,
        theta: &[f64],
        x: &Batch,
        tape: &Tape,
        y_bar: &Batch,
        theta_bar: &mut [f64],
    ) -> Batch {
        let t: &PairTape = tape_ref(tape);
        let (ab, bb) = self.half_cotangents(t, y_bar, 1);
        let (xa_bar, xb_bar) = match &t.run {
            TowerRun::Joint { x2, tape } => {
                let yb2 = cat_cols(&ab, &bb);
                let x2_bar = self.tower.vjp(theta, x2, tape, &yb2, theta_bar);
                split_cols(&x2_bar, x.n())
            }
            TowerRun::Separate { xa, xb, ta, tb } => (
                self.tower.vjp(theta, xa, ta, &ab, theta_bar),
                self.tower.vjp(theta, xb, tb, &bb, theta_bar),
            ),
        };
        cat_rows(&[xa_bar, xb_bar])
    }

    /// Exact shared-weight NTK term. Per column c the tower's θ̄_c is the SUM ā-part + b̄-part,
    /// so ⟨θ̄_c, θ̄_c'⟩ has cross terms between halves. The tower's own pass runs on the doubled
    /// batch (2n samples, 2N columns: column c for half a, N + c for half b) into a 2N × 2N Gram
    /// G₂, folded as G[c, c'] = G₂[c, c'] + G₂[N+c, c'] + G₂[N+c', c] + G₂[N+c, N+c'] (all
    /// read from G₂'s lower triangle, c ≥ c'). Extra memory: 4·N² numbers while the tower runs.
    fn vjp_gram(
        &self,
        theta: &[f64],
        _x: &Batch,
        tape: &Tape,
        y_bar: &Batch,
        reps: usize,
        gram: &mut faer::Mat<f64>,
    ) -> Batch {
        let t: &PairTape = tape_ref(tape);
        let TowerRun::Joint { x2, tape } = &t.run else {
            panic!(
                "`{}`: vjp_gram is only for networks that do not mix samples",
                self.describe()
            );
        };
        let big_n = y_bar.n();
        let (ab, bb) = self.half_cotangents(t, y_bar, reps);
        let yb2 = cat_cols(&ab, &bb);
        let x2_bar = if self.tower.num_params() == 0 {
            let mut unused = faer::Mat::<f64>::zeros(0, 0);
            self.tower
                .vjp_gram(theta, x2, tape, &yb2, reps, &mut unused)
        } else {
            let mut g2 = faer::Mat::<f64>::zeros(2 * big_n, 2 * big_n);
            let x2_bar = self.tower.vjp_gram(theta, x2, tape, &yb2, reps, &mut g2);
            for cp in 0..big_n {
                for c in cp..big_n {
                    gram[(c, cp)] += g2[(c, cp)]
                        + g2[(big_n + c, cp)]
                        + g2[(big_n + cp, c)]
                        + g2[(big_n + c, big_n + cp)];
                }
            }
            x2_bar
        };
        let (xa_bar, xb_bar) = split_cols(&x2_bar, big_n);
        cat_rows(&[xa_bar, xb_bar])
    }

    fn jvp(
        &self,
        theta: &[f64],
        x: &Batch,
        tape: &Tape,
        x_dot: &Batch,
        theta_dot: &[f64],
    ) -> Batch {
        let t: &PairTape = tape_ref(tape);
        let (xa_dot, xb_dot) = self.halves(x_dot);
        let (fa_dot, fb_dot) = match &t.run {
            TowerRun::Joint { x2, tape } => {
                let x2_dot = cat_cols(&xa_dot, &xb_dot);
                let y2_dot = self.tower.jvp(theta, x2, tape, &x2_dot, theta_dot);
                split_cols(&y2_dot, x.n())
            }
            TowerRun::Separate { xa, xb, ta, tb } => (
                self.tower.jvp(theta, xa, ta, &xa_dot, theta_dot),
                self.tower.jvp(theta, xb, tb, &xb_dot, theta_dot),
            ),
        };
        self.combine_halves(&fa_dot, &fb_dot, t.diff.as_ref())
    }

    fn visit_pre_activations(
        &self,
        _x: &Batch,
        tape: &Tape,
        visit: &mut dyn FnMut(PreActivation<'_>),
    ) {
        let t: &PairTape = tape_ref(tape);
        match &t.run {
            TowerRun::Joint { x2, tape } => self.tower.visit_pre_activations(x2, tape, visit),
            TowerRun::Separate { xa, xb, ta, tb } => {
                self.tower.visit_pre_activations(xa, ta, visit);
                self.tower.visit_pre_activations(xb, tb, visit);
            }
        }
        if let Some(diff) = &t.diff {
            visit(PreActivation {
                z: diff,
                activation: &self.abs.activation,
            });
        }
    }

    fn locate_non_finite(&self, theta: &[f64], x: &Batch, path: &str) -> Option<String> {
        let (xa, xb) = self.halves(x);
        let sub = join(path, "tower");
        self.tower
            .locate_non_finite(theta, &xa, &sub)
            .or_else(|| self.tower.locate_non_finite(theta, &xb, &sub))
            .or_else(|| {
                let (y, _) = self.forward(theta, x);
                (!y.all_finite()).then(|| format!("layer `{path}` (the pair combination)"))
            })
    }

    /// The tower, then (AbsDiff) the |·| layer.
    fn children(&self) -> Vec<&dyn Layer> {
        match self.combine {
            PairCombine::AbsDiff => vec![self.tower.as_ref(), &self.abs],
            PairCombine::Concat => vec![self.tower.as_ref()],
        }
    }

    fn mixes_samples(&self) -> bool {
        self.tower.mixes_samples()
    }
}
