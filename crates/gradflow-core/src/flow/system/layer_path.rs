//! The general layer path's share of the field: pre-activations gathered from the controls, the
//! recorded cotangents, the pinned rows ∇z_j by seeded reverse passes, and the entry probe
//! (the rows' projection is `dense.rs`).

use super::graph_rows;
use super::*;

impl KinkSystem<'_> {
    pub(super) fn gather_z(&mut self) -> Result<()> {
        self.last.z.resize(self.pieces.len(), 0.0);
        for l in &self.layers {
            let mut g = l.layer.control.lock();
            let st = g.as_mut().expect("control installed");
            check_one_call(l.layer, st, l.len)?;
            st.calls = 0;
            self.last.z[l.offset..l.offset + l.len].copy_from_slice(&st.z[..l.len]);
        }
        Ok(())
    }

    /// The cotangents at σ(z_j) recorded by the last reverse pass, in `pinned` order.
    pub(super) fn recorded_cotangents(&self) -> Vec<f64> {
        let mut c = Vec::with_capacity(self.pinned.len());
        for l in &self.layers {
            let g = l.layer.control.lock();
            if let Some(st) = g.as_ref() {
                c.extend_from_slice(&st.recorded[..st.record.len().min(st.recorded.len())]);
            }
        }
        c
    }

    /// ∇_θ z_j for every pinned entry j into `rows` (seeded reverse passes).
    pub(super) fn pinned_rows(&mut self, theta: &[f64], rows: &mut Rows) -> Result<()> {
        let p = self.model.p();
        let m = self.model.out_dim();
        rows.reset(self.pinned.len(), p);
        let per_sample = !self.model.net.mixes_samples();
        if let Some(net) = self.graph_rows.as_ref().filter(|_| self.sparse_graph_rows) {
            let seeds: Vec<(usize, usize, usize)> = self
                .pinned
                .iter()
                .map(|&e| {
                    let li = self.layer_of(e);
                    let local = e - self.layers[li].offset;
                    let dim = self.layers[li].layer.dim;
                    (li, local / dim, local % dim)
                })
                .collect();
            for l in &self.layers {
                let mut g = l.layer.control.lock();
                let st = g.as_mut().expect("control installed");
                st.columns = None;
                st.seeds.clear();
            }
            graph_rows::sparse_rows(net, theta, &self.data.x, m, &seeds, rows.iter_mut());
            self.counts.sparse_row_passes += seeds.len() as u64;
            self.counts.forwards += 1;
            for l in &self.layers {
                let mut g = l.layer.control.lock();
                let st = g.as_mut().expect("control installed");
                st.calls = 0;
            }
            return Ok(());
        }
        let set =
            |layers: &[Controlled], columns: Option<Vec<usize>>, seed: Option<(usize, usize)>| {
                for (li, l) in layers.iter().enumerate() {
                    let mut g = l.layer.control.lock();
                    let st = g.as_mut().expect("control installed");
                    st.columns = columns.clone();
                    st.record_z = false;
                    st.seeds = match seed {
                        Some((sl, local)) if sl == li => vec![(local, 1.0)],
                        _ => Vec::new(),
                    };
                }
            };
        // Per-sample networks: the pinned entries of one sample (every layer, every application)
        // share one one-sample forward pass. Graph networks: all entries share one full-batch
        // forward pass, then one full-batch reverse pass per entry.
        let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
        if per_sample {
            let mut by_sample = std::collections::BTreeMap::<usize, Vec<usize>>::new();
            for (j, &e) in self.pinned.iter().enumerate() {
                by_sample.entry(self.entry_place(e).1).or_default().push(j);
            }
            groups.extend(by_sample);
        } else {
            groups.push((0, (0..self.pinned.len()).collect()));
        }
        for (i, group) in groups {
            let (xs, cols) = if per_sample {
                (
                    Batch::from_vec(self.data.x.features(), 1, self.data.x.col(i).to_vec()),
                    Some(vec![i]),
                )
            } else {
                (self.data.x.clone(), None)
            };
            set(&self.layers, cols.clone(), None);
            let ev = self.model.evaluate(theta, &xs);
            let zero = Batch::zeros(m, xs.n());
            for j in group {
                let e = self.pinned[j];
                let li = self.layer_of(e);
                set(
                    &self.layers,
                    cols.clone(),
                    Some((li, e - self.layers[li].offset)),
                );
                self.model.vjp(theta, &xs, &ev, &zero, rows.row_mut(j));
                if per_sample {
                    self.counts.sample_passes += 1;
                } else {
                    self.counts.seeded_full_passes += 1;
                }
            }
        }
        for l in &self.layers {
            let mut g = l.layer.control.lock();
            let st = g.as_mut().expect("control installed");
            st.columns = None;
            st.seeds.clear();
            st.record_z = true;
            st.calls = 0;
        }
        Ok(())
    }
}

/// The number of entries of each activation layer: one forward pass at θ with empty controls
/// (σ evaluated as is, pre-activations recorded); a layer that saw k·n columns has k·n·dim.
pub(super) fn probe_entries(
    model: &Model,
    data: &Dataset,
    theta: &[f64],
    acts: &[&ActivationLayer],
) -> Result<Vec<usize>> {
    let n = data.n();
    for a in acts {
        *a.control.lock() = Some(ControlState {
            record_z: true,
            samples: n,
            ..Default::default()
        });
    }
    model.outputs(theta, &data.x);
    let mut lens = Vec::with_capacity(acts.len());
    let mut failed = None;
    for a in acts {
        let mut g = a.control.lock();
        let st = g.take().expect("probe installed");
        let len = st.z.len();
        let k = len / (a.dim * n).max(1);
        match check_one_call(a, &st, k.max(1) * a.dim * n) {
            Ok(()) => lens.push(len),
            Err(e) => failed = failed.or(Some(e)),
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(lens),
    }
}

/// The entry layout's requirement: the layer ran once in the last forward pass (all its
/// applications stacked as columns) and recorded `len` pre-activations.
fn check_one_call(layer: &ActivationLayer, st: &ControlState, len: usize) -> Result<()> {
    if st.calls == 1 && st.z.len() == len && len > 0 {
        return Ok(());
    }
    let what = if st.calls != 1 {
        format!("ran {} times in one forward pass", st.calls)
    } else {
        format!("recorded {} pre-activations, {len} expected", st.z.len())
    };
    Err(Error::Invalid(format!(
        "solver = \"flow\" needs every activation layer run once per forward pass, all its \
         applications to the samples stacked as columns; `{}` {what} (a shared tower that mixes \
         samples, such as a graph tower in a shared-pair, runs once per half); use \
         solver = \"gd\" for this architecture",
        layer.describe(),
    )))
}
