//! Once the faults stopped and the cluster healed, every key that may have been written
//! reads back, and reads back a legal state ([`super::registers`]).
//!
//! A final GET that observes an illegal state while some acknowledged PUT is a legal state
//! has lost that write (an older write or absence where an acknowledged PUT must show);
//! other illegal final reads are corrupt or stale reads, counted here and not by
//! [`super::reads`]. A key is counted lost once however many of its final reads lost it.

use super::registers::{Judgement, Register, Registers};
use super::{Verdict, Violation};
use crate::history::{Op, Phase, Record};

const CHECKER: &str = "durability";

/// Judges every key's final GETs.
pub(super) fn check(registers: &Registers<'_>, verdict: &mut Verdict) {
    for (&(bucket, key), register) in &registers.by_key {
        let finals: Vec<&Record> = register
            .records
            .iter()
            .copied()
            .filter(|r| matches!(r.op, Op::Get { .. }) && r.phase == Phase::Final)
            .collect();
        let violation = |what: String, records: Vec<u64>| Violation {
            checker: CHECKER,
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            what,
            records,
        };
        if register.has_mutations() {
            if finals.is_empty() {
                verdict.missing_final_reads += 1;
                verdict.violations.push(violation(
                    "no final read of a written key (harness bug)".to_owned(),
                    Vec::new(),
                ));
                continue;
            }
            if !finals.iter().any(|r| r.is_ok()) {
                verdict.unreadable_after_heal += 1;
                verdict.violations.push(violation(
                    "unreadable after healing: every final GET failed".to_owned(),
                    finals.iter().map(|r| r.id).collect(),
                ));
                continue;
            }
        }
        let mut lost = false;
        for read in finals.iter().filter(|r| r.is_ok()) {
            let Some(problem) = judge_final(register, registers, read, verdict) else {
                continue;
            };
            lost |= problem.lost;
            verdict
                .violations
                .push(violation(problem.what, problem.records));
        }
        verdict.lost += u64::from(lost);
    }
}

/// What is wrong with one final read.
struct Problem {
    what: String,
    records: Vec<u64>,
    /// It lost an acknowledged write.
    lost: bool,
}

/// Judges one acknowledged final GET, counting a corrupt or stale read in `verdict`.
fn judge_final(
    register: &Register<'_>,
    registers: &Registers<'_>,
    read: &Record,
    verdict: &mut Verdict,
) -> Option<Problem> {
    match register.judge(read, &registers.puts) {
        Judgement::Legal => None,
        Judgement::Corrupt { what, records } => {
            verdict.corrupt_reads += 1;
            Some(Problem {
                what: format!("corrupt final read: {what}"),
                records,
                lost: false,
            })
        }
        Judgement::Stale { what, mut records } => {
            if let Some(put) = register.legal_acknowledged_put(read) {
                if !records.contains(&put.id) {
                    records.push(put.id);
                }
                let write = put.write().unwrap_or_default();
                return Some(Problem {
                    what: format!(
                        "lost write: acknowledged write {write} is gone; final read {what}"
                    ),
                    records,
                    lost: true,
                });
            }
            verdict.stale_reads += 1;
            Some(Problem {
                what: format!("stale final read: {what}"),
                records,
                lost: false,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::check;
    use super::super::tests::{Builder, object, ok, unknown};
    use crate::history::Observed;

    #[test]
    fn final_read_of_the_previous_write_is_lost() {
        let mut h = Builder::new();
        h.put("k", 1, (0, 10), ok());
        let last = h.put("k", 2, (20, 30), ok());
        let read = h.final_get("k", 200, object(1));
        let verdict = check(&h.history());
        assert_eq!(verdict.lost, 1);
        assert_eq!(verdict.stale_reads, 0);
        assert_eq!(verdict.violations.len(), 1);
        assert_eq!(verdict.violations[0].records[0], read);
        assert!(verdict.violations[0].records.contains(&last));
    }

    #[test]
    fn final_absence_after_an_acknowledged_put_is_lost() {
        let mut h = Builder::new();
        h.put("k", 1, (0, 10), ok());
        h.final_get("k", 200, Observed::NotFound);
        let verdict = check(&h.history());
        assert_eq!(verdict.lost, 1);
        assert!(!verdict.passed());
    }

    #[test]
    fn final_absence_after_a_delete_passes() {
        let mut h = Builder::new();
        h.put("k", 1, (0, 10), ok());
        h.delete("k", (20, 30), ok());
        h.final_get("k", 200, Observed::NotFound);
        assert!(check(&h.history()).passed());
    }

    #[test]
    fn final_read_of_a_write_superseded_by_a_delete_is_stale_not_lost() {
        let mut h = Builder::new();
        h.put("k", 1, (0, 10), ok());
        h.delete("k", (20, 30), ok());
        h.final_get("k", 200, object(1));
        let verdict = check(&h.history());
        assert_eq!((verdict.lost, verdict.stale_reads), (0, 1));
    }

    #[test]
    fn unknown_last_write_may_or_may_not_survive() {
        for seen in [object(1), object(2)] {
            let mut h = Builder::new();
            h.put("k", 1, (0, 10), ok());
            h.put("k", 2, (20, 30), unknown());
            h.final_get("k", 200, seen);
            assert!(check(&h.history()).passed());
        }
    }

    #[test]
    fn failed_final_reads_are_unreadable() {
        let mut h = Builder::new();
        h.put("k", 1, (0, 10), ok());
        h.final_get_with("k", 200, unknown(), Observed::Nothing);
        let verdict = check(&h.history());
        assert_eq!(verdict.unreadable_after_heal, 1);
        assert_eq!(verdict.violations.len(), 1);
    }

    #[test]
    fn written_key_without_final_read_is_missing() {
        let mut h = Builder::new();
        h.put("k", 1, (0, 10), unknown());
        let verdict = check(&h.history());
        assert_eq!(verdict.missing_final_reads, 1);
        assert!(!verdict.passed());
    }

    #[test]
    fn corrupt_final_read_counts_once() {
        let mut h = Builder::new();
        h.put("k", 1, (0, 10), ok());
        h.final_get(
            "k",
            200,
            Observed::Object {
                write: Some(1),
                intact: false,
            },
        );
        let verdict = check(&h.history());
        assert_eq!((verdict.corrupt_reads, verdict.lost), (1, 0));
        assert_eq!(verdict.violations.len(), 1);
    }
}
