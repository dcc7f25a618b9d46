//! The checkers: one property of a history per module, each adding its violations and counts
//! to one [`Verdict`].
//!
//! Every (bucket, key) is judged as a linearizable register (`registers`): the system
//! promises read-after-write consistency through quorum index reads.
//!
//! - `reads`: no load GET returns bytes no one wrote on its key, bytes that differ from the
//!   write it names, a write not yet sent, or a state superseded before it was sent. A write
//!   with an unknown outcome must be there whole or not at all: a read of one that is not
//!   intact counts among the corrupt reads.
//! - `durability`: once the cluster healed, every key that was written reads back, and
//!   reads back a legal state; an acknowledged write that is gone is lost.
//! - `listing`: the final listings agree with the final GETs; no listing shows a key no one
//!   wrote.
//! - `availability`: how long and how often the load saw requests end unknown. It finds no
//!   violations: faults are expected to make requests fail.

mod availability;
mod durability;
mod listing;
mod reads;
mod registers;

use serde::Serialize;

use crate::history::{History, Op, Phase, Record};

/// One breach of a property.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// The checker that found it.
    pub checker: &'static str,
    /// The bucket.
    pub bucket: String,
    /// The key (empty when the violation is about a bucket's listing as a whole).
    pub key: String,
    /// What is wrong.
    pub what: String,
    /// The ids of the records involved: the offending read (or listing) first, then the
    /// writes and deletes that make it illegal.
    pub records: Vec<u64>,
}

/// The judgement of a whole history.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Requests sent during the load.
    pub operations: u64,
    /// Acknowledged PUTs and DELETEs, in every phase.
    pub acknowledged_writes: u64,
    /// Keys whose final read lost an acknowledged write.
    pub lost: u64,
    /// Reads that returned bytes no one wrote on their key, bytes that differ from the write
    /// they name (including a partly visible write of unknown outcome), or a write not yet
    /// sent.
    pub corrupt_reads: u64,
    /// Reads that returned a state superseded before they were sent (and, for a final read,
    /// lost no acknowledged write).
    pub stale_reads: u64,
    /// Listings that disagree with the GETs or show a key no one wrote, and final listings
    /// that failed.
    pub listing_errors: u64,
    /// Written keys whose final GETs all failed.
    pub unreadable_after_heal: u64,
    /// Written keys with no final GET: a harness bug.
    pub missing_final_reads: u64,
    /// Whole seconds of the load in which some request ended unknown and none ended
    /// acknowledged.
    pub unavailable_seconds: u64,
    /// Load requests that ended unknown.
    pub unavailable_requests: u64,
    /// Every violation found, by checker then by key.
    pub violations: Vec<Violation>,
}

impl Verdict {
    /// Whether the history breaks no property.
    #[must_use]
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Judges a whole history.
#[must_use]
pub fn check(history: &History) -> Verdict {
    let registers = registers::Registers::new(history);
    let mut verdict = Verdict {
        operations: count(history, |r| r.phase == Phase::Load),
        acknowledged_writes: count(history, |r| r.is_mutation() && r.is_ok()),
        ..Verdict::default()
    };
    reads::check(&registers, &mut verdict);
    durability::check(&registers, &mut verdict);
    listing::check(history, &registers, &mut verdict);
    availability::check(history, &mut verdict);
    verdict
}

fn count(history: &History, keep: impl Fn(&Record) -> bool) -> u64 {
    history.records.iter().filter(|r| keep(r)).count() as u64
}

/// The records of `history` around a violation, for printing: every record on the
/// violation's bucket and key (LISTs of the bucket when the key is empty) and every record it
/// names, in start order, at most `max` of them centred on the violation's first record.
#[must_use]
pub fn context<'h>(history: &'h History, violation: &Violation, max: usize) -> Vec<&'h Record> {
    let mut around: Vec<&Record> = history
        .records
        .iter()
        .filter(|r| {
            // An empty key names the bucket's listings, not every record without a key.
            let same_key = r.bucket == violation.bucket
                && r.key == violation.key
                && (!violation.key.is_empty() || matches!(r.op, Op::List));
            same_key || violation.records.contains(&r.id)
        })
        .collect();
    around.sort_by_key(|r| (r.start_us, r.id));
    let centre = violation
        .records
        .first()
        .and_then(|first| around.iter().position(|r| r.id == *first))
        .unwrap_or(0);
    let from = centre
        .saturating_sub(max / 2)
        .min(around.len().saturating_sub(max));
    around.into_iter().skip(from).take(max).collect()
}

#[cfg(test)]
pub(crate) mod tests;
