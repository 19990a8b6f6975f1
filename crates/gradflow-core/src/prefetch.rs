//! Software prefetch: a hint that asks the memory system for the cache lines of a slice
//! before the code reads them, for loops whose next addresses the hardware cannot predict
//! (the kink tracker's counters of the words that flipped, the neighbours' columns in a
//! graph propagation). No effect on results; a no-op off x86-64.

/// Requests every cache line of `s` into the caches.
#[inline(always)]
pub(crate) fn prefetch<T>(s: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let bytes = std::mem::size_of_val(s);
        let p = s.as_ptr().cast::<i8>();
        for off in (0..bytes).step_by(64) {
            // SAFETY: SSE is part of the x86-64 baseline; `off` stays inside `s`, and a
            // prefetch never faults.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.add(off)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = s;
}
