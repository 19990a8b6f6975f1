//! The pattern installed where the field is evaluated: the layers' controls (frozen pieces,
//! pins, PReLU's remembered slope) or the compiled route's pin table, and their removal.

use super::*;

impl KinkSystem<'_> {
    /// Writes the current pattern into every layer's control (columns: the whole batch), or
    /// into the compiled route's pin table.
    pub(super) fn install(&mut self) {
        if let Some(c) = self.compiled.as_ref() {
            let mut slots = std::mem::take(&mut self.slots);
            slots.clear();
            for &e in &self.pinned {
                let l = &self.layers[self.layer_of(e)];
                let k = self.pieces[e] as usize;
                let knot = l.knots[k];
                let slope = self.pin_slopes.get(&e).copied().unwrap_or_else(|| {
                    let a = c.slope_of_entry(e);
                    let (dl, dr) = (
                        l.layer.activation.piece_derivative(k, knot, a),
                        l.layer.activation.piece_derivative(k + 1, knot, a),
                    );
                    0.5 * (dl + dr)
                });
                slots.push(PinSlot {
                    knot,
                    left_piece: k as u16,
                    slope,
                });
            }
            if let Some(c) = self.compiled.as_mut() {
                c.set_pins(&self.pinned, slots.iter().copied());
            }
            self.slots = slots;
            return;
        }
        for (i, l) in self.layers.iter().enumerate() {
            let len = l.len;
            let record: Vec<usize> = self
                .pinned
                .iter()
                .filter(|&&e| e >= l.offset && e < l.offset + len)
                .map(|&e| e - l.offset)
                .collect();
            let mut g = l.layer.control.lock();
            let released = self.slopes_while_released.get(i).copied().unwrap_or(0.0);
            let a = g.as_ref().map_or(released, |s| s.slope);
            let mut pieces = self.pieces[l.offset..l.offset + len].to_vec();
            let mut pins = Vec::with_capacity(record.len());
            for &local in &record {
                let e = local + l.offset;
                let k = self.pieces[e] as usize;
                let knot = l.knots[k];
                let slope = self.pin_slopes.get(&e).copied().unwrap_or_else(|| {
                    let (dl, dr) = (
                        l.layer.activation.piece_derivative(k, knot, a),
                        l.layer.activation.piece_derivative(k + 1, knot, a),
                    );
                    0.5 * (dl + dr)
                });
                pieces[local] = PINNED;
                pins.push(Pin {
                    entry: local,
                    knot,
                    value_at_knot: l.layer.activation.piece_value(k, knot, a),
                    slope,
                });
            }
            *g = Some(ControlState {
                pieces,
                pins,
                record,
                record_z: true,
                slope: a,
                samples: self.data.n(),
                ..Default::default()
            });
        }
    }

    /// PReLU's slope a at the last forward pass, per controlled activation layer in entry order
    /// (0 for other activations; the compiled route: per stage with σ). The kink's one-sided
    /// slopes (`one_sided_slopes`) and the default slopes of new pins read it until the
    /// next forward pass, so a paused solve keeps it.
    pub fn remembered_slopes(&self) -> Vec<f64> {
        if let Some(c) = self.compiled.as_ref() {
            return c.remembered_slopes().collect();
        }
        self.layers
            .iter()
            .map(|l| l.layer.control.lock().as_ref().map_or(0.0, |s| s.slope))
            .collect()
    }

    /// Sets what [`Self::remembered_slopes`] returns (as many slopes as it returns), as if the
    /// last forward pass had seen them; the next [`Self::refresh`] installs pins with them.
    pub fn set_remembered_slopes(&mut self, slopes: &[f64]) {
        if let Some(c) = self.compiled.as_mut() {
            c.set_remembered_slopes(slopes);
            return;
        }
        for (l, &a) in self.layers.iter().zip(slopes) {
            if let Some(st) = l.layer.control.lock().as_mut() {
                st.slope = a;
            }
        }
    }

    /// The slope pinned entry e is installed with (None when it is not pinned).
    #[cfg(test)]
    pub(in crate::flow) fn installed_slope(&self, e: usize) -> Option<f64> {
        if let Some(c) = self.compiled.as_ref() {
            let j = self.pinned.binary_search(&e).ok()?;
            return Some(c.pins[j].slope);
        }
        let l = &self.layers[self.layer_of(e)];
        let g = l.layer.control.lock();
        let pins = &g.as_ref()?.pins;
        pins.iter()
            .find(|p| p.entry == e - l.offset)
            .map(|p| p.slope)
    }

    /// True when an activation layer has a trainable slope (PReLU), so that the kink's
    /// one-sided slopes depend on θ.
    pub fn has_trainable_slope(&self) -> bool {
        self.layers
            .iter()
            .any(|l| matches!(l.layer.activation, Activation::Prelu { .. }))
    }

    /// Releases the layers (ordinary evaluation again).
    pub fn uninstall(&mut self) {
        self.slopes_while_released.resize(self.layers.len(), 0.0);
        for (l, kept) in self.layers.iter().zip(&mut self.slopes_while_released) {
            if let Some(st) = l.layer.control.lock().take() {
                *kept = st.slope;
            }
        }
    }

    /// Re-installs after the pattern changed.
    pub fn refresh(&mut self) {
        self.install();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::{init_params, InitScheme};
    use crate::presets;

    /// An observer removes the controls between steps (to see the ordinary network); a pin
    /// installed afterwards without a chosen slope must still use the PReLU slope the last
    /// forward pass saw — the mean of σ'(0±) = (a + 1)/2 at a = 0.25, not at a = 0 — on the
    /// layer path as on the compiled route, whose slope table is never removed.
    #[test]
    fn prelu_slope_survives_removed_controls() {
        let model = presets::dnn(4, &[8, 8], 2, &Activation::Prelu { init: 0.25 });
        let data = Dataset::ball(10, 4, 2, 0);
        let theta = init_params(&model.param_specs(), &InitScheme::Torch, 0);
        for compiled in [false, true] {
            let mut sys = KinkSystem::new(&model, &data, LossKind::Mse, &theta, compiled).unwrap();
            assert_eq!(sys.is_compiled(), compiled);
            let mut f = vec![0.0; theta.len()];
            sys.evaluate(&theta, &mut f).unwrap();
            sys.uninstall();
            let e = 3;
            sys.pieces[e] = 0;
            sys.pinned = vec![e];
            sys.refresh();
            let installed = sys.installed_slope(e).expect("pinned");
            assert_eq!(installed, (0.25 + 1.0) / 2.0, "compiled = {compiled}");
        }
    }
}
