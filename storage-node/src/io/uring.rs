//! The io_uring engine: one ring per device, driven by its own thread.
//!
//! Callers send an operation (which owns its buffer and a clone of its file descriptor) over
//! a bounded channel and poke an eventfd; the ring thread turns it into a submission queue
//! entry, and when the kernel completes it, sends the result and the buffer back over a
//! oneshot channel, waking the waiting tokio task. The pool's buffers are registered with the
//! ring, and operations on them use the fixed-buffer opcodes.
//!
//! # Soundness
//!
//! The kernel reads and writes memory and uses descriptors named by raw pointers and numbers
//! in submission entries, long after `push` returns. These invariants make that sound:
//!
//! 1. **Ops own their resources until completion.** An entry's buffer pointer and fd come
//!    from the `Op` that is stored in `slab[user_data]` before the entry is pushed; the op
//!    (its `IoBuf`, whose heap memory never moves, and its `Arc<OwnedFd>`) leaves the slab
//!    only when the completion with that `user_data` arrives. A caller that stops waiting
//!    (drops its future) only drops the receiving end of the oneshot: the buffer and fd stay
//!    in the slab until the kernel is done. So memory is never freed, and an fd number never
//!    closed and reused, while the kernel may still use it.
//! 2. **The ring outlives every op.** The thread leaves its loop only when the channel is
//!    closed, the slab is empty and the eventfd read has completed; only then are the ring,
//!    the slab and `wake_buf` dropped. The driver has no panicking paths in its loop.
//! 3. **Registered buffers stay allocated.** The pool's buffers are registered once, from the
//!    addresses the pool recorded when it allocated them; the thread holds the pool's shared
//!    state (which owns every buffer not lent out, and which every lent buffer returns to)
//!    until it exits, so registered memory is never freed while the ring exists. A fixed
//!    opcode is used only for a buffer of this pool, with its own index, over its own region.
//! 4. **The eventfd read targets `wake_buf`**, a heap box owned by the thread, covered by
//!    invariant 2.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use io_uring::{IoUring, opcode, squeue, types};
use tokio::sync::{mpsc, oneshot};

use super::buf::PoolShared;
use super::{BufPool, IoBuf, SyncKind};

const WAKE: u64 = u64::MAX;
/// Set in the `user_data` of the second entry of a linked pair (write, then sync).
const SECOND: u64 = 1 << 62;
const CHANNEL_CAPACITY: usize = 1024;

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

/// An op in flight: it stays in the slab until all its completions arrived.
struct Slot {
    op: Op,
    completions_left: u8,
    first_result: i32,
}

/// The caller's side of a device's ring.
pub(super) struct Ring {
    tx: Option<mpsc::Sender<Op>>,
    wake: Arc<OwnedFd>,
}

impl Ring {
    /// Sets up the ring, registers the pool's buffers and starts the ring thread.
    pub(super) fn start(entries: u32, pool: &BufPool) -> io::Result<Ring> {
        // One thread submits and reaps, and it reaps right after every wait: the kernel need
        // not interrupt it to run completion work (COOP_TASKRUN; older kernels lack it).
        let ring = IoUring::builder()
            .setup_coop_taskrun()
            .build(entries)
            .or_else(|_| IoUring::new(entries))?;
        let iovecs: Vec<libc::iovec> = pool
            .regions()
            .iter()
            .map(|&(addr, len)| libc::iovec {
                iov_base: addr as *mut libc::c_void,
                iov_len: len,
            })
            .collect();
        // SAFETY: each iovec is a pool buffer's aligned region, allocated when the pool was
        // created and kept alive by `keep_alive` below, which the ring thread holds until it
        // has dropped the ring (invariant 3).
        let registered = match unsafe { ring.submitter().register_buffers(&iovecs) } {
            Ok(()) => Some(pool.id()),
            Err(error) => {
                tracing::warn!(%error, "io_uring buffer registration failed, using unregistered buffers");
                None
            }
        };
        let wake = Arc::new(rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC,
        )?);
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let driver = Driver {
            ring,
            rx,
            wake: Arc::clone(&wake),
            wake_buf: Box::new([0; 8]),
            slab: Vec::new(),
            free: Vec::new(),
            in_flight: 0,
            registered,
            _pool: pool.keep_alive(),
        };
        std::thread::Builder::new()
            .name("nimbus-uring".into())
            .spawn(move || driver.run())?;
        Ok(Ring { tx: Some(tx), wake })
    }

    fn poke(&self) {
        // An eventfd write fails only if the counter would overflow: it is already poked.
        let _ = rustix::io::write(&*self.wake, &1u64.to_ne_bytes());
    }

    async fn submit(&self, kind: OpKind) -> (io::Result<usize>, Option<IoBuf>) {
        let stopped = || io::Error::other("the io_uring thread has stopped");
        let Some(tx) = &self.tx else {
            return (Err(stopped()), None);
        };
        let (reply, done) = oneshot::channel();
        if let Err(mpsc::error::SendError(op)) = tx.send(Op { kind, reply }).await {
            let buf = match op.kind {
                OpKind::Read { buf, .. }
                | OpKind::Write { buf, .. }
                | OpKind::WriteSync { buf, .. } => Some(buf),
                OpKind::Sync { .. } => None,
            };
            return (Err(stopped()), buf);
        }
        self.poke();
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
    /// Closes the channel and wakes the thread, which finishes what is in flight and exits
    /// on its own (never joined here: a drop must not block a tokio worker).
    fn drop(&mut self) {
        self.tx = None;
        self.poke();
    }
}

