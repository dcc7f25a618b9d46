//! Read leases (DESIGN.md, "Index"): a shard's primary answers a read alone, from its own
//! copy, while it holds a lease; without one, reads go to a majority of the replicas.
//!
//! A primary holds every write acknowledged in its epoch (writes go through it) and, having
//! peered, every write acknowledged before (`api::peering`). What it could miss is a write
//! acknowledged by a primary of a *newer* epoch, which a proxy still on the older map would
//! not know of. The lease rules that out, with the metadata leader as the clock's referee:
//!
//! - **Holding.** A node sends a heartbeat at `t`; the leader confirms its leadership with
//!   a quorum and answers with the placement epoch `e` (`HeartbeatResponse::confirmed`). So
//!   no epoch after `e` was committed before `t`. The node holds a lease on `e` until
//!   `t + HOLD` and answers reads of epoch `e` alone until then.
//! - **Waiting.** A device that becomes a shard's primary in epoch `x` (it was not the
//!   shard's primary, as far as it knows, in `x - 1`) takes no write as primary until
//!   `WAIT` after epoch `x` was committed. It knows a time by which `x` was committed: when
//!   it first saw `x` in a request, or a heartbeat answer's receipt less the epoch's age.
//!   Every lease on an epoch before `x` was taken before `x` was committed, so it has run
//!   out by then (`WAIT` exceeds `HOLD` by a margin for clocks that run at slightly
//!   different rates); a write the new primary acknowledges is never missed by a read
//!   the old one answers alone.
//!
//! **Invariant:** pure but for the lock: times are arguments, nothing reads a clock.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How long a confirmed heartbeat answer lets a node answer reads alone, from the
/// heartbeat's sending. Heartbeats come every second by default, so a node that hears
/// from the leader holds its lease without a gap.
pub const HOLD: Duration = Duration::from_secs(2);

/// How long a new primary waits after its epoch was committed before it takes writes:
/// [`HOLD`] and a margin.
pub const WAIT: Duration = Duration::from_millis(2_500);

/// The most epochs whose commit times are kept.
const KEPT_EPOCHS: usize = 16;

/// A node's lease and what it knows of when epochs were committed. See the module
/// documentation.
#[derive(Debug, Default)]
pub struct Leases {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The epoch the last confirmed heartbeat answer named, and when its lease runs out.
    lease: Option<(u64, Instant)>,
    /// Per recent epoch, a time by which it was surely committed.
    committed_by: BTreeMap<u64, Instant>,
}

impl Leases {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a heartbeat sent at `sent` and answered at `received`: a lease on `epoch`
    /// when the answer is `confirmed`, and in any case that `epoch` was committed `age`
    /// before `received` at the latest.
    pub fn heard(
        &self,
        epoch: u64,
        confirmed: bool,
        age: Duration,
        sent: Instant,
        received: Instant,
    ) {
        let mut inner = self.inner();
        // The answer to the latest sending wins (heartbeats go one at a time anyway).
        if confirmed && inner.lease.is_none_or(|(_, until)| until <= sent + HOLD) {
            inner.lease = Some((epoch, sent + HOLD));
        }
        let by = received.checked_sub(age).unwrap_or(received);
        inner.committed(epoch, by);
    }

    /// Records that a request of `epoch` came at `now` (so it was committed by then).
    pub fn saw(&self, epoch: u64, now: Instant) {
        self.inner().committed(epoch, now);
    }

    /// Tells whether the node may answer a read of `epoch` alone at `now`.
    pub fn holds(&self, epoch: u64, now: Instant) -> bool {
        self.inner()
            .lease
            .is_some_and(|(e, until)| e == epoch && now < until)
    }

    /// Returns when a device that becomes a shard's primary in `epoch` may take writes,
    /// [`WAIT`] after the epoch was committed (after `now` when that time is not known).
    pub fn writable_at(&self, epoch: u64, now: Instant) -> Instant {
        let committed = self.inner().committed_by.get(&epoch).copied();
        committed.map_or(now, |by| by.min(now)) + WAIT
    }
}

