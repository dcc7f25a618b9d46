//! The one door to disks. Every read, write and sync of a device goes through an [`Engine`]:
//!
//! - `uring`: one io_uring per device; callers submit on their own thread, and a task on
//!   their tokio runtime reaps completions when the ring's eventfd fires and wakes the tasks
//!   waiting for them; pooled buffers are registered with the ring (fixed buffers).
//! - `portable`: the same operations as ordinary blocking calls on tokio's blocking pool.
//!
//! Both lease buffers from the same kind of bounded [`BufPool`], so memory per device is
//! bounded whatever the load. Operations take ownership of their buffer and give it back
//! with the result (`(io::Result<usize>, IoBuf)`): a buffer the kernel may still write into
//! can never be touched or freed by the caller. File-system metadata operations (open,
//! rename, unlink, mkdir, statvfs, listing) are rare and run as blocking calls on tokio's
//! blocking pool for both engines.
//!
//! **Invariant:** only `io::uring` contains `unsafe` code; no call here blocks a tokio worker.

mod buf;
mod faulty;
mod portable;
#[allow(unsafe_code)]
mod uring;

use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

pub use buf::{BUF_ALIGN, BufPool, IoBuf};
pub use faulty::Faults;

use faulty::{FaultState, WriteFault};

/// Which engine to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoEngineKind {
    /// io_uring; fail if unavailable.
    Uring,
    /// Blocking calls on a thread pool.
    Portable,
    /// io_uring when the kernel allows it, else portable (and a log line says so).
    Auto,
}

impl FromStr for IoEngineKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "uring" => Ok(IoEngineKind::Uring),
            "portable" => Ok(IoEngineKind::Portable),
            "auto" => Ok(IoEngineKind::Auto),
            other => Err(format!(
                "unknown I/O engine {other:?}: use uring, portable or auto"
            )),
        }
    }
}

/// Sizes of an engine's resources.
#[derive(Clone, Copy, Debug)]
pub struct EngineConfig {
    /// Buffers in the device's pool: the most I/O in flight at once.
    pub buffers: usize,
    /// Bytes per buffer.
    pub buffer_bytes: usize,
    /// io_uring submission queue entries.
    pub ring_entries: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            buffers: 64,
            buffer_bytes: 1 << 20,
            ring_entries: 256,
        }
    }
}

/// An open file. Clones share the descriptor, which closes when the last clone (and the
/// last operation using it) is gone, so a descriptor number is never reused mid-operation.
#[derive(Clone, Debug)]
pub struct File {
    fd: Arc<OwnedFd>,
    direct: bool,
}

impl File {
    /// Returns whether the file was opened with O_DIRECT.
    #[must_use]
    pub fn is_direct(&self) -> bool {
        self.direct
    }
}

/// How to open a file.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenMode {
    /// Open for writing, creating the file, failing if it exists.
    pub create_new: bool,
    /// Open for writing (an existing file).
    pub write: bool,
    /// Ask for O_DIRECT; falls back to buffered I/O where the file system refuses it.
    pub direct: bool,
}

/// Whether a sync covers metadata too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncKind {
    /// `fdatasync`: data and the metadata needed to read it.
    Data,
    /// `fsync`.
    All,
}

/// A device's I/O engine. Cheap to clone; the engine stops when the last clone is dropped,
/// after finishing every operation in flight.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

struct EngineInner {
    backend: Backend,
    pool: BufPool,
    faults: Option<FaultState>,
}

enum Backend {
    Uring(uring::Ring),
    Portable,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("kind", &self.name())
            .finish()
    }
}

impl Engine {
    /// Starts an engine for one device.
    ///
    /// # Errors
    /// With [`IoEngineKind::Uring`], when io_uring cannot be set up.
    pub fn new(kind: IoEngineKind, config: EngineConfig) -> io::Result<Engine> {
        let pool = BufPool::new(config.buffers, config.buffer_bytes);
        let backend = match kind {
            IoEngineKind::Portable => Backend::Portable,
            IoEngineKind::Uring => Backend::Uring(uring::Ring::start(config.ring_entries, &pool)?),
            IoEngineKind::Auto => match uring::Ring::start(config.ring_entries, &pool) {
                Ok(ring) => Backend::Uring(ring),
                Err(error) => {
                    tracing::warn!(%error, "io_uring unavailable, using the portable I/O engine");
                    Backend::Portable
                }
            },
        };
        Ok(Engine {
            inner: Arc::new(EngineInner {
                backend,
                pool,
                faults: None,
            }),
        })
    }

    /// Starts an engine that injects `faults` into its data operations (tests and the chaos
    /// harness only).
    ///
    /// # Errors
    /// As [`Engine::new`].
    pub fn with_faults(
        kind: IoEngineKind,
        config: EngineConfig,
        faults: Faults,
    ) -> io::Result<Engine> {
        let engine = Engine::new(kind, config)?;
        let inner = Arc::try_unwrap(engine.inner)
            .map_err(|_| io::Error::other("a new engine has one owner"))?;
        Ok(Engine {
            inner: Arc::new(EngineInner {
                faults: Some(FaultState::new(faults)),
                ..inner
            }),
        })
    }

