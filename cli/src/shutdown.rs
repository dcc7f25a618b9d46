//! How the long-running commands (`nimbus storage`, `nimbus proxy`, `nimbus dev`) learn that
//! they should stop: SIGINT or SIGTERM, and, for the processes `nimbus dev` starts, the death
//! of that supervisor.

/// The environment variable through which `nimbus dev` gives its children its process id.
pub const SUPERVISOR_PID_ENV: &str = "NIMBUS_DEV_SUPERVISOR_PID";

/// Resolves at the first SIGINT or SIGTERM.
///
/// # Cancel safety
/// Cancel-safe: dropping it before a signal came loses nothing; the handlers stay installed
/// (a later SIGINT no longer ends the process by default).
pub async fn signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGTERM; stop with SIGINT");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}

/// In a process started by `nimbus dev` ([`SUPERVISOR_PID_ENV`] set): asks the kernel for a
/// SIGTERM when the supervisor dies, however it dies (SIGKILL included), so that no process
/// of a dev cluster outlives it. Returns `false` when the supervisor is gone already.
/// Elsewhere does nothing and returns `true`.
#[must_use]
pub fn follow_supervisor() -> bool {
    let Some(supervisor) = std::env::var(SUPERVISOR_PID_ENV)
        .ok()
        .and_then(|pid| pid.parse::<i32>().ok())
    else {
        return true;
    };
    if let Err(error) =
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))
    {
        tracing::warn!(%error, "cannot ask to be stopped with nimbus dev");
    }
    // The supervisor may have died before the request above: then this process has a new
    // parent already.
    rustix::process::getppid().map(rustix::process::Pid::as_raw_pid) == Some(supervisor)
}
