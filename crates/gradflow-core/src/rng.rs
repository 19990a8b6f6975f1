//! Seeded random streams. One user seed drives everything; each consumer (data, graph,
//! initialisation, …) draws from its own stream derived from (seed, purpose), so that adding a
//! consumer never shifts another's numbers. Same seed ⇒ bit-identical draws.

use rand::rngs::StdRng;
use rand::SeedableRng;

/// What a random stream is used for.
#[derive(Clone, Copy, Debug)]
pub enum Stream {
    Inputs = 1,
    Targets = 2,
    Init = 3,
}

/// The generator for `purpose` under `seed` (SplitMix64 mixing of the pair).
pub fn stream(seed: u64, purpose: Stream) -> StdRng {
    let mut z = seed ^ (purpose as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    StdRng::seed_from_u64(z ^ (z >> 31))
}
