//! Branching combinators (as in JAX's `stax`: `FanOut` + `FanInConcat`, `parallel`) for U-Nets and
//! Siamese networks — the "sums, concatenation, shared weights" of the paper's applicability list:
//!
//! - [`FanOutConcat`]: every branch sees the same input; outputs are concatenated along features.
//!   With channel-major (c, h, w) image features this is exactly `torch.cat(dim=1)` of a U-Net's
//!   skip connection. Tensors `branches.{i}.<name>`.
//! - [`Parallel`]: the input features are split into consecutive slices, part i maps its slice,
//!   outputs are concatenated. Tensors `parts.{i}.<name>`.
//! - [`SharedPair`]: input [a; b] (2·d features), one tower f with shared weights applied to both
//!   halves, combined as |f(a) − f(b)| (element-wise) or [f(a); f(b)]. The tower's tensors appear
//!   once, as `tower.<name>`; its θ̄ accumulates both halves (the reason `vjp` adds).
//!
//! Each overrides `vjp_gram` to recurse (children own disjoint θ blocks, so their Grams add —
//! except in `SharedPair`, where both halves share θ and the cross terms are kept exactly),
//! and forwards `visit_pre_activations`, `locate_non_finite`, `children` and `mixes_samples`.

use super::{tape_ref, Batch, Layer, ParamSpec, PreActivation, Tape};
use crate::activation::{Activation, PiecewisePolynomial};

/// `path.sub`, or `sub` at the root (tensor-name convention of `locate_non_finite`).
fn join(path: &str, sub: &str) -> String {
    if path.is_empty() {
        sub.to_string()
    } else {
        format!("{path}.{sub}")
    }
}

/// Prefix every tensor name of `layer` with `prefix.`.
fn prefixed(layer: &dyn Layer, prefix: &str) -> Vec<ParamSpec> {
    layer
        .param_specs()
        .into_iter()
        .map(|mut s| {
            s.name = format!("{prefix}.{}", s.name);
            s
        })
        .collect()
}

/// Running sums 0, l_0, l_0 + l_1, … of `lens`.
fn running_sums(lens: impl Iterator<Item = usize>) -> Vec<usize> {
    let mut o = vec![0];
    for l in lens {
        o.push(o.last().unwrap() + l);
    }
    o
}

/// Concatenation along features: column i is [a_i; b_i; …].
fn cat_rows(parts: &[Batch]) -> Batch {
    let n = parts.first().map_or(0, Batch::n);
    let f: usize = parts.iter().map(Batch::features).sum();
    let mut y = Batch::zeros(f, n);
    for i in 0..n {
        let col = y.col_mut(i);
        let mut at = 0;
        for p in parts {
            col[at..at + p.features()].copy_from_slice(p.col(i));
            at += p.features();
        }
    }
    y
}

/// Concatenation along samples: columns of a, then columns of b.
fn cat_cols(a: &Batch, b: &Batch) -> Batch {
    assert_eq!(a.features(), b.features());
    let mut data = Vec::with_capacity(a.as_slice().len() + b.as_slice().len());
    data.extend_from_slice(a.as_slice());
    data.extend_from_slice(b.as_slice());
    Batch::from_vec(a.features(), a.n() + b.n(), data)
}

/// The first `n` columns and the rest.
fn split_cols(y: &Batch, n: usize) -> (Batch, Batch) {
    let f = y.features();
    let (a, b) = y.as_slice().split_at(f * n);
    (
        Batch::from_vec(f, n, a.to_vec()),
        Batch::from_vec(f, y.n() - n, b.to_vec()),
    )
}

// ------------------------------------------------------------------------------------------------

/// y = [g_0(x); g_1(x); …]: every branch sees the same input.
#[derive(Debug)]
pub struct FanOutConcat {
    pub branches: Vec<Box<dyn Layer>>,
    /// θ offsets of the branches (len + 1).
    offsets: Vec<usize>,
    /// Feature offsets of the branches' outputs (len + 1).
    out_offsets: Vec<usize>,
}

