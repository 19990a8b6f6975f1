//! True gradient flow dθ/dt = −∇L(θ): the solvers, and what a flow run reports.
//!
//! - `gd` (in [`crate::train`]) is explicit Euler, the paper's simulation.
//! - [`gradient_flow`] is an adaptive, error-controlled Runge–Kutta solve (Dormand–Prince 5(4),
//!   [`dopri`], or the cheaper Bogacki–Shampine 3(2), [`bs3`], chosen per step by [`pairs`])
//!   that knows the activation's kinks ([`system`], [`solve`]): every pre-activation keeps a
//!   frozen polynomial piece during a step, so the field is smooth and the step keeps its
//!   order; leaving a piece is an event located on the continuous extension; and where the
//!   fields on both sides of a kink push a pre-activation into it, the pre-activation is held
//!   there with the effective slope in [σ'(b⁻), σ'(b⁺)] that keeps it there — the Filippov
//!   sliding solution — instead of the step size shrinking forever.
//!
//! Note on smoothness: with a kinked σ the field −∇L itself jumps across a kink surface
//! z_e(θ) = b (through σ'(z_e)), unless the cotangent at σ(z_e) vanishes; it is not merely its
//! derivative that jumps. That is why sliding modes exist at all.
//!
//! **Why not diffsol.** diffsol (v0.19) offers explicit RK (Tsit45) with root functions, but
//! our field changes with a discrete state (the frozen pattern and the pinned set) that must
//! be switched at each event, the sliding field needs a projection and a drift correction after
//! each step, and event functions of pinned entries need full field evaluations at points of
//! the continuous extension. Wrapping that in diffsol's closure-and-root-function interface
//! would have meant restarting its solver at every one of the (thousands of) events and
//! converting vectors to its faer version (0.22, ours is 0.24) at every call. The tableau and
//! controller are ~150 lines ([`dopri`], tested for their orders); the event logic is ours
//! either way.

pub mod bs3;
mod compiled;
pub mod dopri;
mod events;
mod filippov;
mod gram;
mod gram_bordered;
pub mod kernel;
pub mod pairs;
mod plain;
mod snapshot;
pub mod solve;
pub mod system;

pub use filippov::{filippov_ntk, flow_ntk};
pub use snapshot::{resumable, FlowSnapshot, Position};
pub use solve::{
    gradient_flow, gradient_flow_from, gradient_flow_with_progress, EventSummary, FlowOptions,
    FlowOutcome, FlowProgress, FlowRecord, SlidingInterval,
};
pub use system::Counts;