/// The ring thread's state. Field order matters only for readers: the loop never exits while
/// anything is in flight (invariant 2).
struct Driver {
    ring: IoUring,
    rx: mpsc::Receiver<Op>,
    wake: Arc<OwnedFd>,
    wake_buf: Box<[u8; 8]>,
    slab: Vec<Option<Slot>>,
    free: Vec<usize>,
    in_flight: usize,
    registered: Option<u64>,
    _pool: Arc<PoolShared>,
}

impl Driver {
    fn run(mut self) {
        let mut pending: VecDeque<Op> = VecDeque::new();
        let mut open = true;
        let mut wake_armed = self.arm_wake();
        let mut kicked = false;
        let mut completions: Vec<(u64, i32)> = Vec::with_capacity(256);
        loop {
            while open {
                match self.rx.try_recv() {
                    Ok(op) => pending.push_back(op),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => open = false,
                }
            }
            while let Some(op) = pending.pop_front() {
                if let Err(op) = self.push(op) {
                    pending.push_front(op);
                    break;
                }
            }
            if !open && wake_armed && !kicked {
                // Complete our own eventfd read so that nothing stays in flight.
                let _ = rustix::io::write(&*self.wake, &1u64.to_ne_bytes());
                kicked = true;
            }
            if !open && !wake_armed && self.in_flight == 0 && pending.is_empty() {
                return;
            }
            if let Err(error) = self.ring.submit_and_wait(1) {
                let retry = matches!(
                    error.raw_os_error(),
                    Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
                );
                if !retry {
                    // Never spin: a persistent failure is logged once a millisecond at most.
                    tracing::error!(%error, "io_uring submit failed; retrying");
                    #[allow(clippy::disallowed_methods)]
                    // the ring's own thread, not a tokio worker
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
            completions.clear();
            completions.extend(self.ring.completion().map(|c| (c.user_data(), c.result())));
            for &(user_data, result) in &completions {
                if user_data == WAKE {
                    wake_armed = open && self.arm_wake();
                    continue;
                }
                self.in_flight -= 1;
                let key = (user_data & !SECOND) as usize;
                let Some(slot) = self.slab.get_mut(key).and_then(Option::as_mut) else {
                    tracing::error!(user_data, "io_uring completion for an unknown operation");
                    continue;
                };
                if user_data & SECOND == 0 {
                    slot.first_result = result;
                }
                slot.completions_left -= 1;
                if slot.completions_left == 0
                    && let Some(slot) = self.slab[key].take()
                {
                    self.free.push(key);
                    complete(slot, result);
                }
            }
        }
    }

    /// Queues a read of the eventfd, which completes when a caller pokes it.
    fn arm_wake(&mut self) -> bool {
        let entry = opcode::Read::new(
            types::Fd(self.wake.as_raw_fd()),
            self.wake_buf.as_mut_ptr(),
            8,
        )
        .build()
        .user_data(WAKE);
        // SAFETY: `wake_buf` and the eventfd live as long as the driver, which outlives every
        // entry it pushes (invariants 2 and 4).
        unsafe { self.ring.submission().push(&entry) }.is_ok()
    }

    /// Turns an op into submission entries (two for a linked write and sync), or hands it
    /// back when the queue has no room.
    fn push(&mut self, mut op: Op) -> Result<(), Op> {
        let linked = matches!(op.kind, OpKind::WriteSync { .. });
        let needed = if linked { 2 } else { 1 };
        {
            let sq = self.ring.submission();
            if sq.capacity() - sq.len() < needed {
                return Err(op);
            }
        }
        let (first, second) = self.entries(&mut op.kind);
        let key = self.free.pop().unwrap_or_else(|| {
            self.slab.push(None);
            self.slab.len() - 1
        });
        let first = first.user_data(key as u64);
        let second = second.map(|e| e.user_data(key as u64 | SECOND));
        self.slab[key] = Some(Slot {
            op,
            completions_left: needed as u8,
            first_result: 0,
        });
        let mut sq = self.ring.submission();
        // SAFETY: the entries' buffer and fd belong to the op just stored in `slab[key]`,
        // which keeps them until every completion for `key` has arrived (invariant 1).
        // There is room for both entries (checked above, and nothing pushed since).
        let pushed = unsafe {
            match &second {
                Some(second) => sq.push_multiple(&[first, second.clone()]),
                None => sq.push(&first),
            }
        };
        drop(sq);
        if pushed.is_err() {
            let slot = self.slab[key].take();
            self.free.push(key);
            return slot.map_or(Ok(()), |s| Err(s.op));
        }
        self.in_flight += needed;
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
