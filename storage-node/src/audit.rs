//! The auditor: re-reads every committed fragment of a device, checking each block's crc32c
//! and the whole fragment's blake3, at a bounded rate (bytes per second), cycle after cycle.
//! A fragment that fails is quarantined by the reader (nothing serves it again) and counted,
//! so that reconstruction can rebuild it from the other fragments of its object.
//!
//! **Invariant:** the auditor only reads; what it moves is what any read would have moved
//! (a file that fails verification, into `quarantine/`).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::store::{FragmentStore, StoreError};

/// How an auditor paces itself.
#[derive(Clone, Copy, Debug)]
pub struct AuditConfig {
    /// Bytes read per second at most (0: the auditor does not run).
    pub bytes_per_sec: u64,
    /// The pause between the end of one cycle and the start of the next.
    pub cycle_pause: Duration,
}

/// What an auditor has done, for status reports (monotonic counters).
#[derive(Debug, Default)]
pub struct AuditStats {
    cycles: AtomicU64,
    fragments: AtomicU64,
    bytes: AtomicU64,
    corrupt: AtomicU64,
    errors: AtomicU64,
}

/// A copy of [`AuditStats`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    /// Whole passes over the device completed.
    pub cycles: u64,
    /// Fragments verified.
    pub fragments: u64,
    /// Bytes read verifying them.
    pub bytes: u64,
    /// Fragments that failed and were quarantined.
    pub corrupt: u64,
    /// Fragments that could not be read (I/O errors, vanished mid-cycle).
    pub errors: u64,
}

impl AuditStats {
    /// The counters now.
    #[must_use]
    pub fn report(&self) -> AuditReport {
        AuditReport {
            cycles: self.cycles.load(Ordering::Relaxed),
            fragments: self.fragments.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            corrupt: self.corrupt.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

/// One device's auditor.
pub struct Auditor {
    store: FragmentStore,
    config: AuditConfig,
    stats: Arc<AuditStats>,
    /// Told when a fragment is quarantined, so that reconstruction starts at once.
    wake: Option<Arc<Notify>>,
}

impl Auditor {
    /// An auditor of `store`, counting into `stats`.
    #[must_use]
    pub fn new(store: FragmentStore, config: AuditConfig, stats: Arc<AuditStats>) -> Self {
        Auditor {
            store,
            config,
            stats,
            wake: None,
        }
    }

    /// The same auditor, notifying `wake` whenever it quarantines a fragment (the device's
    /// workers then start a pass, which rebuilds it).
    #[must_use]
    pub fn waking(mut self, wake: Arc<Notify>) -> Self {
        self.wake = Some(wake);
        self
    }

    /// Audits cycle after cycle until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        if self.config.bytes_per_sec == 0 {
            return;
        }
        loop {
            if let Err(e) = self.cycle(&mut stop).await {
                tracing::warn!(error = %e, root = %self.store.root().display(), "audit cycle cut short");
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
            }
            if *stop.borrow() {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(self.config.cycle_pause) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// One pass over every committed fragment; returns early (Ok) when told to stop.
    async fn cycle(&self, stop: &mut watch::Receiver<bool>) -> Result<(), StoreError> {
        let started = Instant::now();
        let mut read: u64 = 0;
        let objects = self.store.root().join("objects");
        // objects/<policy>/<partition>/<prefix>/<object hash>/<version>.<index>
        let mut dirs = vec![(objects, 0usize)];
        while let Some((dir, depth)) = dirs.pop() {
            if *stop.borrow() {
                return Ok(());
            }
            let names = match self.store.engine().list_dir(&dir).await {
                Ok(names) => names,
                // A directory removed since it was listed (an object deleted) is no error.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io(&dir, e)),
            };
            if depth < 4 {
                dirs.extend(names.into_iter().map(|n| (dir.join(n), depth + 1)));
                continue;
            }
            for name in names.iter().filter(|n| is_committed(n)) {
                let bytes = self.verify(&dir.join(name)).await;
                read += bytes;
                // Pace: never ahead of bytes_per_sec since the cycle started.
                let due = Duration::from_secs_f64(read as f64 / self.config.bytes_per_sec as f64);
                let ahead = due.saturating_sub(started.elapsed());
                if !ahead.is_zero() {
                    tokio::select! {
                        () = tokio::time::sleep(ahead) => {}
                        _ = stop.changed() => return Ok(()),
                    }
                }
            }
        }
        self.stats.cycles.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(root = %self.store.root().display(), bytes = read, secs = started.elapsed().as_secs_f64(), "audit cycle done");
        Ok(())
    }

    /// Verifies one fragment file; returns the bytes it read.
    async fn verify(&self, path: &Path) -> u64 {
        let outcome = match self.store.open_path(path.to_path_buf()).await {
            Ok(reader) => {
                let bytes = reader.footer().data_bytes;
                reader.verify_whole().await.map(|()| bytes)
            }
            Err(e) => Err(e),
        };
        match outcome {
            Ok(bytes) => {
                self.stats.fragments.fetch_add(1, Ordering::Relaxed);
                self.stats.bytes.fetch_add(bytes, Ordering::Relaxed);
                bytes
            }
            Err(StoreError::Corrupt { .. }) => {
                self.stats.corrupt.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(path = %path.display(), "audit: corrupt fragment quarantined");
                if let Some(wake) = &self.wake {
                    wake.notify_one();
                }
                0
            }
            // Deleted between the listing and the read.
            Err(StoreError::NotFound { .. }) => 0,
            Err(e) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(path = %path.display(), error = %e, "audit: fragment unreadable");
                0
            }
        }
    }
}

/// A committed fragment's file name: `<version>.<index>`, not `.pending`.
fn is_committed(name: &str) -> bool {
    let mut parts = name.split('.');
    matches!(
        (parts.next(), parts.next(), parts.next()),
        (Some(v), Some(i), None) if v.len() == 16 && v.bytes().all(|b| b.is_ascii_hexdigit()) && i.parse::<u8>().is_ok()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_committed_fragment_names_are_audited() {
        assert!(is_committed("00000000000000ff.3"));
        assert!(!is_committed("00000000000000ff.3.pending"));
        assert!(!is_committed("ff.3"));
        assert!(!is_committed("00000000000000ff.x"));
        assert!(!is_committed("tmp"));
    }
}
