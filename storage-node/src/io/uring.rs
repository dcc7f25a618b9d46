//! The io_uring engine: one ring per device. Callers submit directly (a short critical
//! section: push the entries, `io_uring_enter` without waiting); the ring's own thread only
//! waits for completions and hands each result and buffer back over a oneshot channel,
//! waking the waiting tokio task. The pool's buffers are registered with the ring, and
//! operations on them use the fixed-buffer opcodes.
//!
//! Submitting from the caller's thread saves a thread hop per operation (the first version
//! sent every operation to the ring thread over a channel and an eventfd, which cost about
//! as much as a small write). `io_uring_enter` without waiting does not block: I/O that would
//! block is handed to the kernel's worker pool.
//!
//! # Soundness
//!
//! The kernel reads and writes memory and uses descriptors named by raw pointers and numbers
//! in submission entries, long after they are pushed. These invariants make that sound:
//!
//! 1. **Ops own their resources until completion.** An entry's buffer pointer and fd come
//!    from the `Op` stored in `slab[user_data]` (under the state lock, before the entry is
//!    pushed); the op (its `IoBuf`, whose heap memory never moves, and its `Arc<OwnedFd>`)
//!    leaves the slab only when the last completion with that `user_data` arrives. A caller
//!    that stops waiting only drops the receiving end of the oneshot. So memory is never
//!    freed, and an fd number never closed and reused, while the kernel may still use it.
//! 2. **One submission queue, one completion queue.** `submission_shared` is called only
//!    with the state lock held, so at most one `SubmissionQueue` exists; `completion_shared`
//!    is called only by the ring thread, so at most one `CompletionQueue` exists.
//! 3. **The ring outlives every op.** The ring is dropped only when the last `Arc<Shared>`
//!    goes, and the ring thread holds one until it has seen `closing`, the eventfd read
//!    completed and nothing in flight; callers hold one while submitting. The ring thread's
//!    loop has no panicking paths.
//! 4. **Registered buffers stay allocated.** The pool's buffers are registered once, from
//!    the addresses the pool recorded when it allocated them; `Shared` holds the pool's state
//!    (which owns every buffer not lent out, and which every lent buffer returns to), so
//!    registered memory is never freed while the ring exists. A fixed opcode is used only for
//!    a buffer of this pool, with its own index, over its own region.
//! 5. **The eventfd read targets `wake_buf`**, owned by `Shared` (invariant 3).

use std::cell::UnsafeCell;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use io_uring::{IoUring, opcode, squeue, types};
use tokio::sync::oneshot;

use super::buf::PoolShared;
use super::{BufPool, IoBuf, SyncKind};

const WAKE: u64 = u64::MAX;
/// Set in the `user_data` of the second entry of a linked pair (write, then sync).
const SECOND: u64 = 1 << 62;

type Reply = oneshot::Sender<(io::Result<usize>, Option<IoBuf>)>;

struct Op {
    kind: OpKind,
    reply: Reply,
}

enum OpKind {
    Read {
        fd: Arc<OwnedFd>,
        buf: IoBuf,
        offset: u64,
        len: usize,
    },
    Write {
        fd: Arc<OwnedFd>,
        buf: IoBuf,
        offset: u64,
    },
    Sync {
        fd: Arc<OwnedFd>,
        kind: SyncKind,
    },
    /// A write and a sync linked into one submission: the sync runs only if the write
    /// wrote everything.
    WriteSync {
        fd: Arc<OwnedFd>,
        buf: IoBuf,
        offset: u64,
        kind: SyncKind,
    },
}

impl OpKind {
    fn into_buf(self) -> Option<IoBuf> {
        match self {
            OpKind::Read { buf, .. }
            | OpKind::Write { buf, .. }
            | OpKind::WriteSync { buf, .. } => Some(buf),
            OpKind::Sync { .. } => None,
        }
    }
}

/// An op in flight: it stays in the slab until all its completions arrived.
struct Slot {
    op: Op,
    completions_left: u8,
    first_result: i32,
}

/// What callers and the ring thread share, under the state lock.
struct State {
    slab: Vec<Option<Slot>>,
    free: Vec<usize>,
    in_flight: usize,
}

struct Shared {
    ring: IoUring,
    state: Mutex<State>,
    wake: OwnedFd,
    wake_buf: Box<UnsafeCell<[u8; 8]>>,
    closing: AtomicBool,
    registered: Option<u64>,
    _pool: Arc<PoolShared>,
}

