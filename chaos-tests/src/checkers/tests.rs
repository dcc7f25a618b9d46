//! Histories for the checkers' tests: a builder for hand-written ones, and a model-based
//! property test that runs [`super::check`] over histories of a correct register.

use proptest::prelude::*;

use super::{Verdict, check, context};
use crate::history::{History, Observed, Op, Outcome, Phase, Record, WriteId};

pub(crate) fn ok() -> Outcome {
    Outcome::Ok
}

pub(crate) fn unknown() -> Outcome {
    Outcome::Unknown("timeout".to_owned())
}

pub(crate) fn failed() -> Outcome {
    Outcome::Failed("400".to_owned())
}

pub(crate) fn object(write: WriteId) -> Observed {
    Observed::Object {
        write: Some(write),
        intact: true,
    }
}

pub(crate) fn keys(keys: &[&str]) -> Observed {
    Observed::Keys(keys.iter().map(|k| (*k).to_owned()).collect())
}

const BUCKET: &str = "b";

/// Builds a history record by record, in bucket `b` unless told; each method returns the id
/// of the record it added.
pub(crate) struct Builder {
    records: Vec<Record>,
}

impl Builder {
    pub(crate) fn new() -> Self {
        Self {
            records: Vec::new(),
        }
    }

    pub(crate) fn history(&self) -> History {
        let mut records = self.records.clone();
        records.sort_by_key(|r| (r.end_us, r.id));
        History { records }
    }

    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        phase: Phase,
        bucket: &str,
        key: &str,
        op: Op,
        (start_us, end_us): (u64, u64),
        outcome: Outcome,
        observed: Observed,
    ) -> u64 {
        let id = self.records.len() as u64;
        self.records.push(Record {
            id,
            client: 0,
            phase,
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            op,
            start_us,
            end_us,
            outcome,
            observed,
        });
        id
    }

    pub(crate) fn put(
        &mut self,
        key: &str,
        write: WriteId,
        at: (u64, u64),
        outcome: Outcome,
    ) -> u64 {
        self.put_in(BUCKET, key, write, at, outcome)
    }

    pub(crate) fn put_in(
        &mut self,
        bucket: &str,
        key: &str,
        write: WriteId,
        at: (u64, u64),
        outcome: Outcome,
    ) -> u64 {
        let op = Op::Put {
            write,
            size: 100,
            multipart: false,
        };
        self.add(Phase::Load, bucket, key, op, at, outcome, Observed::Nothing)
    }

    pub(crate) fn delete(&mut self, key: &str, at: (u64, u64), outcome: Outcome) -> u64 {
        self.add(
            Phase::Load,
            BUCKET,
            key,
            Op::Delete,
            at,
            outcome,
            Observed::Nothing,
        )
    }

    pub(crate) fn get(&mut self, key: &str, at: (u64, u64), observed: Observed) -> u64 {
        self.get_with(key, at, ok(), observed)
    }

    pub(crate) fn get_with(
        &mut self,
        key: &str,
        at: (u64, u64),
        outcome: Outcome,
        observed: Observed,
    ) -> u64 {
        let op = Op::Get { range: None };
        self.add(Phase::Load, BUCKET, key, op, at, outcome, observed)
    }

    pub(crate) fn final_get(&mut self, key: &str, at_us: u64, observed: Observed) -> u64 {
        self.final_get_with(key, at_us, ok(), observed)
    }

    pub(crate) fn final_get_with(
        &mut self,
        key: &str,
        at_us: u64,
        outcome: Outcome,
        observed: Observed,
    ) -> u64 {
        let op = Op::Get { range: None };
        let at = (at_us, at_us + 1);
        self.add(Phase::Final, BUCKET, key, op, at, outcome, observed)
    }

    pub(crate) fn list(
        &mut self,
        at: (u64, u64),
        phase: Phase,
        outcome: Outcome,
        observed: Observed,
    ) -> u64 {
        self.list_in(BUCKET, at, phase, outcome, observed)
    }

    pub(crate) fn list_in(
        &mut self,
        bucket: &str,
        at: (u64, u64),
        phase: Phase,
        outcome: Outcome,
        observed: Observed,
    ) -> u64 {
        self.add(phase, bucket, "", Op::List, at, outcome, observed)
    }
}