impl FanOutConcat {
    /// Panics without branches or if their input widths differ (a model-builder error).
    pub fn new(branches: Vec<Box<dyn Layer>>) -> Self {
        assert!(
            !branches.is_empty(),
            "FanOutConcat needs at least one branch"
        );
        let d = branches[0].in_dim();
        for b in &branches {
            assert_eq!(
                b.in_dim(),
                d,
                "FanOutConcat: `{}` must take {d} input features",
                b.describe()
            );
        }
        let offsets = running_sums(branches.iter().map(|b| b.num_params()));
        let out_offsets = running_sums(branches.iter().map(|b| b.out_dim()));
        Self {
            branches,
            offsets,
            out_offsets,
        }
    }
    fn slice<'a>(&self, theta: &'a [f64], k: usize) -> &'a [f64] {
        &theta[self.offsets[k]..self.offsets[k + 1]]
    }
    fn out_rows(&self, y: &Batch, k: usize) -> Batch {
        y.rows(
            self.out_offsets[k],
            self.out_offsets[k + 1] - self.out_offsets[k],
        )
    }
}

impl Layer for FanOutConcat {
    fn describe(&self) -> String {
        format!(
            "fan-out of {} branches, concatenated ({} → {})",
            self.branches.len(),
            self.in_dim(),
            self.out_dim()
        )
    }
    fn in_dim(&self) -> usize {
        self.branches[0].in_dim()
    }
    fn out_dim(&self) -> usize {
        *self.out_offsets.last().unwrap()
    }
    fn param_specs(&self) -> Vec<ParamSpec> {
        let mut specs = Vec::new();
        for (k, b) in self.branches.iter().enumerate() {
            specs.extend(prefixed(b.as_ref(), &format!("branches.{k}")));
        }
        specs
    }
    fn num_params(&self) -> usize {
        *self.offsets.last().unwrap()
    }

    fn forward(&self, theta: &[f64], x: &Batch) -> (Batch, Tape) {
        let (ys, tapes): (Vec<Batch>, Vec<Tape>) = self
            .branches
            .iter()
            .enumerate()
            .map(|(k, b)| b.forward(self.slice(theta, k), x))
            .unzip();
        (cat_rows(&ys), Box::new(tapes))
    }

    fn vjp(
        &self,
        theta: &[f64],
        x: &Batch,
        tape: &Tape,
        y_bar: &Batch,
        theta_bar: &mut [f64],
    ) -> Batch {
        let tapes: &Vec<Tape> = tape_ref(tape);
        let mut x_bar = Batch::zeros(self.in_dim(), x.n());
        for (k, b) in self.branches.iter().enumerate() {
            let gb = &mut theta_bar[self.offsets[k]..self.offsets[k + 1]];
            let yb = self.out_rows(y_bar, k);
            x_bar.add_assign(&b.vjp(self.slice(theta, k), x, &tapes[k], &yb, gb));
        }
        x_bar
    }

    /// The branches own disjoint θ blocks, so ⟨θ̄_c, θ̄_c'⟩ is the sum of the branches' terms.
    fn vjp_gram(
        &self,
        theta: &[f64],
        x: &Batch,
        tape: &Tape,
        y_bar: &Batch,
        reps: usize,
        gram: &mut faer::Mat<f64>,
    ) -> Batch {
        let tapes: &Vec<Tape> = tape_ref(tape);
        let mut x_bar = Batch::zeros(self.in_dim(), y_bar.n());
        for (k, b) in self.branches.iter().enumerate() {
            let yb = self.out_rows(y_bar, k);
            x_bar.add_assign(&b.vjp_gram(self.slice(theta, k), x, &tapes[k], &yb, reps, gram));
        }
        x_bar
    }

    fn jvp(
        &self,
        theta: &[f64],
        x: &Batch,
        tape: &Tape,
        x_dot: &Batch,
        theta_dot: &[f64],
    ) -> Batch {
        let tapes: &Vec<Tape> = tape_ref(tape);
        let ys: Vec<Batch> = self
            .branches
            .iter()
            .enumerate()
            .map(|(k, b)| {
                b.jvp(
                    self.slice(theta, k),
                    x,
                    &tapes[k],
                    x_dot,
                    self.slice(theta_dot, k),
                )
            })
            .collect();
        cat_rows(&ys)
    }

