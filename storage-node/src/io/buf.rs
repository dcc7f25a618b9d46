//! Aligned I/O buffers and the bounded pool they are leased from.
//!
//! Every buffer's data starts on a 4096-byte boundary, as O_DIRECT requires; the alignment is
//! established once when the buffer is allocated (an over-allocated boxed slice and the offset
//! of its first aligned byte), without `unsafe`. A boxed slice's memory never moves, so a
//! buffer can be registered with io_uring once and reused for the life of its pool.
//!
//! The pool bounds memory: a request that wants a buffer waits for one to come back. A leased
//! buffer returns to its pool when dropped.

use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

/// Alignment of every buffer's data.
pub const BUF_ALIGN: usize = 4096;

/// An owned, 4096-aligned byte buffer with a length (bytes in use) and a capacity.
#[derive(Debug)]
pub struct IoBuf {
    storage: Box<[u8]>,
    offset: usize,
    capacity: usize,
    len: usize,
    home: Option<(Arc<PoolShared>, u16)>,
}

impl IoBuf {
    /// Returns a buffer of `capacity` bytes (rounded up to [`BUF_ALIGN`]) that belongs to no
    /// pool.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.next_multiple_of(BUF_ALIGN).max(BUF_ALIGN);
        let storage = vec![0u8; capacity + BUF_ALIGN].into_boxed_slice();
        let offset = storage.as_ptr().align_offset(BUF_ALIGN);
        IoBuf {
            storage,
            offset,
            capacity,
            len: 0,
            home: None,
        }
    }

    /// Returns the bytes in use.
    #[must_use]
    pub fn as_slice(&self) -> &[u8] {
        &self.storage[self.offset..self.offset + self.len]
    }

    /// Returns the whole capacity, for filling.
    pub fn as_mut_capacity(&mut self) -> &mut [u8] {
        &mut self.storage[self.offset..self.offset + self.capacity]
    }

    /// Returns the bytes in use.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Returns whether no byte is in use.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Returns the capacity.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Returns the capacity not yet in use.
    #[must_use]
    pub fn remaining(&self) -> usize {
        self.capacity - self.len
    }

    /// Sets the bytes in use (at most the capacity).
    ///
    /// # Panics
    /// If `len` exceeds the capacity: a bug in the caller.
    pub fn set_len(&mut self, len: usize) {
        assert!(
            len <= self.capacity,
            "len {len} beyond capacity {}",
            self.capacity
        );
        self.len = len;
    }

    /// Appends as much of `data` as fits; returns how many bytes were taken.
    pub fn extend_from_slice(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.remaining());
        let at = self.offset + self.len;
        self.storage[at..at + n].copy_from_slice(&data[..n]);
        self.len += n;
        n
    }

    /// Removes the first `n` bytes in use, moving the rest to the front.
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.len);
        let start = self.offset;
        self.storage.copy_within(start + n..start + self.len, start);
        self.len -= n;
    }

    /// The address of the aligned data, for the io_uring module.
    pub(super) fn data_ptr(&mut self) -> *mut u8 {
        self.as_mut_capacity().as_mut_ptr()
    }

    /// The pool id and index of a pooled buffer.
    pub(super) fn registration(&self) -> Option<(u64, u16)> {
        self.home.as_ref().map(|(pool, index)| (pool.id, *index))
    }
}

impl Drop for IoBuf {
    fn drop(&mut self) {
        if let Some((pool, index)) = self.home.take() {
            let storage = std::mem::take(&mut self.storage);
            pool.give_back(index, storage, self.offset);
        }
    }
}

/// A bounded set of equally sized aligned buffers.
#[derive(Debug, Clone)]
pub struct BufPool {
    shared: Arc<PoolShared>,
}

/// A buffer waiting in the pool: its index, its memory and the offset of its aligned start.
type FreeBuf = (u16, Box<[u8]>, usize);

#[derive(Debug)]
pub(super) struct PoolShared {
    id: u64,
    buf_bytes: usize,
    free: Mutex<Vec<FreeBuf>>,
    available: Semaphore,
    /// Address and length of every buffer's aligned data, in index order, for registration.
    regions: Vec<(usize, usize)>,
}

