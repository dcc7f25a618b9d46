//! Every (bucket, key) of a history as a linearizable register, and which of its states a read
//! may legally observe. The read and durability checkers share this logic.
//!
//! A *state* is the initial absent state or a mutation: a PUT or DELETE that may have applied
//! (acknowledged or unknown; a refused one took no effect). A mutation `m` is *superseded
//! before* time `t` when some acknowledged mutation `a` on the same key was sent after `m` was
//! answered and was answered before `t` (`m.end_us < a.start_us`, `a.end_us < t`); the initial
//! state is superseded before `t` once any acknowledged mutation was answered before `t`.
//! A read `r` may observe state `s` when `s` was sent before `r` was answered
//! (`s.start_us < r.end_us`; the initial state always) and `s` is not superseded before
//! `r.start_us`.
//!
//! Invariant: each question costs O(log k) for a key with k mutations, so judging a history
//! costs O(n log n), never O(n²).

use std::collections::{BTreeMap, HashMap};

use crate::history::{History, Observed, Op, Record, WriteId};

/// Every register of a history, and every PUT by its write.
pub(crate) struct Registers<'h> {
    /// The registers, by (bucket, key). LISTs belong to none.
    pub(crate) by_key: BTreeMap<(&'h str, &'h str), Register<'h>>,
    /// Every PUT record (whatever its outcome), by the write it made.
    pub(crate) puts: HashMap<WriteId, &'h Record>,
}

impl<'h> Registers<'h> {
    /// Groups the GETs, PUTs and DELETEs of `history` by (bucket, key).
    pub(crate) fn new(history: &'h History) -> Self {
        let mut grouped: BTreeMap<(&'h str, &'h str), Vec<&'h Record>> = BTreeMap::new();
        let mut puts = HashMap::new();
        for record in &history.records {
            if let Some(write) = record.write() {
                puts.insert(write, record);
            }
            if !matches!(record.op, Op::List) {
                grouped
                    .entry((record.bucket.as_str(), record.key.as_str()))
                    .or_default()
                    .push(record);
            }
        }
        let by_key = grouped
            .into_iter()
            .map(|(key, records)| (key, Register::new(records)))
            .collect();
        Self { by_key, puts }
    }
}

/// One (bucket, key): its records and the indexes that answer "which states may a read see".
pub(crate) struct Register<'h> {
    /// Every PUT, DELETE and GET on the key, in start order.
    pub(crate) records: Vec<&'h Record>,
    /// The acknowledged mutations: for "what supersedes before `t`".
    acknowledged: PrefixMax<'h>,
    /// The DELETEs that may have applied: for "may a read see the key absent".
    deletes: PrefixMax<'h>,
    /// The acknowledged PUTs: for "must a read see an acknowledged write".
    acknowledged_puts: PrefixMax<'h>,
}

impl<'h> Register<'h> {
    fn new(mut records: Vec<&'h Record>) -> Self {
        records.sort_by_key(|r| (r.start_us, r.id));
        let mutations = || {
            records
                .iter()
                .copied()
                .filter(|r| r.is_mutation() && r.may_have_applied())
        };
        let acknowledged = PrefixMax::new(
            mutations().filter(|r| r.is_ok()).collect(),
            |r| r.end_us,
            |r| r.start_us,
        );
        let deletes = PrefixMax::new(
            mutations().filter(|r| matches!(r.op, Op::Delete)).collect(),
            |r| r.start_us,
            |r| r.end_us,
        );
        let acknowledged_puts = PrefixMax::new(
            mutations()
                .filter(|r| r.is_ok() && matches!(r.op, Op::Put { .. }))
                .collect(),
            |r| r.start_us,
            |r| r.end_us,
        );
        Self {
            records,
            acknowledged,
            deletes,
            acknowledged_puts,
        }
    }

    /// Whether some PUT or DELETE on the key may have applied.
    pub(crate) fn has_mutations(&self) -> bool {
        self.records
            .iter()
            .any(|r| r.is_mutation() && r.may_have_applied())
    }

