//! The io_uring engine's driver: whoever reaps completions. Normally a task on the callers'
//! tokio runtime, woken through the ring's eventfd; a thread that waits in `io_uring_enter`
//! where a runtime cannot watch the eventfd, or to finish what a stopped runtime left in
//! flight. Its invariants are the engine's (see `uring.rs`, "Soundness").

use std::os::fd::AsFd;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use io_uring::types;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::Shared;

/// The driver's duty, held by whoever reaps (`State::driver` is true while one exists).
/// Dropped with nothing in flight, it marks the driver gone, so the next op starts one.
/// Dropped with ops in flight (its runtime shut down under it), it hands them to a thread:
/// their buffers return to the pool only once reaped, and a caller waiting for a buffer
/// submits nothing that would start a new driver.
pub(super) struct Driving(pub(super) Option<Arc<Shared>>);

impl Driving {
    fn shared(&self) -> Option<&Arc<Shared>> {
        self.0.as_ref()
    }

    /// Gives up the duty if nothing is in flight, under the state lock: an op pushed
    /// meanwhile is either seen here or starts a new driver. Returns whether it gave up.
    fn release_if_idle(&mut self) -> bool {
        let Some(shared) = &self.0 else { return true };
        let mut state = shared.lock();
        if state.in_flight > 0 {
            return false;
        }
        state.driver = false;
        drop(state);
        self.0 = None;
        true
    }
}

impl Drop for Driving {
    fn drop(&mut self) {
        if let Some(shared) = self.0.take() {
            let mut state = shared.lock();
            if state.in_flight == 0 {
                state.driver = false;
            } else {
                drop(state);
                drive_on_thread(shared, "the runtime stopped", Until::Idle);
            }
        }
    }
}

/// The driver task: reaps completions whenever the ring's eventfd is signalled, until the
/// ring is closing and nothing is in flight (invariant 3).
pub(super) async fn drive(mut driving: Driving) {
    let Some(shared) = driving.shared().cloned() else {
        return;
    };
    match drive_in_reactor(&shared).await {
        Ok(()) => {}
        Err(Lost::NoReactor(why)) => {
            // Keep the duty and pass it on for the ring's life: this runtime never will.
            driving.0 = None;
            drive_on_thread(shared, &why, Until::Closed);
        }
        // Dropping `driving` hands anything in flight to a thread until it is done.
        Err(Lost::Reactor(why)) => tracing::debug!(why, "io_uring driver lost its reactor"),
    }
}

/// Why the driver left tokio's reactor.
enum Lost {
    /// The runtime cannot watch the eventfd (built without its I/O driver).
    NoReactor(String),
    /// The reactor failed or shut down.
    Reactor(String),
}

/// The driver's loop on tokio's reactor.
async fn drive_in_reactor(shared: &Shared) -> Result<(), Lost> {
    // `AsyncFd` panics on a runtime built without its I/O driver.
    let watched = std::panic::catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the eventfd is owned by `shared`, which this function borrows for the
        // whole life of the `AsyncFd`, so the descriptor stays open and the same.
        unsafe { AsyncFd::register_with_interest(shared.event.as_fd(), Interest::READABLE) }
    }));
    let event = match watched {
        Ok(Ok(event)) => event,
        Ok(Err(error)) => return Err(Lost::NoReactor(error.to_string())),
        Err(_) => return Err(Lost::NoReactor("the runtime has no I/O driver".to_owned())),
    };
    loop {
        shared.reap();
        if shared.finished() {
            return Ok(());
        }
        match event.readable().await {
            Ok(mut ready) => ready.clear_ready(),
            Err(error) => return Err(Lost::Reactor(error.to_string())),
        }
        // Reset the counter before reaping: a completion posted after this read signals
        // again, one posted before it is reaped next.
        let mut count = [0u8; 8];
        let _ = rustix::io::read(&shared.event, &mut count);
        if shared.resubmit.swap(false, Ordering::AcqRel)
            && let Err(error) = shared.ring.submit()
        {
            tracing::debug!(%error, "io_uring submit deferred again");
            shared.resubmit.store(true, Ordering::Release);
            tokio::task::yield_now().await;
            shared.poke();
        }
    }
}

/// How long a driver thread reaps.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Until {
    /// Until nothing is in flight; the next op then starts a driver on its runtime.
    Idle,
    /// Until the ring is closing and nothing is in flight.
    Closed,
}

/// Hands the driver's duty (which the caller holds: `State::driver` is true) to a thread
/// that waits in `io_uring_enter`.
fn drive_on_thread(shared: Arc<Shared>, why: &str, until: Until) {
    tracing::warn!(why, "io_uring completions reaped on a thread");
    let for_thread = Arc::clone(&shared);
    let spawned = std::thread::Builder::new()
        .name("nimbus-uring".into())
        .spawn(move || {
            let mut driving = Driving(Some(for_thread));
            let Some(shared) = driving.shared().cloned() else {
                return;
            };
            // Wake up now and then to notice the ring closing.
            let every = types::Timespec::new().nsec(10_000_000);
            let args = types::SubmitArgs::new().timespec(&every);
            loop {
                shared.reap();
                let done = match until {
                    Until::Idle => driving.release_if_idle(),
                    Until::Closed => {
                        shared.closing.load(Ordering::Acquire) && driving.release_if_idle()
                    }
                };
                if done {
                    return;
                }
                if let Err(error) = shared.ring.submitter().submit_with_args(1, &args)
                    && error.raw_os_error() != Some(libc::ETIME)
                {
                    wait_failed(&error);
                }
            }
        });
    if let Err(error) = spawned {
        // No thread, no guard: the next op starts a driver, and `Shared`'s drop waits for
        // whatever is still in flight then.
        tracing::error!(%error, "cannot start the io_uring thread");
        shared.lock().driver = false;
    }
}

/// Handles a failed wait for completions: retries at once after an interruption, else logs
/// and pauses a millisecond so that a persistent failure never spins.
pub(super) fn wait_failed(error: &std::io::Error) {
    if matches!(
        error.raw_os_error(),
        Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
    ) {
        return;
    }
    tracing::error!(%error, "io_uring wait failed; retrying");
    #[allow(clippy::disallowed_methods)] // never on a tokio worker: a thread of our own or a drop
    std::thread::sleep(std::time::Duration::from_millis(1));
}
