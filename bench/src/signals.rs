//! SIGINT and SIGTERM end the benchmark cleanly: the first one is only
//! noted (signal-hook flags), the bench stops at its next check (between
//! runs, between nc probes) with [`BenchError::Interrupted`], and unwinding
//! drops the lab, which tears it down. A second signal exits at once (the
//! namespaces left behind are reaped by the next run).
//!
//! A terminal's Ctrl-C reaches the measured tools too (they are in the
//! bench's process group), so a run in progress ends early; a signal sent to
//! the bench alone lets the current run finish first (each is bounded by its
//! timeouts).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::flag;

use crate::error::BenchError;

/// Set by the first signal, and which one it was.
struct Received {
    any: Arc<AtomicBool>,
    which: Arc<AtomicUsize>,
}

static RECEIVED: OnceLock<Received> = OnceLock::new();

/// Installs the handlers (once).
pub fn install() -> Result<(), BenchError> {
    let received = RECEIVED.get_or_init(|| Received {
        any: Arc::new(AtomicBool::new(false)),
        which: Arc::new(AtomicUsize::new(0)),
    });
    for signal in [SIGINT, SIGTERM] {
        let register = || -> std::io::Result<()> {
            // Order matters: the shutdown check must see the flag as it was
            // before this signal set it.
            flag::register_conditional_shutdown(signal, 128 + signal, Arc::clone(&received.any))?;
            flag::register_usize(signal, Arc::clone(&received.which), signal as usize)?;
            flag::register(signal, Arc::clone(&received.any))?;
            Ok(())
        };
        register().map_err(|error| BenchError::Io {
            context: format!("cannot handle signal {signal}"),
            error,
        })?;
    }
    Ok(())
}

/// [`BenchError::Interrupted`] once a signal has arrived.
pub fn check() -> Result<(), BenchError> {
    match RECEIVED.get() {
        Some(r) if r.any.load(Ordering::SeqCst) => Err(BenchError::Interrupted(
            i32::try_from(r.which.load(Ordering::SeqCst)).unwrap_or(SIGINT),
        )),
        _ => Ok(()),
    }
}