    fn visit_pre_activations(
        &self,
        x: &Batch,
        tape: &Tape,
        visit: &mut dyn FnMut(PreActivation<'_>),
    ) {
        let tapes: &Vec<Tape> = tape_ref(tape);
        for (b, t) in self.branches.iter().zip(tapes) {
            b.visit_pre_activations(x, t, visit);
        }
    }

    fn locate_non_finite(&self, theta: &[f64], x: &Batch, path: &str) -> Option<String> {
        self.branches.iter().enumerate().find_map(|(k, b)| {
            b.locate_non_finite(
                self.slice(theta, k),
                x,
                &join(path, &format!("branches.{k}")),
            )
        })
    }

    fn children(&self) -> Vec<&dyn Layer> {
        self.branches.iter().map(|b| b.as_ref()).collect()
    }

    fn mixes_samples(&self) -> bool {
        self.branches.iter().any(|b| b.mixes_samples())
    }
}

// ------------------------------------------------------------------------------------------------

/// y = [g_0(x_0); g_1(x_1); …] where x = [x_0; x_1; …] is split into consecutive feature slices.
#[derive(Debug)]
pub struct Parallel {
    /// (input feature count of the part, the part); the count must equal the part's `in_dim`.
    pub parts: Vec<(usize, Box<dyn Layer>)>,
    offsets: Vec<usize>,
    in_offsets: Vec<usize>,
    out_offsets: Vec<usize>,
}

impl Parallel {
    /// Panics without parts or if a count disagrees with its part's input width.
    pub fn new(parts: Vec<(usize, Box<dyn Layer>)>) -> Self {
        assert!(!parts.is_empty(), "Parallel needs at least one part");
        for (d, l) in &parts {
            assert_eq!(
                *d,
                l.in_dim(),
                "Parallel: `{}` takes {} features, not {d}",
                l.describe(),
                l.in_dim()
            );
        }
        let offsets = running_sums(parts.iter().map(|(_, l)| l.num_params()));
        let in_offsets = running_sums(parts.iter().map(|(d, _)| *d));
        let out_offsets = running_sums(parts.iter().map(|(_, l)| l.out_dim()));
        Self {
            parts,
            offsets,
            in_offsets,
            out_offsets,
        }
    }
    /// From layers alone: each takes as many features as its `in_dim`.
    pub fn of(layers: Vec<Box<dyn Layer>>) -> Self {
        Self::new(layers.into_iter().map(|l| (l.in_dim(), l)).collect())
    }
    fn slice<'a>(&self, theta: &'a [f64], k: usize) -> &'a [f64] {
        &theta[self.offsets[k]..self.offsets[k + 1]]
    }
    fn in_rows(&self, x: &Batch, k: usize) -> Batch {
        x.rows(self.in_offsets[k], self.parts[k].0)
    }
    fn out_rows(&self, y: &Batch, k: usize) -> Batch {
        y.rows(self.out_offsets[k], self.parts[k].1.out_dim())
    }
}

impl Layer for Parallel {
    fn describe(&self) -> String {
        format!(
            "parallel of {} parts on feature slices ({} → {})",
            self.parts.len(),
            self.in_dim(),
            self.out_dim()
        )
    }
    fn in_dim(&self) -> usize {
        *self.in_offsets.last().unwrap()
    }
    fn out_dim(&self) -> usize {
        *self.out_offsets.last().unwrap()
    }
    fn param_specs(&self) -> Vec<ParamSpec> {
        let mut specs = Vec::new();
        for (k, (_, l)) in self.parts.iter().enumerate() {
            specs.extend(prefixed(l.as_ref(), &format!("parts.{k}")));
        }
        specs
    }
    fn num_params(&self) -> usize {
        *self.offsets.last().unwrap()
    }

    fn forward(&self, theta: &[f64], x: &Batch) -> (Batch, Tape) {
        let (ys, tapes): (Vec<Batch>, Vec<Tape>) = self
            .parts
            .iter()
            .enumerate()
            .map(|(k, (_, l))| l.forward(self.slice(theta, k), &self.in_rows(x, k)))
            .unzip();
        (cat_rows(&ys), Box::new(tapes))
    }

