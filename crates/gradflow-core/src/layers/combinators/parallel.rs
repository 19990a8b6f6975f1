//! [`Parallel`]: the input's features split into consecutive slices, one part per slice, outputs
//! concatenated.

use super::{cat_rows, join, prefixed, running_sums};
use crate::layers::{tape_ref, Batch, Layer, ParamSpec, PreActivation, Tape};

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