    /// Returns `"uring"` or `"portable"`.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self.inner.backend {
            Backend::Uring(_) => "uring",
            Backend::Portable => "portable",
        }
    }

    /// Leases a buffer from the device's pool, waiting while all are in use.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn buffer(&self) -> IoBuf {
        self.inner.pool.acquire().await
    }

    /// Returns the size of the pool's buffers.
    #[must_use]
    pub fn buffer_bytes(&self) -> usize {
        self.inner.pool.buf_bytes()
    }

    /// Reads up to `len` bytes at `offset` into `buf` (from its start); the buffer comes back
    /// with its length set to the bytes read (0 at end of file).
    ///
    /// # Panics
    /// If `len` exceeds the buffer's capacity.
    pub async fn read_at(
        &self,
        file: &File,
        mut buf: IoBuf,
        offset: u64,
        len: usize,
    ) -> (io::Result<usize>, IoBuf) {
        assert!(len <= buf.capacity(), "read of {len} into a smaller buffer");
        buf.set_len(0);
        if let Some(faults) = &self.inner.faults {
            faults.delay().await;
            if let Some(e) = faults.read() {
                return (Err(e), buf);
            }
        }
        match &self.inner.backend {
            Backend::Uring(ring) => ring.read_at(&file.fd, buf, offset, len).await,
            Backend::Portable => portable::read_at(&file.fd, buf, offset, len).await,
        }
    }

    /// Writes the buffer's bytes in use at `offset`; returns how many were written.
    pub async fn write_at(
        &self,
        file: &File,
        mut buf: IoBuf,
        offset: u64,
    ) -> (io::Result<usize>, IoBuf) {
        if let Some(faults) = &self.inner.faults {
            faults.delay().await;
            match faults.write(buf.len()) {
                WriteFault::None => {}
                WriteFault::Fail(e) => return (Err(e), buf),
                WriteFault::Tear(keep) => {
                    let len = buf.len();
                    buf.set_len(keep);
                    let (_, mut back) = self.write_unfaulted(file, buf, offset).await;
                    back.set_len(len.min(back.capacity()));
                    return (Err(io::Error::from_raw_os_error(libc::EIO)), back);
                }
            }
        }
        self.write_unfaulted(file, buf, offset).await
    }

    async fn write_unfaulted(
        &self,
        file: &File,
        buf: IoBuf,
        offset: u64,
    ) -> (io::Result<usize>, IoBuf) {
        match &self.inner.backend {
            Backend::Uring(ring) => ring.write_at(&file.fd, buf, offset).await,
            Backend::Portable => portable::write_at(&file.fd, buf, offset).await,
        }
    }

    /// Writes all the buffer's bytes at `offset`, retrying short writes.
    ///
    /// # Errors
    /// The first failing write; [`io::ErrorKind::WriteZero`] if the device takes nothing.
    pub async fn write_all_at(
        &self,
        file: &File,
        mut buf: IoBuf,
        offset: u64,
    ) -> (io::Result<()>, IoBuf) {
        let total = buf.len();
        let mut done = 0;
        while done < total {
            let (result, back) = self.write_at(file, buf, offset + done as u64).await;
            buf = back;
            match result {
                Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), buf),
                Ok(n) => {
                    done += n;
                    if done < total {
                        // Short write: shift the rest to the front (rare; O_DIRECT writes
                        // then stay aligned because devices write whole sectors).
                        buf.consume(n);
                    }
                }
                Err(e) => return (Err(e), buf),
            }
        }
        (Ok(()), buf)
    }

    /// Writes all the buffer's bytes at `offset` and makes them durable: a write and a sync
    /// submitted together (linked in io_uring; one trip to the thread pool in the portable
    /// engine), which halves the round trips of small durable writes.
    ///
    /// # Errors
    /// The write's or the sync's error.
    pub async fn write_all_synced_at(
        &self,
        file: &File,
        buf: IoBuf,
        offset: u64,
        kind: SyncKind,
    ) -> (io::Result<()>, IoBuf) {
        if self.inner.faults.is_some() {
            let (result, buf) = self.write_all_at(file, buf, offset).await;
            if let Err(e) = result {
                return (Err(e), buf);
            }
            return (self.sync(file, kind).await, buf);
        }
        let len = buf.len();
        let (result, mut buf) = match &self.inner.backend {
            Backend::Uring(ring) => ring.write_sync_at(&file.fd, buf, offset, kind).await,
            Backend::Portable => portable::write_sync_at(&file.fd, buf, offset, kind).await,
        };
        match result {
            Ok(n) if n == len => (Ok(()), buf),
            Ok(n) => {
                // Short write: the sync did not run. Finish the write, then sync.
                buf.consume(n);
                let (result, buf) = self.write_all_at(file, buf, offset + n as u64).await;
                if let Err(e) = result {
                    return (Err(e), buf);
                }
                (self.sync(file, kind).await, buf)
            }
            Err(e) => (Err(e), buf),
        }
    }

    /// Reads exactly `len` bytes at `offset`, retrying short reads.
    ///
    /// # Errors
    /// [`io::ErrorKind::UnexpectedEof`] if the file ends first.
    pub async fn read_exact_at(
        &self,
        file: &File,
        buf: IoBuf,
        offset: u64,
        len: usize,
    ) -> (io::Result<()>, IoBuf) {
        let (result, mut buf) = self.read_at(file, buf, offset, len).await;
        let mut got = match result {
            Ok(n) => n,
            Err(e) => return (Err(e), buf),
        };
        while got < len {
            // Rare: read the rest into a scratch buffer and append it.
            let scratch = IoBuf::new(len - got);
            let (result, scratch) = self
                .read_at(file, scratch, offset + got as u64, len - got)
                .await;
            match result {
                Ok(0) => return (Err(io::ErrorKind::UnexpectedEof.into()), buf),
                Ok(n) => {
                    buf.extend_from_slice(&scratch.as_slice()[..n]);
                    got += n;
                }
                Err(e) => return (Err(e), buf),
            }
        }
        (Ok(()), buf)
    }

    /// Makes the file's data (and with [`SyncKind::All`], metadata) durable.
    ///
    /// # Errors
    /// What the file system reports.
    pub async fn sync(&self, file: &File, kind: SyncKind) -> io::Result<()> {
        match &self.inner.backend {
            Backend::Uring(ring) => ring.sync(&file.fd, kind).await,
            Backend::Portable => portable::sync(&file.fd, kind).await,
        }
    }

    /// Opens a file.
    ///
    /// # Errors
    /// What the file system reports.
    pub async fn open(&self, path: &Path, mode: OpenMode) -> io::Result<File> {
        let path = path.to_path_buf();
        blocking(move || portable::open(&path, mode)).await
    }

    /// Makes a directory's entries (created, renamed, removed files) durable.
    ///
    /// # Errors
    /// What the file system reports.
    pub async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let dir_path = dir.to_path_buf();
        let fd = blocking(move || std::fs::File::open(&dir_path).map(OwnedFd::from)).await?;
        let file = File {
            fd: Arc::new(fd),
            direct: false,
        };
        self.sync(&file, SyncKind::All).await
    }

    /// Renames `from` to `to`, replacing `to`.
    ///
    /// # Errors
    /// What the file system reports.
    pub async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (from, to) = (from.to_path_buf(), to.to_path_buf());
        blocking(move || std::fs::rename(from, to)).await
    }

    /// Removes a file.
    ///
    /// # Errors
    /// What the file system reports.
    pub async fn remove_file(&self, path: &Path) -> io::Result<()> {
        let path = path.to_path_buf();
        blocking(move || std::fs::remove_file(path)).await
    }

    /// Creates a directory and its parents.
    ///
    /// # Errors
    /// What the file system reports.
    pub async fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let path = path.to_path_buf();
        blocking(move || std::fs::create_dir_all(path)).await
    }

    /// Returns a file's length and the time it last changed.
    ///
    /// # Errors
    /// What the file system reports.
    pub async fn stat(&self, path: &Path) -> io::Result<(u64, std::time::SystemTime)> {
        let path = path.to_path_buf();
        blocking(move || {
            let meta = std::fs::metadata(&path)?;
            Ok((meta.len(), meta.modified()?))
        })
        .await
    }

    /// Returns the names in a directory (empty if it does not exist).
    ///
    /// # Errors
    /// What the file system reports, but for a missing directory.
    pub async fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let path = path.to_path_buf();
        blocking(move || portable::list_dir(&path)).await
    }

    /// Runs file-system metadata work that takes many calls (a directory walk, a batch of
    /// stats) in one trip off the async workers, as the engines run every metadata call.
    ///
    /// # Errors
    /// What `f` returns.
    pub async fn metadata<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        blocking(f).await
    }

    /// Returns whether `path` exists.
    ///
    /// # Errors
    /// What the file system reports, but for a missing path.
    pub async fn try_exists(&self, path: &Path) -> io::Result<bool> {
        let path = path.to_path_buf();
        blocking(move || path.try_exists()).await
    }

    /// Returns a file's length.
    ///
    /// # Errors
    /// What the file system reports.
    pub async fn file_len(&self, file: &File) -> io::Result<u64> {
        let fd = Arc::clone(&file.fd);
        blocking(move || Ok(rustix::fs::fstat(&*fd)?.st_size as u64)).await
    }

    /// Returns `(available, total)` bytes of the file system holding `path`.
    ///
    /// # Errors
    /// What the file system reports.
    pub async fn space(&self, path: &Path) -> io::Result<(u64, u64)> {
        let path = path.to_path_buf();
        blocking(move || {
            let s = rustix::fs::statvfs(&path)?;
            Ok((s.f_bavail * s.f_frsize, s.f_blocks * s.f_frsize))
        })
        .await
    }
}

/// Runs a blocking call on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|join| {
        Err(io::Error::other(format!(
            "blocking I/O task failed: {join}"
        )))
    })
}
