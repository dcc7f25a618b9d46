//! The processes of a dev cluster: started from this binary, each with its output appended
//! to its own log file, watched, and stopped.
//!
//! **Invariants:**
//! - No child outlives `nimbus dev`: [`Supervisor::stop`] sends SIGTERM, waits, then sends
//!   SIGKILL; dropping a supervisor kills what is left; and each child asks the kernel for
//!   a SIGTERM should this process die without either ([`crate::shutdown::follow_supervisor`]).
//!   That request follows the *thread* that started the child, so children are started
//!   from the main thread only (the supervisor's runtime is single-threaded).
//! - Each child runs in its own process group: a Ctrl-C at the terminal reaches
//!   `nimbus dev` alone, which then stops the children in order.
//! - A child that was reaped is never signalled again (its pid may be reused).

use std::ffi::OsStr;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rustix::process::{Pid, Signal};
use tokio::time::Instant;

use crate::shutdown::SUPERVISOR_PID_ENV;

/// How often children are looked at.
const POLL: Duration = Duration::from_millis(50);

/// How long a child may take to stop after SIGTERM before it gets SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// The most bytes of a log read while waiting for a child's ready lines.
const MAX_READY_SCAN_BYTES: u64 = 1 << 20;

/// One child process.
struct Process {
    name: String,
    log: PathBuf,
    /// Where this run's output starts in the log.
    log_start: u64,
    child: Child,
    /// Set once reaped.
    exited: Option<ExitStatus>,
    /// Its death was reported already (by [`Supervisor::next_death`] or
    /// [`Supervisor::wait_ready`]).
    reported: bool,
}

/// A child that exited while it should have been running.
pub struct Death {
    /// Its name.
    pub name: String,
    /// Its log.
    pub log: PathBuf,
    /// How it ended.
    pub status: ExitStatus,
}

/// The children of `nimbus dev`, in start order.
pub struct Supervisor {
    logs: PathBuf,
    processes: Vec<Process>,
}

impl Supervisor {
    /// Returns a supervisor whose children log to `logs/<name>.log`.
    pub fn new(logs: PathBuf) -> Self {
        Supervisor {
            logs,
            processes: Vec::new(),
        }
    }

    /// Starts this binary with `args` as child `name`.
    ///
    /// # Errors
    /// The log cannot be opened, the process cannot be started.
    pub fn spawn<S: AsRef<OsStr>>(&mut self, name: &str, args: &[S]) -> Result<()> {
        let exe = std::env::current_exe().context("find the nimbus binary")?;
        let log = self.logs.join(format!("{name}.log"));
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("open {}", log.display()))?;
        writeln!(file, "--- nimbus dev starts {name} ---")
            .with_context(|| format!("write {}", log.display()))?;
        let log_start = file
            .seek(SeekFrom::End(0))
            .with_context(|| format!("seek {}", log.display()))?;
        let stderr = file
            .try_clone()
            .with_context(|| format!("open {}", log.display()))?;
        let child = Command::new(&exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(stderr)
            .env(SUPERVISOR_PID_ENV, std::process::id().to_string())
            // Log files, not terminals: no colour codes in them.
            .env("NO_COLOR", "1")
            .process_group(0)
            .spawn()
            .with_context(|| format!("start {name} ({})", exe.display()))?;
        self.processes.push(Process {
            name: name.to_owned(),
            log,
            log_start,
            child,
            exited: None,
            reported: false,
        });
        Ok(())
    }

