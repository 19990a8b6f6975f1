//! Serial composition f = f_K ∘ … ∘ f_1 (PyTorch's `nn.Sequential`). Child k's parameters follow
//! child k−1's in θ, and child k's tensors are named `k.<name>` — exactly `nn.Sequential`'s
//! state-dict names, so a `dnn` saves as `0.weight`, `0.bias`, `2.weight`, ….

use super::{tape_ref, Batch, Layer, ParamSpec, PreActivation, Structure, Tape};

#[derive(Debug)]
pub struct Serial {
    pub layers: Vec<Box<dyn Layer>>,
    offsets: Vec<usize>,
}

/// Tape of a serial composite: the inputs of children 1..K (child 0's input is the caller's x)
/// and every child's own tape.
struct SerialTape {
    inputs: Vec<Batch>,
    tapes: Vec<Tape>,
}

impl Serial {
    /// Panics if consecutive dimensions disagree (a programming error in a model builder).
    pub fn new(layers: Vec<Box<dyn Layer>>) -> Self {
        assert!(!layers.is_empty(), "Serial needs at least one layer");
        for w in layers.windows(2) {
            assert_eq!(
                w[0].out_dim(),
                w[1].in_dim(),
                "Serial: `{}` feeds `{}`",
                w[0].describe(),
                w[1].describe()
            );
        }
        let mut offsets = vec![0];
        for l in &layers {
            offsets.push(offsets.last().unwrap() + l.num_params());
        }
        Self { layers, offsets }
    }
    fn slice<'a>(&self, theta: &'a [f64], k: usize) -> &'a [f64] {
        &theta[self.offsets[k]..self.offsets[k + 1]]
    }
    /// Start of child k's slice within this composite's θ.
    pub fn offset(&self, k: usize) -> usize {
        self.offsets[k]
    }
    fn input<'a>(&self, x: &'a Batch, t: &'a SerialTape, k: usize) -> &'a Batch {
        if k == 0 {
            x
        } else {
            &t.inputs[k - 1]
        }
    }
}

impl Layer for Serial {
    fn describe(&self) -> String {
        format!("serial of {} layers", self.layers.len())
    }
    fn in_dim(&self) -> usize {
        self.layers[0].in_dim()
    }
    fn out_dim(&self) -> usize {
        self.layers.last().unwrap().out_dim()
    }
    fn param_specs(&self) -> Vec<ParamSpec> {
        let mut specs = Vec::new();
        for (k, l) in self.layers.iter().enumerate() {
            for mut s in l.param_specs() {
                s.name = format!("{k}.{}", s.name);
                specs.push(s);
            }
        }
        specs
    }
    fn num_params(&self) -> usize {
        *self.offsets.last().unwrap()
    }

    fn forward(&self, theta: &[f64], x: &Batch) -> (Batch, Tape) {
        let k_last = self.layers.len() - 1;
        let mut inputs = Vec::with_capacity(k_last);
        let mut tapes = Vec::with_capacity(k_last + 1);
        let mut out = None;
        for (k, l) in self.layers.iter().enumerate() {
            let inp = if k == 0 { x } else { &inputs[k - 1] };
            let (y, t) = l.forward(self.slice(theta, k), inp);
            tapes.push(t);
            if k == k_last {
                out = Some(y);
            } else {
                inputs.push(y);
            }
        }
        (out.unwrap(), Box::new(SerialTape { inputs, tapes }))
    }

    fn vjp(
        &self,
        theta: &[f64],
        x: &Batch,
        tape: &Tape,
        y_bar: &Batch,
        theta_bar: &mut [f64],
    ) -> Batch {
        let t: &SerialTape = tape_ref(tape);
        let mut g = None::<Batch>;
        for k in (0..self.layers.len()).rev() {
            let gb = &mut theta_bar[self.offsets[k]..self.offsets[k + 1]];
            let cot = g.as_ref().unwrap_or(y_bar);
            let next = self.layers[k].vjp(
                self.slice(theta, k),
                self.input(x, t, k),
                &t.tapes[k],
                cot,
                gb,
            );
            g = Some(next);
        }
        g.unwrap()
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
        let t: &SerialTape = tape_ref(tape);
        let mut g = None::<Batch>;
        for k in (0..self.layers.len()).rev() {
            let cot = g.as_ref().unwrap_or(y_bar);
            let next = self.layers[k].vjp_gram(
                self.slice(theta, k),
                self.input(x, t, k),
                &t.tapes[k],
                cot,
                reps,
                gram,
            );
            g = Some(next);
        }
        g.unwrap()
    }

    fn jvp(
        &self,
        theta: &[f64],
        x: &Batch,
        tape: &Tape,
        x_dot: &Batch,
        theta_dot: &[f64],
    ) -> Batch {
        let t: &SerialTape = tape_ref(tape);
        let mut d = None::<Batch>;
        for (k, l) in self.layers.iter().enumerate() {
            let tan = d.as_ref().unwrap_or(x_dot);
            let next = l.jvp(
                self.slice(theta, k),
                self.input(x, t, k),
                &t.tapes[k],
                tan,
                self.slice(theta_dot, k),
            );
            d = Some(next);
        }
        d.unwrap()
    }

    fn visit_pre_activations(
        &self,
        x: &Batch,
        tape: &Tape,
        visit: &mut dyn FnMut(PreActivation<'_>),
    ) {
        let t: &SerialTape = tape_ref(tape);
        for (k, l) in self.layers.iter().enumerate() {
            l.visit_pre_activations(self.input(x, t, k), &t.tapes[k], visit);
        }
    }

    fn locate_non_finite(&self, theta: &[f64], x: &Batch, path: &str) -> Option<String> {
        let mut input = x.clone();
        for (k, l) in self.layers.iter().enumerate() {
            let sub = if path.is_empty() {
                k.to_string()
            } else {
                format!("{path}.{k}")
            };
            if let Some(found) = l.locate_non_finite(self.slice(theta, k), &input, &sub) {
                return Some(found);
            }
            input = l.forward(self.slice(theta, k), &input).0;
        }
        None
    }

    fn children(&self) -> Vec<&dyn Layer> {
        self.layers.iter().map(|l| l.as_ref()).collect()
    }

    fn structure(&self) -> Structure<'_> {
        Structure::Serial(self.children())
    }

    fn mixes_samples(&self) -> bool {
        self.layers.iter().any(|l| l.mixes_samples())
    }
}
