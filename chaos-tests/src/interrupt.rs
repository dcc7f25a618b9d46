//! Ctrl-C and SIGTERM: the run winds down (faults undone, clients stopped) and returns, so
//! that dropping the cluster and its network kills every process, unmounts and removes every
//! namespace it made. Nothing is left on the machine.

use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Whether the run was asked to stop.
#[must_use]
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// Starts a thread that sets [`interrupted`] on SIGINT or SIGTERM.
///
/// # Errors
/// The signal handlers could not be installed.
pub fn watch() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (mut int, mut term) = runtime.block_on(async {
        Ok::<_, std::io::Error>((
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        ))
    })?;
    std::thread::spawn(move || {
        runtime.block_on(async {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        });
        eprintln!("nimbus-chaos: interrupted; undoing the faults and stopping the cluster");
        INTERRUPTED.store(true, Ordering::Relaxed);
    });
    Ok(())
}
