//! The residual block y = x + g(x) (He et al.). g is any layer with equal input and output
//! widths; its tensors are named `fn.<name>`.

use super::{Batch, Layer, ParamSpec, PreActivation, Structure, Tape};

#[derive(Debug)]
pub struct Residual {
    pub inner: Box<dyn Layer>,
}

impl Residual {
    /// Panics if g changes the width (a programming error in a model builder).
    pub fn new(inner: Box<dyn Layer>) -> Self {
        assert_eq!(
            inner.in_dim(),
            inner.out_dim(),
            "Residual: the branch must keep the width"
        );
        Self { inner }
    }
}

impl Layer for Residual {
    fn describe(&self) -> String {
        format!("residual x + g(x), width {}", self.inner.in_dim())
    }
    fn in_dim(&self) -> usize {
        self.inner.in_dim()
    }
    fn out_dim(&self) -> usize {
        self.inner.out_dim()
    }
    fn param_specs(&self) -> Vec<ParamSpec> {
        self.inner
            .param_specs()
            .into_iter()
            .map(|mut s| {
                s.name = format!("fn.{}", s.name);
                s
            })
            .collect()
    }
    fn num_params(&self) -> usize {
        self.inner.num_params()
    }
    fn forward(&self, theta: &[f64], x: &Batch) -> (Batch, Tape) {
        let (mut y, t) = self.inner.forward(theta, x);
        y.add_assign(x);
        (y, t)
    }
    fn vjp(
        &self,
        theta: &[f64],
        x: &Batch,
        tape: &Tape,
        y_bar: &Batch,
        theta_bar: &mut [f64],
    ) -> Batch {
        let mut x_bar = self.inner.vjp(theta, x, tape, y_bar, theta_bar);
        x_bar.add_assign(y_bar);
        x_bar
    }
    fn vjp_gram(
        &self,
        theta: &[f64],
        x: &Batch,
        tape: &Tape,
        y_bar: &Batch,
        reps: usize,
        gram: &mut faer::Mat<f64>,
    ) -> Batch {
        let mut x_bar = self.inner.vjp_gram(theta, x, tape, y_bar, reps, gram);
        x_bar.add_assign(y_bar);
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
        let mut y_dot = self.inner.jvp(theta, x, tape, x_dot, theta_dot);
        y_dot.add_assign(x_dot);
        y_dot
    }
    fn visit_pre_activations(
        &self,
        x: &Batch,
        tape: &Tape,
        visit: &mut dyn FnMut(PreActivation<'_>),
    ) {
        self.inner.visit_pre_activations(x, tape, visit);
    }
    fn locate_non_finite(&self, theta: &[f64], x: &Batch, path: &str) -> Option<String> {
        let sub = if path.is_empty() {
            "fn".to_string()
        } else {
            format!("{path}.fn")
        };
        self.inner.locate_non_finite(theta, x, &sub).or_else(|| {
            let (y, _) = self.forward(theta, x);
            (!y.all_finite()).then(|| format!("layer `{path}` (the residual sum)"))
        })
    }

    fn children(&self) -> Vec<&dyn Layer> {
        vec![self.inner.as_ref()]
    }
    fn structure(&self) -> Structure<'_> {
        Structure::Residual(self.inner.as_ref())
    }
    fn mixes_samples(&self) -> bool {
        self.inner.mixes_samples()
    }
}