    /// The acknowledged mutation answered before `t` that was sent last: whatever it does not
    /// precede is still visible at `t`, whatever it follows is superseded before `t`.
    pub(crate) fn supersedes_before(&self, t: u64) -> Option<&'h Record> {
        self.acknowledged.best_before(t)
    }

    /// Whether mutation `state` is superseded before `t`.
    fn superseded(&self, state: &Record, t: u64) -> bool {
        self.supersedes_before(t)
            .is_some_and(|a| state.end_us < a.start_us)
    }

    /// Whether `read` may observe the initial absent state.
    fn initial_legal(&self, read: &Record) -> bool {
        self.supersedes_before(read.start_us).is_none()
    }

    /// Whether `read` may see the key absent: the initial state or some DELETE is legal.
    pub(crate) fn absent_legal(&self, read: &Record) -> bool {
        if self.initial_legal(read) {
            return true;
        }
        // The DELETE sent before the read was answered that was answered last is legal if any
        // is: legality past "sent before" only asks for a late enough end.
        self.deletes
            .best_before(read.end_us)
            .is_some_and(|d| !self.superseded(d, read.start_us))
    }

    /// An acknowledged PUT that `read` may observe, if any: the one answered last among those
    /// sent before the read was answered.
    pub(crate) fn legal_acknowledged_put(&self, read: &Record) -> Option<&'h Record> {
        self.acknowledged_puts
            .best_before(read.end_us)
            .filter(|p| !self.superseded(p, read.start_us))
    }

    /// Judges what acknowledged GET `read` observed, against every PUT of the history.
    pub(crate) fn judge(&self, read: &'h Record, puts: &HashMap<WriteId, &'h Record>) -> Judgement {
        match &read.observed {
            Observed::NotFound => self.judge_absent(read),
            Observed::Object { write, intact } => self.judge_object(read, *write, *intact, puts),
            // An acknowledged GET sees an object or a 404; anything else says nothing to judge.
            Observed::Nothing | Observed::Keys(_) => Judgement::Legal,
        }
    }

    fn judge_absent(&self, read: &Record) -> Judgement {
        if self.absent_legal(read) {
            return Judgement::Legal;
        }
        // Neither the initial state nor any DELETE is legal: the last-sent acknowledged
        // mutation answered before the read is then a PUT (an acknowledged DELETE would be
        // legal itself), and it superseded them all.
        let mut records = vec![read.id];
        records.extend(self.supersedes_before(read.start_us).map(|a| a.id));
        Judgement::Stale {
            what: "reads absent, although an acknowledged PUT answered before the read was \
                   sent superseded the initial state and every DELETE"
                .to_owned(),
            records,
        }
    }

    fn judge_object(
        &self,
        read: &Record,
        write: Option<WriteId>,
        intact: bool,
        puts: &HashMap<WriteId, &'h Record>,
    ) -> Judgement {
        let Some(write) = write else {
            return Judgement::Corrupt {
                what: "returned an object whose metadata names no write: bytes no one wrote"
                    .to_owned(),
                records: vec![read.id],
            };
        };
        let Some(put) = puts.get(&write) else {
            return Judgement::Corrupt {
                what: format!("returned write {write}, which no PUT made: bytes no one wrote"),
                records: vec![read.id],
            };
        };
        if put.bucket != read.bucket || put.key != read.key {
            return Judgement::Corrupt {
                what: format!(
                    "returned write {write} of {}/{}, another key: bytes no one wrote here",
                    put.bucket, put.key
                ),
                records: vec![read.id, put.id],
            };
        }
        if !put.may_have_applied() {
            return Judgement::Corrupt {
                what: format!("returned write {write}, whose PUT was refused (4xx)"),
                records: vec![read.id, put.id],
            };
        }
        if !intact {
            return Judgement::Corrupt {
                what: format!("bytes differ from what write {write} wrote"),
                records: vec![read.id, put.id],
            };
        }
        if put.start_us >= read.end_us {
            return Judgement::Corrupt {
                what: format!(
                    "returned write {write} from the future: its PUT was sent after the read \
                     was answered"
                ),
                records: vec![read.id, put.id],
            };
        }
        match self.supersedes_before(read.start_us) {
            Some(a) if put.end_us < a.start_us => Judgement::Stale {
                what: format!(
                    "returned write {write}, superseded by acknowledged record {} before the \
                     read was sent",
                    a.id
                ),
                records: vec![read.id, put.id, a.id],
            },
            _ => Judgement::Legal,
        }
    }
}

/// What a read observed, judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Judgement {
    /// A state the read may observe.
    Legal,
    /// Bytes no one wrote on this key, bytes that differ from the write named, or a write
    /// not yet sent when the read was answered.
    Corrupt {
        /// What is wrong.
        what: String,
        /// The read, then the records that make it illegal.
        records: Vec<u64>,
    },
    /// A state superseded before the read was sent.
    Stale {
        /// What is wrong.
        what: String,
        /// The read, then the records that make it illegal.
        records: Vec<u64>,
    },
}

/// Records sorted by one time, each prefix knowing its record with the greatest other time:
/// answers "of the records whose `by` is before `t`, which has the greatest `max_of`" in
/// O(log n).
struct PrefixMax<'h> {
    records: Vec<&'h Record>,
    by: fn(&Record) -> u64,
    /// `best[i]`: the index in `records[..=i]` of the greatest `max_of`.
    best: Vec<usize>,
}

impl<'h> PrefixMax<'h> {
    fn new(
        mut records: Vec<&'h Record>,
        by: fn(&Record) -> u64,
        max_of: fn(&Record) -> u64,
    ) -> Self {
        records.sort_by_key(|r| (by(r), r.id));
        let mut best = Vec::with_capacity(records.len());
        for (i, record) in records.iter().enumerate() {
            let keep = best
                .last()
                .copied()
                .filter(|&b: &usize| max_of(records[b]) >= max_of(record));
            best.push(keep.unwrap_or(i));
        }
        Self { records, by, best }
    }

    /// Of the records whose `by` time is before `t`, the one with the greatest `max_of`.
    fn best_before(&self, t: u64) -> Option<&'h Record> {
        let count = self.records.partition_point(|r| (self.by)(r) < t);
        let last = count.checked_sub(1)?;
        self.best.get(last).map(|&b| self.records[b])
    }
}