// SAFETY: `wake_buf` is written only by the kernel (the eventfd read) and never read or
// written by Rust code; everything else in `Shared` is `Sync`.
unsafe impl Sync for Shared {}

/// The caller's side of a device's ring.
pub(super) struct Ring {
    shared: Arc<Shared>,
}

impl Ring {
    /// Sets up the ring, registers the pool's buffers and starts the ring thread.
    pub(super) fn start(entries: u32, pool: &BufPool) -> io::Result<Ring> {
        // No COOP_TASKRUN: operations are submitted from tokio's worker threads, and some
        // completions are finished as task work of the submitting thread; without the
        // kernel's interruption, a worker parked in epoll_wait would hold them back.
        let ring = IoUring::new(entries)?;
        let iovecs: Vec<libc::iovec> = pool
            .regions()
            .iter()
            .map(|&(addr, len)| libc::iovec {
                iov_base: addr as *mut libc::c_void,
                iov_len: len,
            })
            .collect();
        // SAFETY: each iovec is a pool buffer's aligned region, allocated when the pool was
        // created and kept alive by `_pool` in `Shared`, which outlives the ring (invariant 4).
        let registered = match unsafe { ring.submitter().register_buffers(&iovecs) } {
            Ok(()) => Some(pool.id()),
            Err(error) => {
                tracing::warn!(%error, "io_uring buffer registration failed, using unregistered buffers");
                None
            }
        };
        let wake = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC)?;
        let shared = Arc::new(Shared {
            ring,
            state: Mutex::new(State {
                slab: Vec::new(),
                free: Vec::new(),
                in_flight: 0,
            }),
            wake,
            wake_buf: Box::new(UnsafeCell::new([0; 8])),
            closing: AtomicBool::new(false),
            registered,
            _pool: pool.keep_alive(),
        });
        if !shared.arm_wake() {
            return Err(io::Error::other("io_uring: cannot queue the wake-up read"));
        }
        let driver = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("nimbus-uring".into())
            .spawn(move || reap(&driver))?;
        Ok(Ring { shared })
    }

    async fn submit(&self, kind: OpKind) -> (io::Result<usize>, Option<IoBuf>) {
        let stopped = || io::Error::other("the io_uring engine has stopped");
        let (reply, done) = oneshot::channel();
        if let Err(op) = self.shared.push(Op { kind, reply }) {
            return (Err(stopped()), op.kind.into_buf());
        }
        done.await.unwrap_or_else(|_| (Err(stopped()), None))
    }

    pub(super) async fn read_at(
        &self,
        fd: &Arc<OwnedFd>,
        buf: IoBuf,
        offset: u64,
        len: usize,
    ) -> (io::Result<usize>, IoBuf) {
        let kind = OpKind::Read {
            fd: Arc::clone(fd),
            buf,
            offset,
            len,
        };
        let (result, buf) = self.submit(kind).await;
        (result, buf.unwrap_or_else(|| IoBuf::new(len)))
    }

    pub(super) async fn write_at(
        &self,
        fd: &Arc<OwnedFd>,
        buf: IoBuf,
        offset: u64,
    ) -> (io::Result<usize>, IoBuf) {
        let len = buf.len();
        let kind = OpKind::Write {
            fd: Arc::clone(fd),
            buf,
            offset,
        };
        let (result, buf) = self.submit(kind).await;
        (result, buf.unwrap_or_else(|| IoBuf::new(len)))
    }

    pub(super) async fn write_sync_at(
        &self,
        fd: &Arc<OwnedFd>,
        buf: IoBuf,
        offset: u64,
        kind: SyncKind,
    ) -> (io::Result<usize>, IoBuf) {
        let len = buf.len();
        let op = OpKind::WriteSync {
            fd: Arc::clone(fd),
            buf,
            offset,
            kind,
        };
        let (result, buf) = self.submit(op).await;
        (result, buf.unwrap_or_else(|| IoBuf::new(len)))
    }

    pub(super) async fn sync(&self, fd: &Arc<OwnedFd>, kind: SyncKind) -> io::Result<()> {
        let kind = OpKind::Sync {
            fd: Arc::clone(fd),
            kind,
        };
        self.submit(kind).await.0.map(|_| ())
    }
}

