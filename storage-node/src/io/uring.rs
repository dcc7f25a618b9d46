//! The io_uring engine: one ring per device. Callers submit directly (a short critical
//! section: push the entries, `io_uring_enter` without waiting). Completions come back
//! through tokio's own reactor: an eventfd registered with the ring
//! (`IORING_REGISTER_EVENTFD`) is signalled by the kernel for every completion it posts, a
//! driver task on the callers' runtime watches it (`AsyncFd`), reaps the completion queue
//! and hands each result and buffer back over a oneshot channel, which wakes the waiting
//! task (usually on the same worker thread, so it runs next). The pool's buffers are
//! registered with the ring, and operations on them use the fixed-buffer opcodes.
//!
//! Why this shape: an operation that sleeps in the kernel (a sync, a write that extends a
//! file) runs on io_uring's worker pool, which posts its completion. Before, a thread per
//! ring slept in `io_uring_enter` for completions and then woke the task: two thread
//! wake-ups per operation (the ring thread, then a tokio worker). Through the reactor it is
//! one (the worker parked in `epoll_wait`), which is most of a small durable write's gap to
//! fio (storage-node/README.md has the figures). `io_uring_enter` without waiting does not
//! block: I/O that would block is handed to the kernel's worker pool.
//!
//! The driver task is spawned by the first operation (so an engine may be built outside a
//! runtime) and ends once the ring is closing and nothing is in flight. If its runtime stops
//! first and drops it with operations in flight, a thread takes over until they are reaped
//! (their buffers return to the pool only then, and a caller waiting for a buffer submits
//! nothing that would start a new driver); the next operation after that starts a driver on
//! its own runtime. On a runtime without an I/O driver, a thread that waits in
//! `io_uring_enter` (the former design) does the driver's work for the ring's life. An
//! engine is meant to be driven from one runtime at a time.
//!
//! Measured and left out (storage-node/README.md): reaping on the submitting thread right
//! after `io_uring_enter` (no gain above the noise: a small durable write is never complete
//! that soon, and the driver already runs on the worker that then runs the woken task),
//! `IOSQE_ASYNC` on writes (slower: an O_DIRECT write completes through task work either
//! way, forcing it to the worker pool adds a hop), registered files (an `fget` per operation
//! is noise beside a journal commit), SQPOLL (a polling kernel thread on a 2-core machine),
//! and sharing one sync among concurrent writes of a file (no caller has two syncs of one
//! file in flight: each fragment is its own file).
//!
//! # Soundness
//!
//! The kernel reads and writes memory and uses descriptors named by raw pointers and numbers
//! in submission entries, long after they are pushed. These invariants make that sound:
//!
//! 1. **Ops own their resources until completion.** An entry's buffer pointer and fd come
//!    from the `Op` stored in `slab[user_data]` (under the state lock, before the entry is
//!    pushed); the op (its `IoBuf`, whose heap memory never moves, and its `Arc<OwnedFd>`)
//!    leaves the slab only when the last completion with that `user_data` is reaped. A
//!    caller that stops waiting only drops the receiving end of the oneshot. So memory is
//!    never freed, and an fd number never closed and reused, while the kernel may still use
//!    it. A linked write+sync whose write carries `IOSQE_CQE_SKIP_SUCCESS` posts exactly one
//!    completion, and only once the kernel is done with both entries: the sync's (the write
//!    succeeded in full, then the sync ran), or, if the write failed or fell short, the
//!    write's (the kernel then fails the sync without issuing it, and skips its completion).
//!    Without that feature (before 5.17) a pair waits for both completions. A `user_data`
//!    carries a generation: a completion that does not match its slot's is logged and
//!    ignored, never taken for the op that reused the slot, and not counted as in flight.
//! 2. **One submission queue, one completion queue.** `submission_shared` and
//!    `completion_shared` are called only with the state lock held (or from `Drop`, with
//!    `&mut self`), so at most one `SubmissionQueue` and one `CompletionQueue` exist at a
//!    time, whichever thread reaps (the driver task, the fallback thread or `Drop`).
//! 3. **The ring outlives every op.** The ring is dropped only when the last `Arc<Shared>`
//!    goes; callers hold one while submitting and the driver holds one until the ring is
//!    closing and nothing is in flight. If the driver is dropped early (its runtime shut
//!    down), `Shared`'s `Drop` waits in `io_uring_enter` until every entry in flight has
//!    completed before the ring and the slab are freed. No panicking path holds the lock.
//! 4. **Registered buffers stay allocated.** The pool's buffers are registered once, from
//!    the addresses the pool recorded when it allocated them; `Shared` holds the pool's state
//!    (which owns every buffer not lent out, and which every lent buffer returns to), so
//!    registered memory is never freed while the ring exists. A fixed opcode is used only for
//!    a buffer of this pool, with its own index, over its own region.
//! 5. **No kernel access to Rust memory outside ops.** The eventfd is read and written with
//!    ordinary system calls; the kernel only adds to its counter. It is owned by `Shared`,
//!    and the `AsyncFd` watching it lives inside the driver, which holds an `Arc<Shared>`,
//!    so the descriptor stays open and the same while tokio's reactor has it registered.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use io_uring::{IoUring, opcode, squeue, types};
use tokio::sync::oneshot;

