//! Listings agree with the GETs: once the cluster healed, a bucket's final listing names
//! exactly the keys whose final GET returns an object; during the load, a listing names no
//! key that no PUT may have written. Load listings are not judged further: a listing merges
//! index shards and need not be a snapshot of one instant.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use super::registers::Registers;
use super::{Verdict, Violation};
use crate::history::{History, Observed, Op, Phase, Record};

const CHECKER: &str = "listing";

/// Judges every acknowledged listing, and flags final listings that failed.
pub(super) fn check(history: &History, registers: &Registers<'_>, verdict: &mut Verdict) {
    let written: HashSet<(&str, &str)> = registers
        .by_key
        .iter()
        .filter(|(_, register)| {
            register
                .records
                .iter()
                .any(|r| matches!(r.op, Op::Put { .. }) && r.may_have_applied())
        })
        .map(|(&key, _)| key)
        .collect();
    let finals = final_reads(registers);
    let listings = history.records.iter().filter(|r| matches!(r.op, Op::List));
    for listing in listings {
        let mut violation = |key: &str, what: String, records: Vec<u64>| {
            verdict.listing_errors += 1;
            verdict.violations.push(Violation {
                checker: CHECKER,
                bucket: listing.bucket.clone(),
                key: key.to_owned(),
                what,
                records,
            });
        };
        if listing.phase == Phase::Final && !listing.is_ok() {
            violation("", "final listing failed".to_owned(), vec![listing.id]);
            continue;
        }
        if !listing.is_ok() {
            continue;
        }
        let listed: BTreeSet<&str> = match &listing.observed {
            Observed::Keys(keys) => keys.iter().map(String::as_str).collect(),
            _ => BTreeSet::new(),
        };
        let bucket = listing.bucket.as_str();
        for &key in &listed {
            let read = finals.get(&(bucket, key));
            if listing.phase == Phase::Final && read.is_some_and(|r| reads_back(r)) {
                continue;
            }
            if listing.phase == Phase::Final
                && let Some(read) = read
            {
                violation(
                    key,
                    format!("listing has key {key} that reads as absent"),
                    vec![listing.id, read.id],
                );
            } else if !written.contains(&(bucket, key)) {
                violation(
                    key,
                    format!("listing shows key {key}, which no one wrote"),
                    vec![listing.id],
                );
            }
        }
        if listing.phase == Phase::Load {
            continue;
        }
        let missed = finals
            .range((bucket, "")..)
            .take_while(|((b, _), _)| *b == bucket)
            .filter(|((_, key), read)| reads_back(read) && !listed.contains(key));
        for ((_, key), read) in missed {
            violation(
                key,
                format!("listing misses key {key} that reads back"),
                vec![listing.id, read.id],
            );
        }
    }
}

/// The last-answered acknowledged final GET of every key that has one.
fn final_reads<'h>(registers: &Registers<'h>) -> BTreeMap<(&'h str, &'h str), &'h Record> {
    registers
        .by_key
        .iter()
        .filter_map(|(&key, register)| {
            let last = register
                .records
                .iter()
                .copied()
                .filter(|r| matches!(r.op, Op::Get { .. }) && r.phase == Phase::Final)
                .filter(|r| r.is_ok())
                .max_by_key(|r| (r.end_us, r.id))?;
            Some((key, last))
        })
        .collect()
}

fn reads_back(read: &Record) -> bool {
    matches!(read.observed, Observed::Object { .. })
}

#[cfg(test)]
mod tests {
    use super::super::check;
    use super::super::tests::{Builder, keys, object, ok, unknown};
    use crate::history::{Observed, Phase};

    fn two_keys() -> Builder {
        let mut h = Builder::new();
        h.put("a", 1, (0, 10), ok());
        h.put("b", 2, (0, 10), ok());
        h.delete("b", (20, 30), ok());
        h.final_get("a", 200, object(1));
        h.final_get("b", 200, Observed::NotFound);
        h
    }

    #[test]
    fn final_listing_matching_the_reads_passes() {
        let mut h = two_keys();
        h.list((15, 16), Phase::Load, ok(), keys(&["a", "b"]));
        h.list((300, 310), Phase::Final, ok(), keys(&["a"]));
        let verdict = check(&h.history());
        assert!(verdict.passed(), "{:?}", verdict.violations);
    }

    #[test]
    fn final_listing_with_an_absent_key_is_caught() {
        let mut h = two_keys();
        h.list((300, 310), Phase::Final, ok(), keys(&["a", "b"]));
        let verdict = check(&h.history());
        assert_eq!(verdict.listing_errors, 1);
        assert_eq!(verdict.violations[0].key, "b");
        assert!(verdict.violations[0].what.contains("reads as absent"));
    }

    #[test]
    fn final_listing_missing_a_key_is_caught() {
        let mut h = two_keys();
        h.list((300, 310), Phase::Final, ok(), keys(&[]));
        let verdict = check(&h.history());
        assert_eq!(verdict.listing_errors, 1);
        assert_eq!(verdict.violations[0].key, "a");
        assert!(verdict.violations[0].what.contains("misses"));
    }

    #[test]
    fn failed_final_listing_is_caught() {
        let mut h = two_keys();
        h.list((300, 310), Phase::Final, unknown(), Observed::Nothing);
        assert_eq!(check(&h.history()).listing_errors, 1);
    }

    #[test]
    fn load_listing_of_a_key_no_one_wrote_is_caught() {
        let mut h = two_keys();
        h.list((15, 16), Phase::Load, ok(), keys(&["a", "ghost"]));
        h.list((15, 16), Phase::Load, unknown(), Observed::Nothing);
        let verdict = check(&h.history());
        assert_eq!(verdict.listing_errors, 1);
        assert_eq!(verdict.violations[0].key, "ghost");
    }

    #[test]
    fn listings_of_another_bucket_are_judged_apart() {
        let mut h = two_keys();
        h.list_in("b2", (300, 310), Phase::Final, ok(), keys(&["a"]));
        let verdict = check(&h.history());
        assert_eq!(verdict.listing_errors, 1);
        assert!(verdict.violations[0].what.contains("no one wrote"));
    }
}