#[test]
fn context_centres_on_the_offending_read() {
    let mut h = Builder::new();
    for write in 0..10 {
        h.put("k", write, (write * 100, write * 100 + 10), ok());
        h.put("other", 100 + write, (write * 100, write * 100 + 10), ok());
    }
    let read = h.get("k", (450, 460), object(1));
    h.final_get("k", 2000, object(9));
    h.final_get("other", 2000, object(109));
    let history = h.history();
    let verdict = check(&history);
    assert_eq!(verdict.violations.len(), 1);
    let around = context(&history, &verdict.violations[0], 5);
    let ids: Vec<u64> = around.iter().map(|r| r.id).collect();
    assert_eq!(around.len(), 5);
    assert!(ids.contains(&read));
    assert!(around.iter().all(|r| r.key == "k"));
    assert!(around.windows(2).all(|w| w[0].start_us <= w[1].start_us));
    assert_eq!(context(&history, &verdict.violations[0], 100).len(), 12);
}

#[test]
fn verdict_serializes() {
    let json = serde_json::to_string(&Verdict::default()).unwrap();
    assert!(json.contains("\"lost\":0"));
}

// The model: a correct register per (bucket, key), each mutation applied atomically at a
// point strictly inside its interval (an unknown one applied or not), each read observing
// the state at a point strictly inside its interval.

/// One generated load request.
#[derive(Clone, Debug)]
struct Request {
    bucket: usize,
    key: usize,
    kind: Kind,
    /// Sent at `10 * start` µs.
    start: u64,
    /// Lasts `10 * (duration + 1)` µs.
    duration: u64,
    /// Takes effect (or reads) at `10 * (start + point % (duration + 1)) + 5` µs.
    point: u64,
    /// 0..6 acknowledged, 6 refused, 7 unknown and applied, 8 unknown and not applied.
    fate: u8,
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Put,
    Delete,
    Get,
    List,
}

const BUCKETS: usize = 2;
const KEYS: usize = 3;

fn request() -> impl Strategy<Value = Request> {
    let kind = prop_oneof![
        3 => Just(Kind::Put),
        1 => Just(Kind::Delete),
        3 => Just(Kind::Get),
        1 => Just(Kind::List),
    ];
    (
        0..BUCKETS,
        0..KEYS,
        kind,
        0..200u64,
        0..6u64,
        any::<u64>(),
        0..9u8,
    )
        .prop_map(
            |(bucket, key, kind, start, duration, point, fate)| Request {
                bucket,
                key,
                kind,
                start,
                duration,
                point,
                fate,
            },
        )
}

fn bucket_name(bucket: usize) -> String {
    format!("b{bucket}")
}

fn key_name(key: usize) -> String {
    format!("k{key}")
}

