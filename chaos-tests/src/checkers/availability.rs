//! How long and how often the load went unanswered: whole seconds in which some request
//! ended unknown and none ended acknowledged, and the count of unknown requests. Faults are
//! expected to cause both, so this checker reports numbers and finds no violations.

use std::collections::BTreeSet;

use super::Verdict;
use crate::history::{History, Outcome, Phase};

const MICROS_PER_SECOND: u64 = 1_000_000;

/// Counts the load's unavailable seconds and unknown requests.
pub(super) fn check(history: &History, verdict: &mut Verdict) {
    let mut unknown_seconds = BTreeSet::new();
    let mut ok_seconds = BTreeSet::new();
    for record in history.records.iter().filter(|r| r.phase == Phase::Load) {
        let second = record.end_us / MICROS_PER_SECOND;
        match record.outcome {
            Outcome::Ok => {
                ok_seconds.insert(second);
            }
            Outcome::Unknown(_) => {
                unknown_seconds.insert(second);
                verdict.unavailable_requests += 1;
            }
            Outcome::Failed(_) => {}
        }
    }
    verdict.unavailable_seconds = unknown_seconds.difference(&ok_seconds).count() as u64;
}

#[cfg(test)]
mod tests {
    use super::super::check;
    use super::super::tests::{Builder, failed, object, ok, unknown};
    use crate::history::Observed;

    const S: u64 = 1_000_000;

    #[test]
    fn seconds_with_only_unknown_endings_are_counted() {
        let mut h = Builder::new();
        h.put("k", 1, (0, 10), ok());
        // Second 1: unknown only. Second 2: unknown and ok. Second 3: failed only.
        // Seconds 4 and 5: unknown only.
        h.get_with("k", (S, S + 5), unknown(), Observed::Nothing);
        h.get_with("k", (S + 6, S + 7), unknown(), Observed::Nothing);
        h.get_with("k", (2 * S, 2 * S + 5), unknown(), Observed::Nothing);
        h.get("k", (2 * S + 6, 2 * S + 7), object(1));
        h.get_with("k", (3 * S, 3 * S + 5), failed(), Observed::Nothing);
        h.get_with("k", (4 * S, 5 * S + 5), unknown(), Observed::Nothing);
        h.get_with("k", (4 * S, 4 * S + 5), unknown(), Observed::Nothing);
        h.final_get_with("k", 10 * S, unknown(), Observed::Nothing);
        h.final_get("k", 10 * S, object(1));
        let verdict = check(&h.history());
        assert_eq!(verdict.unavailable_seconds, 3);
        assert_eq!(verdict.unavailable_requests, 5);
        assert!(verdict.passed(), "{:?}", verdict.violations);
    }
}