    fn vjp(
        &self,
        theta: &[f64],
        x: &Batch,
        tape: &Tape,
        y_bar: &Batch,
        theta_bar: &mut [f64],
    ) -> Batch {
        let tapes: &Vec<Tape> = tape_ref(tape);
        let xs: Vec<Batch> = self
            .parts
            .iter()
            .enumerate()
            .map(|(k, (_, l))| {
                let gb = &mut theta_bar[self.offsets[k]..self.offsets[k + 1]];
                let xk = self.in_rows(x, k);
                l.vjp(
                    self.slice(theta, k),
                    &xk,
                    &tapes[k],
                    &self.out_rows(y_bar, k),
                    gb,
                )
            })
            .collect();
        cat_rows(&xs)
    }

    /// Disjoint θ blocks: the parts' Gram terms add.
    fn vjp_gram(
        &self,
        theta: &[f64],
        x: &Batch,
        tape: &Tape,
        y_bar: &Batch,
        reps: usize,
        gram: &mut faer::Mat<f64>,
    ) -> Batch {
        let tapes: &Vec<Tape> = tape_ref(tape);
        let xs: Vec<Batch> = self
            .parts
            .iter()
            .enumerate()
            .map(|(k, (_, l))| {
                l.vjp_gram(
                    self.slice(theta, k),
                    &self.in_rows(x, k),
                    &tapes[k],
                    &self.out_rows(y_bar, k),
                    reps,
                    gram,
                )
            })
            .collect();
        cat_rows(&xs)
    }

    fn jvp(
        &self,
        theta: &[f64],
        x: &Batch,
        tape: &Tape,
        x_dot: &Batch,
        theta_dot: &[f64],
    ) -> Batch {
        let tapes: &Vec<Tape> = tape_ref(tape);
        let ys: Vec<Batch> = self
            .parts
            .iter()
            .enumerate()
            .map(|(k, (_, l))| {
                l.jvp(
                    self.slice(theta, k),
                    &self.in_rows(x, k),
                    &tapes[k],
                    &self.in_rows(x_dot, k),
                    self.slice(theta_dot, k),
                )
            })
            .collect();
        cat_rows(&ys)
    }

    fn visit_pre_activations(
        &self,
        x: &Batch,
        tape: &Tape,
        visit: &mut dyn FnMut(PreActivation<'_>),
    ) {
        let tapes: &Vec<Tape> = tape_ref(tape);
        for (k, (_, l)) in self.parts.iter().enumerate() {
            l.visit_pre_activations(&self.in_rows(x, k), &tapes[k], visit);
        }
    }

    fn locate_non_finite(&self, theta: &[f64], x: &Batch, path: &str) -> Option<String> {
        self.parts.iter().enumerate().find_map(|(k, (_, l))| {
            l.locate_non_finite(
                self.slice(theta, k),
                &self.in_rows(x, k),
                &join(path, &format!("parts.{k}")),
            )
        })
    }

    fn children(&self) -> Vec<&dyn Layer> {
        self.parts.iter().map(|(_, l)| l.as_ref()).collect()
    }

    fn mixes_samples(&self) -> bool {
        self.parts.iter().any(|(_, l)| l.mixes_samples())
    }
}

// ------------------------------------------------------------------------------------------------

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
    /// |t| as a piecewise polynomial, so the AbsDiff kink is visible to kink diagnostics.
    abs: Activation,
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
        Self {
            tower,
            combine,
            abs: Activation::Piecewise(abs),
        }
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

    /// Combines per-half batches (outputs or tangents) ha, hb into y, given f(a) − f(b).
    fn combine_halves(&self, ha: &Batch, hb: &Batch, diff: Option<&Batch>) -> Batch {
        match self.combine {
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
                let mut a = y_bar.clone();
                for c in 0..a.n() {
                    for (g, d) in a.col_mut(c).iter_mut().zip(diff.col(c / reps)) {
                        *g *= sign(*d);
                    }
                }
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
                let mut y = diff.clone();
                y.as_mut_slice().iter_mut().for_each(|v| *v = v.abs());
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
                activation: &self.abs,
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

    fn children(&self) -> Vec<&dyn Layer> {
        vec![self.tower.as_ref()]
    }

    fn mixes_samples(&self) -> bool {
        self.tower.mixes_samples()
    }
}
