//! Signals: SIGINT/SIGTERM stop the process in order, SIGHUP asks for a
//! configuration reload. The signals are blocked in every thread and a
//! dedicated thread waits for them with sigwait(2), so no code runs in
//! signal-handler context.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        set
    }
}

/// Blocks the shutdown signals in the calling thread (and so in every thread
/// spawned after). Call first thing in `main`.
pub fn block_signals() {
    let set = signal_set();
    // SAFETY: a valid set; a null old-set pointer is allowed.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

/// Spawns the thread that waits for signals: each SIGHUP calls `reload`
/// (on this thread, so a slow reload only delays the next signal); SIGINT or
/// SIGTERM sets `stop`, calls `notify` (e.g. to wake the control loop) and
/// ends the thread.
pub fn spawn_waiter(
    stop: Arc<AtomicBool>,
    notify: impl FnOnce() + Send + 'static,
    mut reload: impl FnMut() + Send + 'static,
) {
    let spawned = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let set = signal_set();
            loop {
                let mut sig = 0;
                // SAFETY: a valid set and an out-pointer to an int.
                let rc = unsafe { libc::sigwait(&set, &mut sig) };
                if rc == 0 && sig == libc::SIGHUP {
                    tracing::info!("SIGHUP: reloading the configuration");
                    reload();
                    continue;
                }
                tracing::info!(signal = sig, "shutting down");
                stop.store(true, Ordering::SeqCst);
                notify();
                return;
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the signal thread; stop with SIGKILL");
    }
}
