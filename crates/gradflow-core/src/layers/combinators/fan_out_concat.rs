//! [`FanOutConcat`]: every branch sees the same input, outputs concatenated along features
//! (a U-Net's skip connection, `torch.cat(dim=1)` on channel-major images).

use super::{cat_rows, join, prefixed, running_sums};
use crate::layers::{tape_ref, Batch, Layer, ParamSpec, PreActivation, Tape};

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