impl PoolShared {
    fn give_back(&self, index: u16, storage: Box<[u8]>, offset: usize) {
        match self.free.lock() {
            Ok(mut free) => free.push((index, storage, offset)),
            // A panic elsewhere poisoned the list: the buffer is freed instead of reused, and
            // the pool shrinks by one. Never wrong, only smaller.
            Err(_) => return,
        }
        self.available.add_permits(1);
    }
}

impl BufPool {
    /// Allocates `count` buffers of `buf_bytes` (rounded up to [`BUF_ALIGN`]).
    ///
    /// # Panics
    /// If `count` exceeds 65,535 (a configuration the caller validates).
    #[must_use]
    pub fn new(count: usize, buf_bytes: usize) -> Self {
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        assert!(
            count <= usize::from(u16::MAX),
            "at most 65,535 buffers per pool"
        );
        let buf_bytes = buf_bytes.next_multiple_of(BUF_ALIGN).max(BUF_ALIGN);
        let mut free = Vec::with_capacity(count);
        let mut regions = Vec::with_capacity(count);
        for i in 0..count {
            let mut buf = IoBuf::new(buf_bytes);
            regions.push((buf.data_ptr() as usize, buf_bytes));
            let storage = std::mem::take(&mut buf.storage);
            free.push((
                u16::try_from(i).expect("checked above"),
                storage,
                buf.offset,
            ));
        }
        free.reverse();
        BufPool {
            shared: Arc::new(PoolShared {
                id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                buf_bytes,
                free: Mutex::new(free),
                available: Semaphore::new(count),
                regions,
            }),
        }
    }

    /// Returns the size of each buffer.
    #[must_use]
    pub fn buf_bytes(&self) -> usize {
        self.shared.buf_bytes
    }

    /// Leases a buffer, waiting while all are in use. Its length starts at 0.
    ///
    /// # Cancel safety
    /// Cancel safe: a lease not yet granted is not taken.
    pub async fn acquire(&self) -> IoBuf {
        let permit = self
            .shared
            .available
            .acquire()
            .await
            .expect("the pool's semaphore is never closed");
        permit.forget();
        let (index, storage, offset) = self
            .shared
            .free
            .lock()
            .ok()
            .and_then(|mut free| free.pop())
            .unwrap_or_else(|| {
                // Only reachable after a poisoned lock dropped buffers: hand out a fresh,
                // unregistered one rather than fail.
                let mut fresh = IoBuf::new(self.shared.buf_bytes);
                (u16::MAX, std::mem::take(&mut fresh.storage), fresh.offset)
            });
        IoBuf {
            storage,
            offset,
            capacity: self.shared.buf_bytes,
            len: 0,
            home: (index != u16::MAX).then(|| (Arc::clone(&self.shared), index)),
        }
    }

    pub(super) fn id(&self) -> u64 {
        self.shared.id
    }

    /// Address and length of each buffer, by index, for io_uring registration.
    pub(super) fn regions(&self) -> &[(usize, usize)] {
        &self.shared.regions
    }

    /// Keeps the pool's memory alive (for the io_uring thread, which registered it).
    pub(super) fn keep_alive(&self) -> Arc<PoolShared> {
        Arc::clone(&self.shared)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned() {
        for cap in [1, 4096, 5000, 1 << 20] {
            let mut b = IoBuf::new(cap);
            assert_eq!(b.data_ptr() as usize % BUF_ALIGN, 0);
            assert!(b.capacity() >= cap);
        }
    }

    #[tokio::test]
    async fn a_pool_lends_what_it_has_and_waits_for_returns() {
        let pool = BufPool::new(2, 8192);
        let a = pool.acquire().await;
        let mut b = pool.acquire().await;
        assert_eq!(b.data_ptr() as usize % BUF_ALIGN, 0);
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), pool.acquire());
        assert!(waiting.await.is_err(), "a third buffer was lent");
        drop(a);
        let c = pool.acquire().await;
        assert_eq!(c.capacity(), 8192);
        assert_eq!(b.extend_from_slice(&[7; 10_000]), 8192);
    }
}
