//! No load GET returns a corrupt or stale state: bytes no one wrote on its key, bytes that
//! differ from the write it names, a write sent only after it was answered, or a state
//! superseded before it was sent ([`super::registers`] says which states are legal).
//!
//! A write of unknown outcome must be there whole or not at all; `intact` covers it, so a
//! read of such a write that is not intact is a corrupt read like any other. GETs that did
//! not succeed observed nothing and are not judged; final GETs are judged once, by
//! [`super::durability`].

use super::registers::{Judgement, Registers};
use super::{Verdict, Violation};
use crate::history::{Op, Phase};

const CHECKER: &str = "reads";

/// Judges every acknowledged load GET.
pub(super) fn check(registers: &Registers<'_>, verdict: &mut Verdict) {
    for ((bucket, key), register) in &registers.by_key {
        let reads = register
            .records
            .iter()
            .filter(|r| matches!(r.op, Op::Get { .. }) && r.is_ok() && r.phase == Phase::Load);
        for read in reads {
            let (what, records) = match register.judge(read, &registers.puts) {
                Judgement::Legal => continue,
                Judgement::Corrupt { what, records } => {
                    verdict.corrupt_reads += 1;
                    (format!("corrupt read: {what}"), records)
                }
                Judgement::Stale { what, records } => {
                    verdict.stale_reads += 1;
                    (format!("stale read: {what}"), records)
                }
            };
            verdict.violations.push(Violation {
                checker: CHECKER,
                bucket: (*bucket).to_owned(),
                key: (*key).to_owned(),
                what,
                records,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::check;
    use super::super::tests::{Builder, failed, object, ok, unknown};
    use crate::history::Observed;

    #[test]
    fn sequential_history_passes() {
        let mut h = Builder::new();
        h.get("k", (0, 5), Observed::NotFound);
        h.put("k", 1, (10, 20), ok());
        h.get("k", (30, 40), object(1));
        h.put("k", 2, (50, 60), ok());
        h.get("k", (70, 80), object(2));
        h.delete("k", (90, 100), ok());
        h.get("k", (110, 120), Observed::NotFound);
        h.final_get("k", 200, Observed::NotFound);
        let verdict = check(&h.history());
        assert!(verdict.passed(), "{:?}", verdict.violations);
        assert_eq!(verdict.acknowledged_writes, 3);
        assert_eq!(verdict.operations, 7);
    }

    #[test]
    fn stale_read_during_load_is_caught() {
        let mut h = Builder::new();
        let old = h.put("k", 1, (0, 10), ok());
        let new = h.put("k", 2, (20, 30), ok());
        let read = h.get("k", (40, 50), object(1));
        h.final_get("k", 200, object(2));
        let verdict = check(&h.history());
        assert_eq!(verdict.stale_reads, 1);
        assert_eq!(verdict.violations.len(), 1);
        assert_eq!(verdict.violations[0].records, vec![read, old, new]);
    }

    #[test]
    fn absent_after_an_acknowledged_put_is_stale() {
        let mut h = Builder::new();
        let put = h.put("k", 1, (0, 10), ok());
        let read = h.get("k", (20, 30), Observed::NotFound);
        h.final_get("k", 200, object(1));
        let verdict = check(&h.history());
        assert_eq!(verdict.stale_reads, 1);
        assert_eq!(verdict.violations[0].records, vec![read, put]);
    }

    #[test]
    fn intact_read_of_an_unknown_write_passes() {
        let mut h = Builder::new();
        h.put("k", 1, (0, 10), unknown());
        h.get("k", (20, 30), object(1));
        h.final_get("k", 200, object(1));
        assert!(check(&h.history()).passed());
    }

    #[test]
    fn read_that_is_not_intact_is_corrupt() {
        let mut h = Builder::new();
        h.put("k", 1, (0, 10), unknown());
        h.get(
            "k",
            (20, 30),
            Observed::Object {
                write: Some(1),
                intact: false,
            },
        );
        h.final_get("k", 200, object(1));
        let verdict = check(&h.history());
        assert_eq!(verdict.corrupt_reads, 1);
        assert!(verdict.violations[0].what.contains("bytes differ"));
    }

    #[test]
    fn read_naming_no_write_is_corrupt() {
        let mut h = Builder::new();
        h.put("k", 1, (0, 10), ok());
        h.get(
            "k",
            (20, 30),
            Observed::Object {
                write: None,
                intact: true,
            },
        );
        h.get("k", (20, 30), object(77));
        h.final_get("k", 200, object(1));
        assert_eq!(check(&h.history()).corrupt_reads, 2);
    }

    #[test]
    fn read_naming_a_write_of_another_key_is_corrupt() {
        let mut h = Builder::new();
        h.put("k", 1, (0, 10), ok());
        let other = h.put("other", 2, (0, 10), ok());
        let read = h.get("k", (20, 30), object(2));
        h.final_get("k", 200, object(1));
        h.final_get("other", 200, object(2));
        let verdict = check(&h.history());
        assert_eq!(verdict.corrupt_reads, 1);
        assert_eq!(verdict.violations[0].records, vec![read, other]);
    }

    #[test]
    fn same_key_in_another_bucket_is_another_register() {
        let mut h = Builder::new();
        h.put_in("b2", "k", 1, (0, 10), ok());
        h.get("k", (20, 30), object(1));
        assert_eq!(check(&h.history()).corrupt_reads, 1);
    }

    #[test]
    fn read_from_the_future_is_caught() {
        let mut h = Builder::new();
        h.get("k", (0, 10), object(1));
        h.put("k", 1, (20, 30), ok());
        h.final_get("k", 200, object(1));
        let verdict = check(&h.history());
        assert_eq!(verdict.corrupt_reads, 1);
        assert!(verdict.violations[0].what.contains("future"));
    }

    #[test]
    fn overlapping_puts_may_be_read_in_either_order() {
        for seen in [1, 2] {
            let mut h = Builder::new();
            h.put("k", 1, (0, 30), ok());
            h.put("k", 2, (10, 40), ok());
            h.get("k", (50, 60), object(seen));
            h.final_get("k", 200, object(seen));
            let verdict = check(&h.history());
            assert!(verdict.passed(), "{seen}: {:?}", verdict.violations);
        }
    }

    #[test]
    fn read_overlapping_a_put_may_see_either_state() {
        for seen in [object(1), object(2)] {
            let mut h = Builder::new();
            h.put("k", 1, (0, 10), ok());
            h.put("k", 2, (20, 40), ok());
            h.get("k", (30, 50), seen);
            h.final_get("k", 200, object(2));
            assert!(check(&h.history()).passed());
        }
    }

    #[test]
    fn refused_put_observed_is_corrupt() {
        let mut h = Builder::new();
        h.put("k", 1, (0, 10), failed());
        h.get("k", (20, 30), object(1));
        let verdict = check(&h.history());
        assert_eq!(verdict.corrupt_reads, 1);
        assert!(verdict.violations[0].what.contains("refused"));
    }

    #[test]
    fn absent_is_legal_after_an_unknown_delete() {
        let mut h = Builder::new();
        h.put("k", 1, (0, 10), ok());
        h.delete("k", (20, 30), unknown());
        h.get("k", (40, 50), Observed::NotFound);
        h.final_get("k", 200, Observed::NotFound);
        let verdict = check(&h.history());
        assert!(verdict.passed(), "{:?}", verdict.violations);
    }

    #[test]
    fn absent_is_legal_when_the_put_was_unknown() {
        let mut h = Builder::new();
        h.put("k", 1, (0, 10), unknown());
        h.get("k", (20, 30), Observed::NotFound);
        h.final_get("k", 200, Observed::NotFound);
        let verdict = check(&h.history());
        assert!(verdict.passed(), "{:?}", verdict.violations);
    }

    #[test]
    fn failed_gets_are_not_judged() {
        let mut h = Builder::new();
        h.put("k", 1, (0, 10), ok());
        h.get_with("k", (20, 30), unknown(), Observed::Nothing);
        h.get_with("k", (20, 30), failed(), Observed::Nothing);
        h.final_get("k", 200, object(1));
        assert!(check(&h.history()).passed());
    }
}