/// Runs `requests` against a correct register, then reads back every key and lists every
/// bucket.
fn simulate(requests: &[Request]) -> History {
    // Each request's point, ordered: mutations before reads at the same instant.
    let mut order: Vec<usize> = (0..requests.len()).collect();
    let point_us = |r: &Request| 10 * (r.start + r.point % (r.duration + 1)) + 5;
    order.sort_by_key(|&i| {
        let r = &requests[i];
        let reads = matches!(r.kind, Kind::Get | Kind::List);
        (point_us(r), reads, i)
    });
    let mut state: Vec<Vec<Option<WriteId>>> = vec![vec![None; KEYS]; BUCKETS];
    let mut records: Vec<Option<Record>> = vec![None; requests.len()];
    for i in order {
        let r = &requests[i];
        let write = i as WriteId + 1;
        let outcome = match r.fate {
            0..=5 => ok(),
            6 => failed(),
            _ => unknown(),
        };
        let applies = r.fate <= 5 || r.fate == 7;
        let (key, op, observed) = match r.kind {
            Kind::Put | Kind::Delete => {
                if applies {
                    state[r.bucket][r.key] = matches!(r.kind, Kind::Put).then_some(write);
                }
                let op = match r.kind {
                    Kind::Put => Op::Put {
                        write,
                        size: 10,
                        multipart: false,
                    },
                    _ => Op::Delete,
                };
                (key_name(r.key), op, Observed::Nothing)
            }
            Kind::Get => {
                let observed = match (&outcome, state[r.bucket][r.key]) {
                    (Outcome::Ok, Some(w)) => object(w),
                    (Outcome::Ok, None) => Observed::NotFound,
                    _ => Observed::Nothing,
                };
                (key_name(r.key), Op::Get { range: None }, observed)
            }
            Kind::List => {
                let listed = (0..KEYS)
                    .filter(|&k| state[r.bucket][k].is_some())
                    .map(key_name)
                    .collect();
                let observed = match outcome {
                    Outcome::Ok => Observed::Keys(listed),
                    _ => Observed::Nothing,
                };
                (String::new(), Op::List, observed)
            }
        };
        let start_us = 10 * r.start;
        records[i] = Some(Record {
            id: i as u64,
            client: i as u32,
            phase: Phase::Load,
            bucket: bucket_name(r.bucket),
            key,
            op,
            start_us,
            end_us: start_us + 10 * (r.duration + 1),
            outcome,
            observed,
        });
    }
    let mut records: Vec<Record> = records.into_iter().flatten().collect();
    let final_us = records.iter().map(|r| r.end_us).max().unwrap_or(0) + 100;
    for (bucket, keys) in state.iter().enumerate() {
        for (key, write) in keys.iter().enumerate() {
            let id = records.len() as u64;
            records.push(Record {
                id,
                client: 0,
                phase: Phase::Final,
                bucket: bucket_name(bucket),
                key: key_name(key),
                op: Op::Get { range: None },
                start_us: final_us + id,
                end_us: final_us + id + 1,
                outcome: ok(),
                observed: write.map_or(Observed::NotFound, object),
            });
        }
        let id = records.len() as u64;
        let listed = (0..KEYS).filter(|&k| keys[k].is_some()).map(key_name);
        records.push(Record {
            id,
            client: 0,
            phase: Phase::Final,
            bucket: bucket_name(bucket),
            key: String::new(),
            op: Op::List,
            start_us: final_us + id,
            end_us: final_us + id + 1,
            outcome: ok(),
            observed: Observed::Keys(listed.collect()),
        });
    }
    records.sort_by_key(|r| (r.end_us, r.id));
    History { records }
}

/// A final read to break in `history`: one whose key's last state is an acknowledged PUT
/// that was sent after every DELETE that may have applied was answered, and after some
/// other acknowledged PUT was answered. Returns the read's index and the older PUT's write.
fn breakable(history: &History) -> Option<(usize, WriteId)> {
    let on = |a: &Record, b: &Record| a.bucket == b.bucket && a.key == b.key;
    history.records.iter().enumerate().find_map(|(i, read)| {
        let Observed::Object { write: Some(w), .. } = read.observed else {
            return None;
        };
        if read.phase != Phase::Final {
            return None;
        }
        let last = history.records.iter().find(|r| r.write() == Some(w))?;
        if !last.is_ok() {
            return None;
        }
        let mutations = history
            .records
            .iter()
            .filter(|r| on(r, read) && r.is_mutation() && r.may_have_applied());
        let mut older = None;
        for m in mutations {
            match m.op {
                Op::Delete if !m.precedes(last) => return None,
                Op::Put { write, .. } if m.is_ok() && m.precedes(last) => older = Some(write),
                _ => {}
            }
        }
        older.map(|older| (i, older))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn histories_of_a_correct_register_pass(requests in prop::collection::vec(request(), 0..120)) {
        let history = simulate(&requests);
        let verdict = check(&history);
        prop_assert!(verdict.passed(), "{:#?}", verdict.violations);

        if let Some((read, older)) = breakable(&history) {
            let mut absent = history.clone();
            absent.records[read].observed = Observed::NotFound;
            let verdict = check(&absent);
            prop_assert_eq!(verdict.lost, 1, "{:#?}", verdict.violations);

            let mut stale = history.clone();
            stale.records[read].observed = object(older);
            let verdict = check(&stale);
            prop_assert_eq!(verdict.lost, 1, "{:#?}", verdict.violations);
        }
    }
}