use super::buf::PoolShared;
use super::{BufPool, IoBuf, SyncKind};

mod driver;

use driver::{Driving, drive, wait_failed};

/// Set in the `user_data` of the second entry of a linked pair (write, then sync).
const SECOND: u64 = 1 << 62;
/// A `user_data` is `SECOND | generation << 32 | slab key`: the generation tells a stray
/// completion from one of the op that reuses its key.
const GENERATION_MASK: u64 = (1 << 30) - 1;

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
    generation: u64,
    completions_left: u8,
    /// The result of a linked pair's write, if its completion was posted.
    first_result: Option<i32>,
}

/// What callers and the driver share, under the state lock.
struct State {
    slab: Vec<Option<Slot>>,
    free: Vec<usize>,
    /// Entries pushed whose completion has not been reaped.
    in_flight: usize,
    /// Whether a driver (task or fallback thread) is reaping completions.
    driver: bool,
    next_generation: u64,
}

struct Shared {
    ring: IoUring,
    state: Mutex<State>,
    /// Registered with the ring: the kernel adds to it for every completion it posts, and
    /// `Ring`'s drop adds to it to wake the driver.
    event: OwnedFd,
    closing: AtomicBool,
    /// A submit failed: the driver submits again when it wakes.
    resubmit: AtomicBool,
    /// The kernel supports `IOSQE_CQE_SKIP_SUCCESS` (5.17): a linked pair's write posts a
    /// completion only if it fails or falls short, so a pair costs one wake-up, not two.
    skip_success: bool,
    registered: Option<u64>,
    _pool: Arc<PoolShared>,
}

/// The caller's side of a device's ring.
pub(super) struct Ring {
    shared: Arc<Shared>,
}

fn stopped() -> io::Error {
    io::Error::other("the io_uring engine has stopped")
}

impl Ring {
    /// Sets up the ring, registers the pool's buffers and the completion eventfd. The driver
    /// starts with the first operation.
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
        let event = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )?;
        ring.submitter().register_eventfd(event.as_raw_fd())?;
        let skip_success = ring.params().is_feature_skip_cqe_on_success();
        Ok(Ring {
            shared: Arc::new(Shared {
                ring,
                state: Mutex::new(State {
                    slab: Vec::new(),
                    free: Vec::new(),
                    in_flight: 0,
                    driver: false,
                    next_generation: 0,
                }),
                event,
                closing: AtomicBool::new(false),
                resubmit: AtomicBool::new(false),
                skip_success,
                registered,
                _pool: pool.keep_alive(),
            }),
        })
    }

    async fn submit(&self, kind: OpKind) -> (io::Result<usize>, Option<IoBuf>) {
        let (reply, done) = oneshot::channel();
        if let Err((op, error)) = self.shared.push(Op { kind, reply }) {
            return (Err(error), op.kind.into_buf());
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
    /// Tells the driver to finish what is in flight and stop (never waited for here: a drop
    /// must not block a tokio worker).
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::Release);
        self.shared.poke();
    }
}

impl Drop for Shared {
    /// Normally nothing is in flight by now: the driver held the last other reference until
    /// everything completed. If its runtime dropped it early, wait here for the kernel to
    /// finish with every op's memory before it is freed (invariant 3).
    fn drop(&mut self) {
        loop {
            let state = self
                .state
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if state.in_flight == 0 {
                return;
            }
            if let Err(error) = self.ring.submit_and_wait(1) {
                wait_failed(&error);
            }
            self.reap();
        }
    }
}

