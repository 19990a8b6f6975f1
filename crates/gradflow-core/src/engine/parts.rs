//! [`Parts`]: how many column parts the engine cuts the samples into — the unit rayon balances
//! and what fixes the order of every sum over samples.

/// How many column parts an engine cuts the n samples into: the unit of work rayon balances
/// over its threads, and what fixes the order of every sum over samples. Results are bitwise
/// the same for a given count, whichever threads run the parts (or none: `Seq`). A value passed
/// to the engine when it is built, like faer's `Par`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parts(usize);

impl Parts {
    /// `count` parts (at least 1; parts at the end are empty when n is small).
    pub fn new(count: usize) -> Self {
        Self(count.max(1))
    }
    /// Two parts per thread.
    pub fn for_threads(threads: usize) -> Self {
        Self::new(2 * threads)
    }
    /// Two parts per thread of the current rayon pool (the global one outside any pool).
    pub fn for_pool() -> Self {
        Self::for_threads(rayon::current_num_threads())
    }
    pub fn count(self) -> usize {
        self.0
    }
}