impl Inner {
    fn committed(&mut self, epoch: u64, by: Instant) {
        let at = self.committed_by.entry(epoch).or_insert(by);
        *at = (*at).min(by);
        while self.committed_by.len() > KEPT_EPOCHS {
            self.committed_by.pop_first();
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_confirmed_answer_grants_a_lease_on_its_epoch_from_the_sending() {
        let t0 = Instant::now();
        let leases = Leases::default();
        assert!(!leases.holds(3, t0));
        leases.heard(3, false, ms(0), t0, t0 + ms(10));
        assert!(!leases.holds(3, t0 + ms(20)), "unconfirmed: no lease");
        leases.heard(3, true, ms(0), t0, t0 + ms(10));
        assert!(leases.holds(3, t0 + ms(20)));
        assert!(!leases.holds(2, t0 + ms(20)), "only on the epoch named");
        assert!(!leases.holds(4, t0 + ms(20)));
        assert!(leases.holds(3, t0 + HOLD - ms(1)));
        assert!(
            !leases.holds(3, t0 + HOLD),
            "it runs from the sending, not the answer"
        );
        leases.heard(4, true, ms(0), t0 + ms(1_000), t0 + ms(1_010));
        assert!(
            !leases.holds(3, t0 + ms(1_020)),
            "a newer epoch ends the older lease"
        );
        assert!(leases.holds(4, t0 + ms(1_020)));
    }

    #[test]
    fn a_new_primary_waits_from_the_earliest_known_commit_of_its_epoch() {
        let t0 = Instant::now();
        let leases = Leases::default();
        assert_eq!(leases.writable_at(5, t0), t0 + WAIT, "unknown: from now");
        leases.saw(5, t0 + ms(100));
        assert_eq!(leases.writable_at(5, t0 + ms(200)), t0 + ms(100) + WAIT);
        // A later sighting changes nothing.
        leases.saw(5, t0 + ms(400));
        assert_eq!(leases.writable_at(5, t0 + ms(500)), t0 + ms(100) + WAIT);
        // A heartbeat answer saying the leader has had epoch 7 for 10 s: long committed.
        leases.heard(7, true, ms(10_000), t0 + ms(19_000), t0 + ms(20_000));
        assert_eq!(
            leases.writable_at(7, t0 + ms(20_000)),
            t0 + ms(10_000) + WAIT
        );
        // Epochs are kept apart.
        assert_eq!(leases.writable_at(6, t0 + ms(300)), t0 + ms(300) + WAIT);
    }

    proptest! {
        /// Whatever answers come in whatever order, a lease never outlives `HOLD` from the
        /// sending of the newest confirmed answer naming its epoch, and a new primary's
        /// wait ends after every lease taken on an older epoch before its own was seen.
        #[test]
        fn no_lease_on_an_older_epoch_outlives_a_new_primarys_wait(
            beats in proptest::collection::vec((0u64..4, any::<bool>(), 0u64..3_000, 0u64..500), 1..20),
            seen_at in 0u64..5_000,
        ) {
            let t0 = Instant::now();
            let leases = Leases::default();
            let mut latest_older_end: Option<Instant> = None;
            let new_epoch = 4;
            for (epoch, confirmed, sent, delay) in beats {
                let sent_at = t0 + ms(sent);
                leases.heard(epoch, confirmed, ms(0), sent_at, sent_at + ms(delay));
                if confirmed {
                    let end = sent_at + HOLD;
                    latest_older_end = Some(latest_older_end.map_or(end, |e| e.max(end)));
                }
            }
            // Epoch 4 is first seen after every heartbeat above was sent (their answers
            // named older epochs, so it was committed after they were sent).
            let seen = t0 + ms(3_000 + seen_at);
            leases.saw(new_epoch, seen);
            let writable = leases.writable_at(new_epoch, seen);
            if let Some(end) = latest_older_end {
                prop_assert!(writable > end);
            }
            for (epoch, at) in [(0, writable), (1, writable), (2, writable), (3, writable)] {
                prop_assert!(!leases.holds(epoch, at));
            }
        }
    }
}