impl Shared {
    fn poke(&self) {
        // An eventfd write fails only if the counter would overflow: it is already poked.
        let _ = rustix::io::write(&self.event, &1u64.to_ne_bytes());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock means a panic while holding it, which the code under it does not
        // do; the state is still consistent, so carry on.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the driver may stop: the ring is closing and nothing is in flight.
    fn finished(&self) -> bool {
        self.closing.load(Ordering::Acquire) && self.lock().in_flight == 0
    }

    /// Stores the op, pushes its entries and submits them, starting the driver if none
    /// runs; hands the op back if the ring is closing, has no room, or there is no runtime
    /// to drive it.
    fn push(self: &Arc<Self>, mut op: Op) -> Result<(), (Op, io::Error)> {
        let mut state = self.lock();
        if self.closing.load(Ordering::Acquire) {
            return Err((op, stopped()));
        }
        let runtime = if state.driver {
            None
        } else {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => Some(runtime),
                Err(_) => {
                    let error = io::Error::other("the io_uring engine needs a tokio runtime");
                    return Err((op, error));
                }
            }
        };
        let linked = matches!(op.kind, OpKind::WriteSync { .. });
        let needed: usize = if linked { 2 } else { 1 };
        // Completions to expect: a linked pair's write posts none when it succeeds (its
        // failure posts one and suppresses the cancelled sync's), so a pair posts exactly one.
        let completions = if linked && self.skip_success {
            1
        } else {
            needed
        };
        let (first, second) = self.entries(&mut op.kind);
        let key = state.free.pop().unwrap_or_else(|| {
            state.slab.push(None);
            state.slab.len() - 1
        });
        let generation = state.next_generation;
        state.next_generation = (generation + 1) & GENERATION_MASK;
        let user_data = generation << 32 | key as u64;
        let first = first.user_data(user_data);
        let second = second.map(|e| e.user_data(user_data | SECOND));
        state.slab[key] = Some(Slot {
            op,
            generation,
            completions_left: completions as u8,
            first_result: None,
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
            let full = || io::Error::other("the io_uring submission queue is full");
            return slot.map_or(Ok(()), |s| Err((s.op, full())));
        }
        state.in_flight += completions;
        state.driver = true;
        drop(state);
        if let Some(runtime) = runtime {
            // Owned by the ring: it ends once the ring is closing and has drained. The guard
            // exists before the task, so a task dropped unpolled still marks itself gone.
            drop(runtime.spawn(drive(Driving(Some(Arc::clone(self))))));
        }
        // Entries pushed are submitted now, or by the next submit of anyone (the driver
        // submits again when told to): a failure here delays them, never loses them.
        if let Err(error) = self.ring.submit() {
            tracing::debug!(%error, "io_uring submit deferred");
            self.resubmit.store(true, Ordering::Release);
            self.poke();
        }
        Ok(())
    }

    /// Takes every completion the ring holds and answers the ops they finish.
    fn reap(&self) {
        let mut finished = Vec::new();
        {
            let mut state = self.lock();
            loop {
                // SAFETY: the state lock is held, so this is the only completion queue
                // (invariant 2).
                let cq = unsafe { self.ring.completion_shared() };
                for entry in cq {
                    let (user_data, result) = (entry.user_data(), entry.result());
                    if let Some(slot) = state.complete_entry(user_data, result) {
                        finished.push((slot, result, user_data & SECOND != 0));
                    }
                }
                // SAFETY: the state lock is held, so this is the only submission queue
                // (invariant 2); it is only read.
                let overflow = unsafe { self.ring.submission_shared() }.cq_overflow();
                if !overflow {
                    break;
                }
                // Completions the queue had no room for wait in the kernel: an enter with
                // GETEVENTS (which `submit` adds on overflow) moves them in.
                if let Err(error) = self.ring.submit() {
                    tracing::debug!(%error, "io_uring overflow flush failed");
                    break;
                }
            }
        }
        for (slot, result, second) in finished {
            complete(slot, result, second);
        }
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
                    .flags(if self.skip_success {
                        squeue::Flags::IO_LINK | squeue::Flags::SKIP_SUCCESS
                    } else {
                        squeue::Flags::IO_LINK
                    });
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

impl State {
    /// Records a completion; returns the op's slot once all its completions arrived.
    fn complete_entry(&mut self, user_data: u64, result: i32) -> Option<Slot> {
        let key = (user_data & u64::from(u32::MAX)) as usize;
        let generation = (user_data >> 32) & GENERATION_MASK;
        let Some(slot) = self
            .slab
            .get_mut(key)
            .and_then(Option::as_mut)
            .filter(|slot| slot.generation == generation)
        else {
            // Not one of the completions counted in flight: leave the count alone.
            tracing::error!(
                user_data,
                result,
                "io_uring completion for an unknown operation"
            );
            return None;
        };
        self.in_flight = self.in_flight.saturating_sub(1);
        if user_data & SECOND == 0 {
            slot.first_result = Some(result);
        }
        slot.completions_left -= 1;
        if slot.completions_left > 0 {
            return None;
        }
        self.free.push(key);
        self.slab[key].take()
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

/// Answers an op once all its completions arrived; `last` is the result of the last one,
/// `last_second` whether that was a linked pair's sync.
fn complete(slot: Slot, last: i32, last_second: bool) {
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
            // the caller sees fewer bytes than it sent and syncs after writing the rest. No
            // write completion means it was skipped on success: everything was written.
            let result = match first_result.map(os_result) {
                None => os_result(last).map(|_| buf.len()),
                Some(Err(e)) => Err(e),
                Some(Ok(n)) if last_second && last < 0 && last != -libc::ECANCELED => {
                    os_result(last).map(|_| n)
                }
                Some(Ok(n)) => Ok(n),
            };
            (result, Some(buf))
        }
    };
    // The caller may have stopped waiting; the buffer is then dropped here, after the kernel
    // finished with it.
    let _ = op.reply.send((result, buf));
}
