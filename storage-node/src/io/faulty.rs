//! Fault injection, for tests and the chaos harness: an engine built with
//! [`super::Engine::with_faults`] fails or slows its data operations on purpose, so that the
//! layers above can be shown to handle full disks, I/O errors and torn writes.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Which faults to inject.
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    /// Writes fail with ENOSPC once this many bytes were written through the engine.
    pub enospc_after_bytes: Option<u64>,
    /// Every read fails with EIO.
    pub eio_on_read: bool,
    /// A write writes only the first half of its bytes (whole 4 KiB blocks) and then fails
    /// with EIO, as a torn write leaves a file.
    pub torn_writes: bool,
    /// Added before every data operation.
    pub latency: Option<Duration>,
}

/// Faults and the state they need.
#[derive(Debug)]
pub(super) struct FaultState {
    pub(super) faults: Faults,
    written: AtomicU64,
}

/// What to do with a write of `len` bytes.
pub(super) enum WriteFault {
    /// Let it through.
    None,
    /// Fail it with this error without writing.
    Fail(io::Error),
    /// Write this many bytes, then fail with EIO.
    Tear(usize),
}

impl FaultState {
    pub(super) fn new(faults: Faults) -> Self {
        FaultState {
            faults,
            written: AtomicU64::new(0),
        }
    }

    pub(super) async fn delay(&self) {
        if let Some(latency) = self.faults.latency {
            tokio::time::sleep(latency).await;
        }
    }

    pub(super) fn read(&self) -> Option<io::Error> {
        self.faults
            .eio_on_read
            .then(|| io::Error::from_raw_os_error(libc::EIO))
    }

    pub(super) fn write(&self, len: usize) -> WriteFault {
        if let Some(limit) = self.faults.enospc_after_bytes {
            let before = self.written.fetch_add(len as u64, Ordering::AcqRel);
            if before + len as u64 > limit {
                return WriteFault::Fail(io::Error::from_raw_os_error(libc::ENOSPC));
            }
        }
        if self.faults.torn_writes {
            return WriteFault::Tear(len / 2 / 4096 * 4096);
        }
        WriteFault::None
    }
}
