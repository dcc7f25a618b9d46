//! MD5 of many bodies side by side.
//!
//! Every single-part S3 object needs its body's MD5 (the ETag, and the check of a client's
//! `Content-MD5`). One body's MD5 is a chain, each 64-byte block needing the state the block
//! before left, so it runs at about 0.5–0.7 GiB/s on one core here: in a profile of 64 MiB
//! PUTs at 16 clients it was a fifth of all the machine's samples. Independent bodies can
//! share one core's SIMD lanes (`md5-many`: 16 bodies at once with AVX-512, 8 with AVX2): 16
//! bodies in lockstep hash at about 5 GiB/s in all here, 48 at 13 GiB/s. So a large body
//! hands its chunks to a hashing thread (one per 8 cores), which gathers them per body and
//! hashes the bodies that have a full stride waiting together, the same number of bytes from
//! each.
//!
//! Only lockstep pays: `md5-many` hashes inputs of unequal lengths at 0.2 GiB/s here, below
//! one body alone. So a round always gives every lane the same whole strides, fills unused
//! lanes of a group with zeros, and a body hashes alone (on the fast one-body path) when too
//! few bodies are waiting to fill a quarter of a group, or at its end.
//!
//! A small body is hashed where it is read ([`Md5Body::Here`]): a hop to the thread would
//! cost more than its few blocks.
//!
//! **Invariants:**
//! - A body's bytes are hashed in the order they were sent: chunks are appended to the
//!   body's pending bytes in channel order, and hashing always takes pending bytes from the
//!   front.
//! - A body's digest is answered only once every chunk sent before it was hashed: the request
//!   comes through the same channel, after them, and hashes whatever is pending first.
//! - Pending bytes stay bounded: a body with [`MAX_PENDING`] bytes waiting is hashed at once,
//!   so the thread holds at most that much per body.
//! - The thread never blocks a tokio worker: senders wait for room in the channel
//!   asynchronously; only the thread itself blocks, on an empty channel.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use md5_many::{Md5Many, Md5State};
use tokio::sync::{mpsc, oneshot};

use crate::error::DataError;

/// Bodies of at least this many bytes are hashed on a hashing thread.
pub const LANES_MIN_BYTES: u64 = 256 * 1024;

/// Messages the thread may have waiting.
const CHANNEL: usize = 256;

/// Cores per hashing thread.
const CORES_PER_THREAD: usize = 8;

/// Bytes each lane hashes per step of a round.
const STRIDE: usize = 16 * 1024;

/// A body with this many bytes pending starts a lockstep round with whatever company it has
/// (if enough), and no round takes more than this from a body. Chunks from the HTTP layer
/// can be hundreds of KiB: bodies must gather several before a round, or rounds find little
/// company.
const ROUND_PENDING: usize = 64 * STRIDE;

/// A body with this many bytes pending is hashed now, alone if it must.
const MAX_PENDING: usize = 4 * ROUND_PENDING;

/// How many groups of lanes one round may fill: `md5-many` interleaves up to three.
const MAX_GROUPS: usize = 3;

/// The handle of the hashing threads; clones share them. A thread ends once every handle
/// and every body using it are gone.
#[derive(Clone, Debug)]
pub struct Md5Lanes {
    threads: Arc<[mpsc::Sender<Message>]>,
    next: Arc<AtomicUsize>,
}