    /// Waits until child `name` has written a line starting with each of `prefixes` (in
    /// any order); returns the rest of each such line, in the order of `prefixes`.
    ///
    /// # Errors
    /// The child exits first, or stays silent past `timeout`: the error names its log.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads.
    pub async fn wait_ready(
        &mut self,
        name: &str,
        prefixes: &[String],
        timeout: Duration,
    ) -> Result<Vec<String>> {
        let deadline = Instant::now() + timeout;
        let Some(process) = self.processes.iter_mut().find(|p| p.name == name) else {
            bail!("no process {name} was started");
        };
        loop {
            // A short read of a small file, on a runtime that runs nothing else meanwhile.
            let text = read_from(&process.log, process.log_start)?;
            let found: Vec<Option<String>> = prefixes
                .iter()
                .map(|prefix| {
                    text.lines()
                        .find_map(|l| l.strip_prefix(prefix.as_str()))
                        .map(|rest| rest.trim().to_owned())
                })
                .collect();
            if found.iter().all(Option::is_some) {
                return Ok(found.into_iter().flatten().collect());
            }
            if let Some(status) = process.try_wait()? {
                process.reported = true;
                bail!(
                    "{name} exited ({status}) before it said it was listening; see {}",
                    process.log.display()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "{name} did not say it was listening within {} s; see {}",
                    timeout.as_secs(),
                    process.log.display()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until a child exits, and returns it.
    ///
    /// # Errors
    /// A child's state cannot be read.
    ///
    /// # Cancel safety
    /// Cancel-safe: a child found exited is recorded as such before this returns.
    pub async fn next_death(&mut self) -> Result<Death> {
        loop {
            for process in &mut self.processes {
                if process.exited.is_some() {
                    continue;
                }
                if let Some(status) = process.try_wait()? {
                    process.reported = true;
                    return Ok(Death {
                        name: process.name.clone(),
                        log: process.log.clone(),
                        status,
                    });
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Stops every child still running: SIGTERM, last started first; then, past
    /// [`STOP_TIMEOUT`], SIGKILL. Returns a line for each child that did not stop cleanly
    /// (but none for a death reported already).
    pub async fn stop(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        for process in self.processes.iter_mut().rev() {
            if process.exited.is_none()
                && let Err(e) = process.signal(Signal::TERM)
            {
                problems.push(format!("{}: SIGTERM: {e}", process.name));
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            let mut running = 0;
            for process in &mut self.processes {
                if process.exited.is_none() {
                    match process.try_wait() {
                        Ok(Some(_)) => {}
                        Ok(None) => running += 1,
                        Err(e) => problems.push(format!("{}: {e:#}", process.name)),
                    }
                }
            }
            if running == 0 || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        for process in &mut self.processes {
            if process.exited.is_none() {
                problems.push(format!(
                    "{} did not stop within {} s of SIGTERM: killed; see {}",
                    process.name,
                    STOP_TIMEOUT.as_secs(),
                    process.log.display()
                ));
                process.kill();
            } else if let Some(status) = process.exited
                && !status.success()
                && !process.reported
            {
                problems.push(format!(
                    "{} stopped with {status}; see {}",
                    process.name,
                    process.log.display()
                ));
            }
        }
        problems
    }
}

impl Process {
    /// Reaps the child if it exited.
    fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if let Some(status) = self.exited {
            return Ok(Some(status));
        }
        let status = self
            .child
            .try_wait()
            .with_context(|| format!("check on {}", self.name))?;
        self.exited = status;
        Ok(status)
    }

    /// Sends `signal` to the (not yet reaped) child.
    fn signal(&self, signal: Signal) -> std::io::Result<()> {
        let pid = Pid::from_child(&self.child);
        rustix::process::kill_process(pid, signal).map_err(std::io::Error::from)
    }

    /// SIGKILL, then reaps it.
    fn kill(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            self.exited = self.child.wait().ok();
        }
    }
}

impl Drop for Supervisor {
    /// The last resort (an error or panic past every orderly stop): kills what still runs.
    fn drop(&mut self) {
        for process in &mut self.processes {
            process.kill();
        }
    }
}

/// Returns the text of `log` from `start` (at most [`MAX_READY_SCAN_BYTES`]).
fn read_from(log: &Path, start: u64) -> Result<String> {
    let mut file = std::fs::File::open(log).with_context(|| format!("open {}", log.display()))?;
    file.seek(SeekFrom::Start(start))
        .with_context(|| format!("read {}", log.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_READY_SCAN_BYTES)
        .read_to_end(&mut bytes)
        .with_context(|| format!("read {}", log.display()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