impl Drop for Ring {
    /// Tells the ring thread to finish what is in flight and exit (never joined here: a drop
    /// must not block a tokio worker).
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::Release);
        self.shared.poke();
    }
}

impl Shared {
    fn poke(&self) {
        // An eventfd write fails only if the counter would overflow: it is already poked.
        let _ = rustix::io::write(&self.wake, &1u64.to_ne_bytes());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock means a panic while holding it, which the code under it does not
        // do; the state is still consistent, so carry on.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues a read of the eventfd, which completes when the ring is poked.
    fn arm_wake(&self) -> bool {
        let _state = self.lock();
        let entry = opcode::Read::new(
            types::Fd(self.wake.as_raw_fd()),
            self.wake_buf.get().cast(),
            8,
        )
        .build()
        .user_data(WAKE);
        // SAFETY: the state lock is held, so this is the only submission queue (invariant 2);
        // `wake_buf` and the eventfd live as long as `Shared` (invariants 3 and 5).
        let pushed = unsafe { self.ring.submission_shared().push(&entry) }.is_ok();
        pushed && self.ring.submit().is_ok()
    }

    /// Stores the op, pushes its entries and submits them; hands the op back if the ring is
    /// closing or has no room.
    fn push(&self, mut op: Op) -> Result<(), Op> {
        let mut state = self.lock();
        if self.closing.load(Ordering::Acquire) {
            return Err(op);
        }
        let linked = matches!(op.kind, OpKind::WriteSync { .. });
        let needed: usize = if linked { 2 } else { 1 };
        let (first, second) = self.entries(&mut op.kind);
        let key = state.free.pop().unwrap_or_else(|| {
            state.slab.push(None);
            state.slab.len() - 1
        });
        let first = first.user_data(key as u64);
        let second = second.map(|e| e.user_data(key as u64 | SECOND));
        state.slab[key] = Some(Slot {
            op,
            completions_left: needed as u8,
            first_result: 0,
        });
        // SAFETY: the state lock is held, so this is the only submission queue (invariant
        // 2). The entries' buffer and fd belong to the op just stored in `slab[key]`, which
        // keeps them until every completion for `key` has arrived (invariant 1).
        let pushed = unsafe {
            let mut sq = self.ring.submission_shared();
            if sq.capacity() - sq.len() < needed {
                Err(())
            } else {
                match &second {
                    Some(second) => sq.push_multiple(&[first, second.clone()]).map_err(|_| ()),
                    None => sq.push(&first).map_err(|_| ()),
                }
            }
        };
        if pushed.is_err() {
            let slot = state.slab[key].take();
            state.free.push(key);
            return slot.map_or(Ok(()), |s| Err(s.op));
        }
        state.in_flight += needed;
        drop(state);
        // Entries pushed are submitted now, or by the next submit of anyone (the ring
        // thread's wait submits too): a failure here delays them, never loses them.
        if let Err(error) = self.ring.submit() {
            tracing::debug!(%error, "io_uring submit deferred");
            self.poke();
        }
        Ok(())
    }

    /// The entries of an op: one, or for a write-and-sync the write (linked) and the sync.
    fn entries(&self, kind: &mut OpKind) -> (squeue::Entry, Option<squeue::Entry>) {
        match kind {
            OpKind::Read {
                fd,
                buf,
                offset,
                len,
            } => {
                let fd = types::Fd(fd.as_raw_fd());
                let len = u32::try_from(*len).unwrap_or(u32::MAX);
                let fixed = self.fixed_index(buf);
                let ptr = buf.data_ptr();
                let read = match fixed {
                    Some(index) => opcode::ReadFixed::new(fd, ptr, len, index)
                        .offset(*offset)
                        .build(),
                    None => opcode::Read::new(fd, ptr, len).offset(*offset).build(),
                };
                (read, None)
            }
            OpKind::Write { fd, buf, offset } => (self.write_entry(fd, buf, *offset), None),
            OpKind::Sync { fd, kind } => (sync_entry(fd, *kind), None),
            OpKind::WriteSync {
                fd,
                buf,
                offset,
                kind,
            } => {
                let write = self
                    .write_entry(fd, buf, *offset)
                    .flags(squeue::Flags::IO_LINK);
                (write, Some(sync_entry(fd, *kind)))
            }
        }
    }

    fn write_entry(&self, fd: &Arc<OwnedFd>, buf: &mut IoBuf, offset: u64) -> squeue::Entry {
        let fd = types::Fd(fd.as_raw_fd());
        let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
        let fixed = self.fixed_index(buf);
        let ptr = buf.data_ptr();
        match fixed {
            Some(index) => opcode::WriteFixed::new(fd, ptr, len, index)
                .offset(offset)
                .build(),
            None => opcode::Write::new(fd, ptr, len).offset(offset).build(),
        }
    }

    /// The registered index of a buffer of this ring's pool.
    fn fixed_index(&self, buf: &IoBuf) -> Option<u16> {
        match (buf.registration(), self.registered) {
            (Some((pool, index)), Some(mine)) if pool == mine => Some(index),
            _ => None,
        }
    }
}

/// The ring thread: waits for completions and answers them, until the ring is closing and
/// nothing is in flight (invariant 3).
fn reap(shared: &Shared) {
    let mut wake_armed = true;
    let mut completions: Vec<(u64, i32)> = Vec::with_capacity(256);
    loop {
        let closing = shared.closing.load(Ordering::Acquire);
        if closing && !wake_armed && shared.lock().in_flight == 0 {
            return;
        }
        if let Err(error) = shared.ring.submitter().submit_and_wait(1) {
            let retry = matches!(
                error.raw_os_error(),
                Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
            );
            if !retry {
                // Never spin: a persistent failure is logged once a millisecond at most.
                tracing::error!(%error, "io_uring wait failed; retrying");
                #[allow(clippy::disallowed_methods)] // the ring's own thread, not a tokio worker
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        completions.clear();
        // SAFETY: only this thread takes the completion queue (invariant 2).
        completions.extend(
            unsafe { shared.ring.completion_shared() }.map(|c| (c.user_data(), c.result())),
        );
        for &(user_data, result) in &completions {
            if user_data == WAKE {
                wake_armed = !shared.closing.load(Ordering::Acquire) && shared.arm_wake();
                continue;
            }
            let done = {
                let mut state = shared.lock();
                state.in_flight = state.in_flight.saturating_sub(1);
                let key = (user_data & !SECOND) as usize;
                match state.slab.get_mut(key).and_then(Option::as_mut) {
                    None => {
                        tracing::error!(user_data, "io_uring completion for an unknown operation");
                        None
                    }
                    Some(slot) => {
                        if user_data & SECOND == 0 {
                            slot.first_result = result;
                        }
                        slot.completions_left -= 1;
                        if slot.completions_left == 0 {
                            state.free.push(key);
                            state.slab[key].take()
                        } else {
                            None
                        }
                    }
                }
            };
            if let Some(slot) = done {
                complete(slot, result);
            }
        }
    }
}

fn sync_entry(fd: &Arc<OwnedFd>, kind: SyncKind) -> squeue::Entry {
    let flags = match kind {
        SyncKind::Data => types::FsyncFlags::DATASYNC,
        SyncKind::All => types::FsyncFlags::empty(),
    };
    opcode::Fsync::new(types::Fd(fd.as_raw_fd()))
        .flags(flags)
        .build()
}

fn os_result(result: i32) -> io::Result<usize> {
    if result < 0 {
        Err(io::Error::from_raw_os_error(-result))
    } else {
        Ok(result as usize)
    }
}

/// Answers an op once all its completions arrived; `last` is the result of the last one.
fn complete(slot: Slot, last: i32) {
    let Slot {
        op, first_result, ..
    } = slot;
    let (result, buf) = match op.kind {
        OpKind::Read { mut buf, .. } => {
            let result = os_result(last);
            if let Ok(n) = result {
                buf.set_len(n.min(buf.capacity()));
            }
            (result, Some(buf))
        }
        OpKind::Write { buf, .. } => (os_result(last), Some(buf)),
        OpKind::Sync { .. } => (os_result(last), None),
        OpKind::WriteSync { buf, .. } => {
            // A failed write fails the op. A short write cancels the sync (the link breaks):
            // the caller sees fewer bytes than it sent and syncs after writing the rest.
            let result = match os_result(first_result) {
                Err(e) => Err(e),
                Ok(n) if last < 0 && last != -libc::ECANCELED => os_result(last).map(|_| n),
                Ok(n) => Ok(n),
            };
            (result, Some(buf))
        }
    };
    // The caller may have stopped waiting; the buffer is then dropped here, after the kernel
    // finished with it.
    let _ = op.reply.send((result, buf));
}