impl Md5Lanes {
    /// Starts the hashing threads: one per 8 cores, at least one. One
    /// thread hashes at least 0.7 GiB/s (bodies alone) and up to 13 GiB/s (in lockstep), so
    /// a large proxy does not wait on one thread.
    ///
    /// # Errors
    /// The operating system refused a thread.
    pub fn start() -> std::io::Result<Self> {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let threads = (cores / CORES_PER_THREAD).max(1);
        let mut senders = Vec::with_capacity(threads);
        for i in 0..threads {
            let (tx, rx) = mpsc::channel(CHANNEL);
            std::thread::Builder::new()
                .name(format!("md5-lanes-{i}"))
                .spawn(move || Lanes::new(Md5Many::new()).run(rx))?;
            senders.push(tx);
        }
        Ok(Md5Lanes {
            threads: senders.into(),
            next: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// A new body's MD5: on a hashing thread (each in turn) if it is `declared` large
    /// enough, else where it is read.
    #[must_use]
    pub fn body(&self, declared: u64) -> Md5Body {
        if declared < LANES_MIN_BYTES {
            return Md5Body::here();
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.threads.len();
        Md5Body::Lanes {
            body: Arc::new(Mutex::new(Pending::default())),
            tx: self.threads[i].clone(),
        }
    }
}

/// One body's MD5 under way.
#[derive(Debug)]
pub enum Md5Body {
    /// Hashed by the caller, as the chunks arrive.
    Here(Md5State),
    /// Hashed by a hashing thread.
    Lanes {
        /// Only the thread touches it.
        body: Arc<Mutex<Pending>>,
        tx: mpsc::Sender<Message>,
    },
}

impl Md5Body {
    /// A body hashed where it is read, whatever its size.
    #[must_use]
    pub fn here() -> Self {
        Md5Body::Here(Md5State::new())
    }

    /// Adds the body's next chunk.
    ///
    /// # Errors
    /// [`DataError::Internal`] if the hashing thread is gone.
    pub async fn update(&mut self, chunk: &Bytes) -> Result<(), DataError> {
        match self {
            Md5Body::Here(state) => {
                state.update(chunk);
                Ok(())
            }
            Md5Body::Lanes { body, tx } => {
                let message = Message {
                    body: Arc::clone(body),
                    what: What::Chunk(chunk.clone()),
                };
                tx.send(message).await.map_err(|_| gone())
            }
        }
    }

    /// The body's MD5, once every chunk added is hashed.
    ///
    /// # Errors
    /// [`DataError::Internal`] if the hashing thread is gone.
    pub async fn finish(self) -> Result<[u8; 16], DataError> {
        match self {
            Md5Body::Here(state) => Ok(state.finalize()),
            Md5Body::Lanes { body, tx } => {
                let (reply, digest) = oneshot::channel();
                let message = Message {
                    body,
                    what: What::Digest(reply),
                };
                tx.send(message).await.map_err(|_| gone())?;
                digest.await.map_err(|_| gone())
            }
        }
    }
}

fn gone() -> DataError {
    DataError::Internal("the MD5 hashing thread is gone".into())
}

/// A body's state on the thread: the MD5 of what was hashed, and the bytes received since
/// (`buf[start..]`; hashed bytes are skipped, and moved out only once they are half the
/// buffer, so each byte is moved at most about once).
#[derive(Debug, Default)]
pub struct Pending {
    md5: Md5State,
    buf: Vec<u8>,
    start: usize,
}

impl Pending {
    /// The bytes waiting.
    fn waiting(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Whole strides waiting.
    fn strides(&self) -> usize {
        self.waiting().len() / STRIDE
    }

    /// Appends received bytes.
    fn push(&mut self, chunk: &[u8]) {
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(chunk);
    }

    /// Marks the first `len` waiting bytes hashed.
    fn consume(&mut self, len: usize) {
        self.start += len;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }

    /// Hashes the waiting whole strides on the one-body path.
    fn hash_strides_alone(&mut self) {
        let whole = self.strides() * STRIDE;
        self.md5.update(&self.buf[self.start..self.start + whole]);
        self.consume(whole);
    }

    /// Hashes everything waiting on the one-body path.
    fn hash_alone(&mut self) {
        self.md5.update(&self.buf[self.start..]);
        self.consume(self.buf.len() - self.start);
    }
}

/// A body's chunk, or its request for the digest.
#[derive(Debug)]
pub struct Message {
    body: Arc<Mutex<Pending>>,
    what: What,
}

#[derive(Debug)]
enum What {
    Chunk(Bytes),
    Digest(oneshot::Sender<[u8; 16]>),
}

/// The thread's state: the bodies with bytes pending.
struct Lanes {
    engine: Md5Many,
    /// Bodies with bytes pending, each once.
    active: Vec<Arc<Mutex<Pending>>>,
    /// Zeros, the input of the lanes no body fills.
    zeros: Vec<u8>,
    /// Bytes of bodies hashed in lockstep (for the tests).
    together: u64,
}

impl Lanes {
    fn new(engine: Md5Many) -> Self {
        Lanes {
            engine,
            active: Vec::new(),
            zeros: vec![0; ROUND_PENDING],
            together: 0,
        }
    }

    /// Takes messages and hashes until every sender is gone.
    fn run(mut self, mut rx: mpsc::Receiver<Message>) {
        while let Some(message) = rx.blocking_recv() {
            self.take(message);
            self.hash();
        }
    }

    fn take(&mut self, message: Message) {
        match message.what {
            What::Chunk(chunk) => {
                let was_idle = {
                    let mut pending = lock(&message.body);
                    let idle = pending.waiting().is_empty();
                    pending.push(&chunk);
                    idle
                };
                if was_idle && !self.active.iter().any(|b| Arc::ptr_eq(b, &message.body)) {
                    self.active.push(message.body);
                }
            }
            What::Digest(reply) => {
                let digest = {
                    let mut pending = lock(&message.body);
                    pending.hash_alone();
                    pending.md5.finalize()
                };
                self.active.retain(|b| !Arc::ptr_eq(b, &message.body));
                let _ = reply.send(digest); // a caller that went away needs no answer
            }
        }
    }

    /// Hashes the bodies that have whole strides waiting. In lockstep rounds, as long as
    /// enough of them wait to pay ([`Lanes::company`]), once they fill a group of lanes or
    /// one of them has [`ROUND_PENDING`] bytes waiting. Alone, a body with [`MAX_PENDING`]
    /// bytes waiting and too little company. Bytes that need not be hashed yet wait for
    /// company, even when the channel is empty: a body's last bytes are hashed when its
    /// digest is asked for.
    fn hash(&mut self) {
        // A body no one holds any more (its PUT failed) is dropped.
        self.active.retain(|b| Arc::strong_count(b) > 1);
        let lanes = self.engine.lanes();
        loop {
            let ready: Vec<Arc<Mutex<Pending>>> = self
                .active
                .iter()
                .filter(|b| lock(b).strides() > 0)
                .cloned()
                .collect();
            let due = ready
                .iter()
                .any(|b| lock(b).waiting().len() >= ROUND_PENDING);
            if ready.len() >= self.company() && (due || ready.len() >= lanes) {
                let group = self.choose(ready);
                self.hash_together(&group);
                continue;
            }
            for body in &ready {
                let mut pending = lock(body);
                if pending.waiting().len() >= MAX_PENDING {
                    pending.hash_strides_alone();
                }
            }
            break;
        }
        self.active.retain(|b| !lock(b).waiting().is_empty());
    }

    /// The fewest bodies a lockstep round pays for: a group of lanes costs about as much
    /// whatever fills it, and one lane of it hashes about half as fast as a body alone, so a
    /// quarter of a group (at least 2 bodies).
    fn company(&self) -> usize {
        (self.engine.lanes() / 4).max(2)
    }

    /// The bodies of the next lockstep round, from the `ready` ones: those with the most
    /// bytes waiting, as many as hash the most bytes in all (a round takes as much from each
    /// as the least of them has), at least [`Lanes::company`] and at most
    /// [`MAX_GROUPS`] groups. Taking from the fullest first keeps bodies level, so that the
    /// next rounds find company again instead of leaving one body to hash alone.
    fn choose(&self, mut ready: Vec<Arc<Mutex<Pending>>>) -> Vec<Arc<Mutex<Pending>>> {
        let mut strides: Vec<(usize, Arc<Mutex<Pending>>)> = ready
            .drain(..)
            .map(|b| {
                let strides = lock(&b).strides();
                (strides, b)
            })
            .collect();
        strides.sort_by_key(|s| std::cmp::Reverse(s.0));
        let most = strides.len().min(self.engine.lanes() * MAX_GROUPS);
        let company = self.company().min(most);
        let best = (company..=most)
            .max_by_key(|&n| n * strides[n - 1].0)
            .unwrap_or(most);
        strides.truncate(best);
        strides.into_iter().map(|(_, b)| b).collect()
    }

    /// Hashes the same whole strides of every body of `group` in lockstep, lanes no body
    /// fills hashing zeros.
    fn hash_together(&mut self, group: &[Arc<Mutex<Pending>>]) {
        let lanes = self.engine.lanes();
        let mut guards: Vec<MutexGuard<'_, Pending>> = group.iter().map(|b| lock(b)).collect();
        let strides = guards.iter().map(|p| p.strides()).min().unwrap_or(0);
        let len = (strides * STRIDE).min(self.zeros.len());
        if len == 0 {
            return;
        }
        let width = group.len().div_ceil(lanes) * lanes;
        let mut states: Vec<Md5State> = guards.iter().map(|p| p.md5).collect();
        states.resize(width, Md5State::new());
        let mut inputs: Vec<&[u8]> = guards.iter().map(|p| &p.waiting()[..len]).collect();
        inputs.resize(width, &self.zeros[..len]);
        self.engine.update_many(&mut states, &inputs);
        drop(inputs);
        self.together += (len * group.len()) as u64;
        for (pending, state) in guards.iter_mut().zip(states) {
            pending.md5 = state;
            pending.consume(len);
        }
    }
}

/// The state behind a body's lock. The thread alone locks it, and nothing leaves it
/// half-updated where a panic could strike, so a poisoned lock still holds a valid state.
fn lock(body: &Mutex<Pending>) -> MutexGuard<'_, Pending> {
    body.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use md5::Digest as _;
    use proptest::prelude::*;

    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .expect("a runtime")
    }

    /// `len` bytes that differ with `seed`.
    fn pattern(len: usize, seed: u32) -> Vec<u8> {
        (0..len as u32)
            .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect()
    }

    /// Splits `data` at the given cut points (taken modulo its length, sorted).
    fn chunks_of(data: &[u8], cuts: &[usize]) -> Vec<Bytes> {
        let mut at: Vec<usize> = cuts
            .iter()
            .map(|c| if data.is_empty() { 0 } else { c % data.len() })
            .collect();
        at.push(0);
        at.push(data.len());
        at.sort_unstable();
        at.windows(2)
            .map(|w| Bytes::copy_from_slice(&data[w[0]..w[1]]))
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Concurrent bodies of any sizes, cut into chunks anywhere, some hashed on the
        /// lanes thread (alone, or in lockstep with others) and some where they are read,
        /// each get the MD5 of their bytes.
        #[test]
        fn every_body_gets_its_own_md5(
            bodies in prop::collection::vec(
                (0..(6 * STRIDE), any::<u32>(), prop::collection::vec(any::<usize>(), 0..12), any::<bool>()),
                1..40,
            ),
        ) {
            let rt = runtime();
            let lanes = rt.block_on(async { Md5Lanes::start() }).expect("the thread");
            let datas: Vec<Vec<u8>> = bodies
                .iter()
                .map(|(len, seed, _, _)| pattern(*len, *seed))
                .collect();
            let tasks: Vec<_> = bodies
                .iter()
                .zip(&datas)
                .map(|((_, _, cuts, on_lanes), data)| {
                    let declared = if *on_lanes { LANES_MIN_BYTES } else { 0 };
                    let mut md5 = lanes.body(declared);
                    let chunks = chunks_of(data, cuts);
                    rt.spawn(async move {
                        for chunk in &chunks {
                            md5.update(chunk).await?;
                            tokio::task::yield_now().await;
                        }
                        md5.finish().await
                    })
                })
                .collect();
            for (data, task) in datas.iter().zip(tasks) {
                let got = rt.block_on(task).expect("the task").expect("a digest");
                let want: [u8; 16] = md5::Md5::digest(data).into();
                prop_assert_eq!(got, want);
            }
        }
    }

    /// Many large bodies at once, in chunks as the HTTP layer hands them over: the case the
    /// lanes are for.
    #[test]
    fn large_bodies_side_by_side() {
        let rt = runtime();
        let lanes = rt
            .block_on(async { Md5Lanes::start() })
            .expect("the thread");
        let bodies: Vec<Vec<u8>> = (0..20u32)
            .map(|b| pattern((1 << 20) + b as usize * 4099, b))
            .collect();
        let tasks: Vec<_> = bodies
            .iter()
            .map(|data| {
                let mut md5 = lanes.body(data.len() as u64);
                assert!(matches!(md5, Md5Body::Lanes { .. }));
                let data = Bytes::copy_from_slice(data);
                rt.spawn(async move {
                    for at in (0..data.len()).step_by(65_536 - 17) {
                        md5.update(&data.slice(at..data.len().min(at + 65_536 - 17)))
                            .await?;
                    }
                    md5.finish().await
                })
            })
            .collect();
        for (data, task) in bodies.iter().zip(tasks) {
            let got = rt.block_on(task).expect("the task").expect("a digest");
            let want: [u8; 16] = md5::Md5::digest(data).into();
            assert_eq!(got, want);
        }
    }

    /// Bodies that arrive side by side are hashed in lockstep, and each still gets its own
    /// MD5. Drives the thread's state directly, so the interleaving is the test's.
    #[test]
    fn bodies_side_by_side_share_lanes() {
        let mut lanes = Lanes::new(Md5Many::new());
        let (tx, _rx) = mpsc::channel(1);
        let bodies: Vec<(Vec<u8>, Md5Body)> = (0..20)
            .map(|b| {
                let body = Md5Body::Lanes {
                    body: Arc::new(Mutex::new(Pending::default())),
                    tx: tx.clone(),
                };
                (pattern(3 * ROUND_PENDING + b * 1000 + 1, b as u32), body)
            })
            .collect();
        let chunk = 100_003;
        let longest = bodies.iter().map(|(d, _)| d.len()).max().unwrap_or(0);
        for at in (0..longest).step_by(chunk) {
            for (data, body) in &bodies {
                let Md5Body::Lanes { body, .. } = body else {
                    unreachable!()
                };
                if at < data.len() {
                    let piece = Bytes::copy_from_slice(&data[at..data.len().min(at + chunk)]);
                    lanes.take(Message {
                        body: Arc::clone(body),
                        what: What::Chunk(piece),
                    });
                    lanes.hash();
                }
            }
        }
        let total: usize = bodies.iter().map(|(d, _)| d.len()).sum();
        for (data, body) in &bodies {
            let Md5Body::Lanes { body, .. } = body else {
                unreachable!()
            };
            let (reply, mut digest) = oneshot::channel();
            lanes.take(Message {
                body: Arc::clone(body),
                what: What::Digest(reply),
            });
            let want: [u8; 16] = md5::Md5::digest(data).into();
            assert_eq!(digest.try_recv().expect("answered at once"), want);
        }
        assert!(
            lanes.together as usize > total / 2,
            "{} of {total} bytes hashed in lockstep",
            lanes.together
        );
    }

    /// A body with no company hashes alone, holding no more than its bound.
    #[test]
    fn one_large_body_alone() {
        let rt = runtime();
        let lanes = rt
            .block_on(async { Md5Lanes::start() })
            .expect("the thread");
        let data = Bytes::from(pattern(2 * MAX_PENDING + 12_345, 7));
        let digest = rt.block_on(async {
            let mut md5 = lanes.body(data.len() as u64);
            for at in (0..data.len()).step_by(300_001) {
                md5.update(&data.slice(at..data.len().min(at + 300_001)))
                    .await?;
            }
            md5.finish().await
        });
        let want: [u8; 16] = md5::Md5::digest(&data).into();
        assert_eq!(digest.expect("a digest"), want);
    }

    /// A body abandoned halfway (its PUT failed) costs nothing to the others.
    #[test]
    fn an_abandoned_body_leaves_the_others_alone() {
        let rt = runtime();
        let lanes = rt
            .block_on(async { Md5Lanes::start() })
            .expect("the thread");
        let digest = rt.block_on(async {
            let mut abandoned = lanes.body(LANES_MIN_BYTES);
            abandoned
                .update(&Bytes::from_static(b"half a body"))
                .await?;
            drop(abandoned);
            let mut kept = lanes.body(LANES_MIN_BYTES);
            kept.update(&Bytes::from_static(b"abc")).await?;
            kept.finish().await
        });
        assert_eq!(
            hex::encode(digest.expect("a digest")),
            "900150983cd24fb0d6963f7d28e17f72"
        );
    }
}
