//! Cooperative interruption: Ctrl-C or SIGTERM sets a flag that training loops read at every
//! epoch boundary (GD) or accepted step (the flow solve), so a run stops cleanly — metrics
//! flushed, a checkpoint written — instead of dying mid-write. A second signal while the first is being handled exits at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

static REQUESTED: AtomicBool = AtomicBool::new(false);
static INSTALL: Once = Once::new();

/// Installs the Ctrl-C / SIGTERM handler (once per process; later calls do nothing).
pub fn install_handler() {
    INSTALL.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            if REQUESTED.swap(true, Ordering::SeqCst) {
                eprintln!("\nsecond interrupt: exiting now");
                std::process::exit(130);
            }
            eprintln!(
                "\ninterrupt: stopping at the next epoch boundary or flow step (press again to exit at once)"
            );
        });
    });
}

/// True once an interruption was requested.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::Relaxed)
}

/// Requests an interruption, as a signal would (for library users and tests).
pub fn request() {
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Clears a request (e.g. before resuming in the same process).
pub fn clear() {
    REQUESTED.store(false, Ordering::SeqCst);
}
