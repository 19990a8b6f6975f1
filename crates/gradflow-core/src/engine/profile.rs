//! The engine's profile: the phases of an epoch ([`PHASES`]) and the stopwatch that charges
//! time to them ([`Clock`]).

use super::kernels;

/// The phases of an epoch the profile separates. Work split over the column parts is timed in
/// every part and charged per core (the parts' sum ÷ the cores in use); the rest of the wall
/// time of the fork-join (imbalance, wake-ups, a descheduled core) is charged to the last phase.
pub const PHASES: [&str; 9] = [
    "forward matmuls",
    "forward bias + σ (fused)",
    "graph propagation Â (both directions)",
    "loss and output cotangent",
    "backward weight-cotangent matmuls",
    "backward input-cotangent matmuls",
    "backward σ' + bias/slope sums (fused)",
    "sum of the parts' gradient contributions",
    "waiting at joins (imbalance, wake-ups, a descheduled core)",
];

/// A stopwatch that charges elapsed time to phases (a no-op when profiling is off).
pub(crate) struct Clock {
    pub(super) on: bool,
    t: std::time::Instant,
    pub(super) acc: [f64; PHASES.len()],
}

impl Clock {
    pub(crate) fn new(on: bool) -> Self {
        Self {
            on,
            t: std::time::Instant::now(),
            acc: [0.0; PHASES.len()],
        }
    }
    #[inline]
    pub(crate) fn lap(&mut self, phase: usize) {
        if self.on {
            let now = std::time::Instant::now();
            self.acc[phase] += (now - self.t).as_secs_f64();
            self.t = now;
        }
    }
    /// Adds another clock's phases (a part's, into the sum over parts).
    pub(crate) fn add(&mut self, other: &Clock) {
        for (a, b) in self.acc.iter_mut().zip(other.acc) {
            *a += b;
        }
    }
    /// After a fork-join: the parts' summed phases (`task`) per core, and the rest of the wall
    /// time as waiting.
    pub(crate) fn absorb(&mut self, task: &Clock) {
        if self.on {
            let now = std::time::Instant::now();
            let wall = (now - self.t).as_secs_f64();
            let cores = if kernels::parallel() {
                rayon::current_num_threads() as f64
            } else {
                1.0
            };
            let busy: f64 = task.acc.iter().sum::<f64>() / cores;
            for (a, b) in self.acc.iter_mut().zip(task.acc) {
                *a += b / cores;
            }
            self.acc[PHASES.len() - 1] += (wall - busy).max(0.0);
            self.t = now;
        }
    }
}
