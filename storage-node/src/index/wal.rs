//! The index's write-ahead log: a batch of index writes is made durable by one append and one
//! `fdatasync` of this file, and the database commits it without syncing pages of its own. A
//! durable database commit, a *checkpoint*, comes only when the log is full.
//!
//! A frame logs what its batch did to the tables: each change is the `put` of a key's new value
//! or the `remove` of a key. Applying changes again is harmless (a key takes the value it
//! already has), so replaying frames the database already holds changes nothing.
//!
//! # File
//!
//! ```text
//! frame   magic "NWAL" | generation u64 LE | number u64 LE | len u32 LE | crc32c u32 LE | payload
//! payload (op u8 | table u8 | key len u32 LE | key | [value len u32 LE | value])*
//!         op 1 put (with a value), 2 remove; table 1 entries, 2 seqs, 3 shards
//! ```
//!
//! Frames follow one another from offset 0. The crc covers the generation, number, length and
//! payload. The database holds the log's generation (`format` table, key `wal`); a checkpoint
//! raises it in its own commit, and the log starts again at offset 0. At open, the frames of
//! the database's generation numbered 0, 1, 2… are replayed up to the first that is missing,
//! torn or damaged, in one durable commit that raises the generation.
//!
//! **Invariants:**
//! - A frame is durable before its batch commits: whatever a reader sees, a crash keeps.
//! - A frame is written only once every earlier frame of its generation is durable: a valid
//!   frame never follows a torn one. The log never wraps within a generation.
//! - After a failed append or commit, nothing more is logged in that generation: every later
//!   batch commits durably until one such commit (a checkpoint) succeeds. So a generation's
//!   frames all describe batches computed one after the other from the same durable state.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use redb::{Database, Durability, ReadableTable, TableDefinition, WriteTransaction};
use tracing::warn;

use super::error::{OpenError, StorageFailure};
use super::layout::{ENTRIES, FORMAT, SEQS, SHARDS, WAL_KEY};

const MAGIC: [u8; 4] = *b"NWAL";

/// Bytes of a frame before its payload.
pub(super) const FRAME_HEADER_BYTES: u64 = 28;

/// The file grows by zeros, this much at a time, ahead of the frames: a frame then overwrites
/// bytes already allocated, and its `fdatasync` need not record a new file size.
const GROWTH_BYTES: u64 = 1 << 20;

const OP_PUT: u8 = 1;
const OP_REMOVE: u8 = 2;

/// The tables a change may touch, as frames name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TableId {
    Entries = 1,
    Seqs = 2,
    Shards = 3,
}

impl TableId {
    fn decode(byte: u8) -> Option<TableId> {
        match byte {
            1 => Some(TableId::Entries),
            2 => Some(TableId::Seqs),
            3 => Some(TableId::Shards),
            _ => None,
        }
    }

    fn definition(self) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
        match self {
            TableId::Entries => ENTRIES,
            TableId::Seqs => SEQS,
            TableId::Shards => SHARDS,
        }
    }
}

/// The changes of one batch, encoded as a frame's payload.
#[derive(Debug, Default)]
pub(super) struct Changes(Vec<u8>);

impl Changes {
    pub(super) fn put(&mut self, table: TableId, key: &[u8], value: &[u8]) {
        self.op(OP_PUT, table, key);
        self.bytes(value);
    }

    pub(super) fn remove(&mut self, table: TableId, key: &[u8]) {
        self.op(OP_REMOVE, table, key);
    }

    fn op(&mut self, op: u8, table: TableId, key: &[u8]) {
        self.0.push(op);
        self.0.push(table as u8);
        self.bytes(key);
    }

    fn bytes(&mut self, bytes: &[u8]) {
        // Keys and values are bounded far below 4 GiB (`nimbus_core::index` limits).
        let len = u32::try_from(bytes.len()).expect("index keys and values are under 4 GiB");
        self.0.extend_from_slice(&len.to_le_bytes());
        self.0.extend_from_slice(bytes);
    }

    pub(super) fn len(&self) -> u64 {
        self.0.len() as u64
    }
}

/// A change read back from a frame.
#[derive(Debug, PartialEq, Eq)]
enum Change<'a> {
    Put(TableId, &'a [u8], &'a [u8]),
    Remove(TableId, &'a [u8]),
}

/// Decodes a payload whose checksum held; `None` when it does not parse, which only a bug or
/// a newer Nimbus could write.
fn decode_changes(mut payload: &[u8]) -> Option<Vec<Change<'_>>> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, tail) = bytes.split_at_checked(n)?;
        *bytes = tail;
        Some(head)
    }
    fn sized<'a>(bytes: &mut &'a [u8]) -> Option<&'a [u8]> {
        let len = u32::from_le_bytes(take(bytes, 4)?.try_into().ok()?);
        take(bytes, usize::try_from(len).ok()?)
    }
    let mut changes = Vec::new();
    while !payload.is_empty() {
        let head = take(&mut payload, 2)?;
        let table = TableId::decode(head[1])?;
        let key = sized(&mut payload)?;
        changes.push(match head[0] {
            OP_PUT => Change::Put(table, key, sized(&mut payload)?),
            OP_REMOVE => Change::Remove(table, key),
            _ => return None,
        });
    }
    Some(changes)
}

fn frame_crc(generation: u64, number: u64, payload: &[u8]) -> u32 {
    let mut head = [0u8; 20];
    head[..8].copy_from_slice(&generation.to_le_bytes());
    head[8..16].copy_from_slice(&number.to_le_bytes());
    head[16..].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    crc32c::crc32c_append(crc32c::crc32c(&head), payload)
}

fn encode_frame(generation: u64, number: u64, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(FRAME_HEADER_BYTES as usize + payload.len());
    frame.extend_from_slice(&MAGIC);
    frame.extend_from_slice(&generation.to_le_bytes());
    frame.extend_from_slice(&number.to_le_bytes());
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&frame_crc(generation, number, payload).to_le_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// Returns the payloads of `generation`'s frames at the start of `log`, in order, up to the
/// first that is not there or not whole.
fn valid_frames(log: &[u8], generation: u64) -> Vec<&[u8]> {
    let mut frames = Vec::new();
    let mut at = 0usize;
    while let Some(header) = log.get(at..at + FRAME_HEADER_BYTES as usize) {
        let word = |i: usize| u64::from_le_bytes(header[i..i + 8].try_into().unwrap_or_default());
        let len = u32::from_le_bytes(header[20..24].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(header[24..28].try_into().unwrap_or_default());
        let start = at + FRAME_HEADER_BYTES as usize;
        let Some(payload) = log.get(start..start.saturating_add(len)) else {
            break;
        };
        let number = frames.len() as u64;
        if header[..4] != MAGIC
            || word(4) != generation
            || word(12) != number
            || frame_crc(generation, number, payload) != crc
        {
            break;
        }
        frames.push(payload);
        at = start + len;
    }
    frames
}

/// Reads the log's generation as the database holds it. A database that never had one (new,
/// or from before the log) starts at a number drawn from the clock, so that a log left beside
/// a database that was deleted and created again is never replayed into the new one.
pub(super) fn generation(txn: &WriteTransaction) -> Result<u64, redb::Error> {
    let format = txn.open_table(FORMAT)?;
    let found = format.get(WAL_KEY)?;
    Ok(match found.and_then(|v| v.value().try_into().ok()) {
        Some(bytes) => u64::from_le_bytes(bytes),
        None => first_generation(),
    })
}

fn first_generation() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    // Far below u64::MAX: generations only ever add one.
    (nanos as u64) >> 2
}

/// Records the log's generation in a transaction that commits durably.
pub(super) fn set_generation(txn: &WriteTransaction, generation: u64) -> Result<(), redb::Error> {
    let mut format = txn.open_table(FORMAT)?;
    format.insert(WAL_KEY, generation.to_le_bytes().as_slice())?;
    Ok(())
}

/// The open log of one index database (see the module documentation).
#[derive(Debug)]
pub(super) struct Wal {
    file: File,
    generation: u64,
    /// The number of the next frame.
    next: u64,
    /// Where the next frame goes.
    end: u64,
    /// The file's length: bytes up to here are allocated.
    len: u64,
    /// The most bytes of frames in one generation.
    capacity: u64,
    /// Whether an append or commit failed in this generation: nothing more is logged in it.
    broken: bool,
}

impl Wal {
    /// Opens the log beside the database at `db_path` (same name, extension `wal`), replays
    /// the frames of the database's generation into it in one durable commit that also raises
    /// the generation, and returns the log, empty.
    pub(super) fn open(db_path: &Path, db: &Database, capacity: u64) -> Result<Wal, OpenError> {
        let path = path(db_path);
        let io_failed = |e: io::Error| OpenError::Log {
            path: path.clone(),
            source: e,
        };
        let db_failed = |e: redb::Error| OpenError::Database {
            path: db_path.to_path_buf(),
            source: StorageFailure::new(e),
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_failed)?;
        let log = std::fs::read(&path).map_err(io_failed)?;
        let mut txn = db.begin_write().map_err(|e| db_failed(e.into()))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| db_failed(e.into()))?;
        let generation = generation(&txn).map_err(db_failed)?;
        let frames = valid_frames(&log, generation);
        // What follows the last valid frame is zeros, a torn frame (never acknowledged) or
        // frames of an older generation (in the database since its checkpoint).
        for payload in &frames {
            let changes = decode_changes(payload)
                .ok_or_else(|| OpenError::CorruptLog { path: path.clone() })?;
            apply(&txn, &changes).map_err(db_failed)?;
        }
        set_generation(&txn, generation + 1).map_err(db_failed)?;
        txn.commit().map_err(|e| db_failed(e.into()))?;
        if !frames.is_empty() {
            warn!(path = %path.display(), frames = frames.len(), "index writes replayed from the log");
        }
        Ok(Wal {
            file,
            generation: generation + 1,
            next: 0,
            end: 0,
            len: log.len() as u64,
            capacity,
            broken: false,
        })
    }

    /// Returns whether a frame of `changes` may go in this generation; if not, its batch must
    /// commit durably as a checkpoint ([`Wal::checkpointed`]).
    pub(super) fn fits(&self, changes: &Changes) -> bool {
        // A frame's length field is 32 bits, whatever the capacity.
        !self.broken
            && changes.len() <= u64::from(u32::MAX)
            && self.end + FRAME_HEADER_BYTES + changes.len() <= self.capacity
    }

    /// The generation a checkpoint records.
    pub(super) fn next_generation(&self) -> u64 {
        self.generation + 1
    }

    /// Appends a frame of `changes` and makes it durable. On failure nothing more is logged
    /// in this generation.
    pub(super) fn append(&mut self, changes: &Changes) -> io::Result<()> {
        let frame = encode_frame(self.generation, self.next, &changes.0);
        let end = self.end + frame.len() as u64;
        let written = self.write_frame(&frame, end);
        if written.is_err() {
            self.broken = true;
        }
        written
    }

    fn write_frame(&mut self, frame: &[u8], end: u64) -> io::Result<()> {
        let len = if end > self.len {
            let len = end.div_ceil(GROWTH_BYTES) * GROWTH_BYTES;
            let zeros = vec![0u8; usize::try_from(len - end).unwrap_or(0)];
            self.file.write_all_at(&zeros, end)?;
            len
        } else {
            self.len
        };
        self.file.write_all_at(frame, self.end)?;
        self.file.sync_data()?;
        self.len = len;
        self.end = end;
        self.next += 1;
        Ok(())
    }

    /// Notes that the batch whose frame was just appended failed to commit: nothing more is
    /// logged in this generation.
    pub(super) fn commit_failed(&mut self) {
        self.broken = true;
    }

    /// Starts the next generation, empty, after a checkpoint recorded it.
    pub(super) fn checkpointed(&mut self) {
        self.generation += 1;
        self.next = 0;
        self.end = 0;
        self.broken = false;
    }
}

/// Applies a frame's changes to the tables of `txn`.
fn apply(txn: &WriteTransaction, changes: &[Change<'_>]) -> Result<(), redb::Error> {
    let mut tables = [
        txn.open_table(TableId::Entries.definition())?,
        txn.open_table(TableId::Seqs.definition())?,
        txn.open_table(TableId::Shards.definition())?,
    ];
    let index = |table: TableId| table as usize - 1;
    for change in changes {
        match *change {
            Change::Put(table, key, value) => {
                tables[index(table)].insert(key, value)?;
            }
            Change::Remove(table, key) => {
                tables[index(table)].remove(key)?;
            }
        }
    }
    Ok(())
}

/// The log's path for the database at `db_path`.
pub(super) fn path(db_path: &Path) -> PathBuf {
    db_path.with_extension("wal")
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use redb::ReadableDatabase;

    use super::*;

    fn changes(n: u8) -> Changes {
        let mut c = Changes::default();
        c.put(TableId::Entries, &[n, 1], &[n; 40]);
        c.remove(TableId::Seqs, &[n, 2]);
        c.put(TableId::Shards, &[n], &[]);
        c
    }

    #[test]
    fn changes_decode_as_encoded() {
        let c = changes(7);
        assert_eq!(
            decode_changes(&c.0).unwrap(),
            vec![
                Change::Put(TableId::Entries, &[7, 1], &[7; 40]),
                Change::Remove(TableId::Seqs, &[7, 2]),
                Change::Put(TableId::Shards, &[7], &[]),
            ]
        );
    }

    #[test]
    fn frames_are_read_back_in_order_up_to_a_torn_one() {
        let mut log = Vec::new();
        for n in 0..3 {
            log.extend(encode_frame(5, n, &changes(n as u8).0));
        }
        let whole = log.len();
        let frames = valid_frames(&log, 5);
        assert_eq!(frames, [&changes(0).0, &changes(1).0, &changes(2).0]);
        // the last frame torn: the first two remain
        assert_eq!(valid_frames(&log[..whole - 1], 5).len(), 2);
        // zeros after the frames, as the file grows: ignored
        log.extend([0u8; 100]);
        assert_eq!(valid_frames(&log, 5).len(), 3);
    }

    #[test]
    fn frames_of_another_generation_or_out_of_order_are_not_replayed() {
        let mut log = encode_frame(5, 0, &changes(0).0);
        log.extend(encode_frame(4, 1, &changes(1).0));
        assert_eq!(valid_frames(&log, 5).len(), 1);
        assert_eq!(valid_frames(&log, 4).len(), 0);
        let skipped = [encode_frame(5, 0, &[]), encode_frame(5, 2, &[])].concat();
        assert_eq!(valid_frames(&skipped, 5).len(), 1);
    }

    #[test]
    fn a_flipped_bit_ends_the_valid_frames() {
        let log = [
            encode_frame(1, 0, &changes(0).0),
            encode_frame(1, 1, &changes(1).0),
        ]
        .concat();
        for at in 0..log.len() {
            let mut bad = log.clone();
            bad[at] ^= 0x10;
            let first = encode_frame(1, 0, &changes(0).0).len();
            let kept = valid_frames(&bad, 1).len();
            assert_eq!(kept, usize::from(at >= first), "bit flipped at {at}");
        }
    }

    /// Opens a database and its log in `dir`.
    fn open(dir: &Path, capacity: u64) -> (Database, Wal) {
        let path = dir.join("index.redb");
        let db = super::super::layout::open_database(&path, super::super::IndexOptions::default())
            .unwrap();
        let wal = Wal::open(&path, &db, capacity).unwrap();
        (db, wal)
    }

    /// Returns the `entries` table's value for `key`.
    fn entry(db: &Database, key: &[u8]) -> Option<Vec<u8>> {
        let txn = db.begin_read().unwrap();
        let table = txn.open_table(ENTRIES).unwrap();
        table.get(key).unwrap().map(|v| v.value().to_vec())
    }

    fn put(key: &[u8], value: &[u8]) -> Changes {
        let mut c = Changes::default();
        c.put(TableId::Entries, key, value);
        c
    }

    #[test]
    fn frames_the_database_never_committed_are_replayed_at_open_up_to_a_torn_one() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (_db, mut wal) = open(dir.path(), 1 << 20);
            wal.append(&put(b"k1", b"v1")).unwrap();
            let mut second = put(b"k2", b"v2");
            second.remove(TableId::Entries, b"k1");
            wal.append(&second).unwrap();
            wal.append(&put(b"k3", b"v3")).unwrap();
            // a crash: nothing of this reached the database
        }
        // the last frame torn
        let log = path(&dir.path().join("index.redb"));
        let len = std::fs::read(&log).unwrap().len();
        let bytes = std::fs::read(&log).unwrap();
        let third = bytes
            .windows(4)
            .enumerate()
            .filter(|(_, w)| *w == MAGIC)
            .nth(2)
            .unwrap()
            .0;
        std::fs::write(
            &log,
            [&bytes[..third + 30], &vec![0; len - third - 30][..]].concat(),
        )
        .unwrap();
        let (db, _wal) = open(dir.path(), 1 << 20);
        assert_eq!(entry(&db, b"k1"), None);
        assert_eq!(entry(&db, b"k2").as_deref(), Some(&b"v2"[..]));
        assert_eq!(entry(&db, b"k3"), None, "a torn frame is not replayed");
    }

    #[test]
    fn frames_left_from_a_checkpointed_generation_are_not_replayed() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (db, mut wal) = open(dir.path(), 1 << 20);
            wal.append(&put(b"a", b"1")).unwrap();
            wal.append(&put(b"k", b"old")).unwrap();
            // a checkpoint that holds neither (as if both batches had been overwritten)
            let mut txn = db.begin_write().unwrap();
            txn.set_durability(Durability::Immediate).unwrap();
            set_generation(&txn, wal.next_generation()).unwrap();
            txn.commit().unwrap();
            wal.checkpointed();
            // the same length as the first frame: the old second frame follows it
            wal.append(&put(b"b", b"2")).unwrap();
        }
        let (db, _wal) = open(dir.path(), 1 << 20);
        assert_eq!(entry(&db, b"b").as_deref(), Some(&b"2"[..]));
        assert_eq!(entry(&db, b"a"), None);
        assert_eq!(entry(&db, b"k"), None);
    }

    #[test]
    fn a_log_left_beside_a_deleted_database_is_not_replayed_into_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (_db, mut wal) = open(dir.path(), 1 << 20);
            wal.append(&put(b"a", b"1")).unwrap();
            wal.append(&put(b"k", b"old")).unwrap();
        }
        std::fs::remove_file(dir.path().join("index.redb")).unwrap();
        {
            // the new database's first frame, as long as the old one's: the old second frame
            // follows it
            let (_db, mut wal) = open(dir.path(), 1 << 20);
            wal.append(&put(b"b", b"2")).unwrap();
        }
        let (db, _wal) = open(dir.path(), 1 << 20);
        assert_eq!(entry(&db, b"b").as_deref(), Some(&b"2"[..]));
        assert_eq!(entry(&db, b"k"), None);
    }

    #[test]
    fn a_database_from_before_the_log_opens_and_is_raised_to_the_logged_layout() {
        use super::super::layout::{FORMAT_KEY, FORMAT_VERSION};
        let dir = tempfile::tempdir().unwrap();
        {
            let (db, _wal) = open(dir.path(), 1 << 20);
            let txn = db.begin_write().unwrap();
            {
                let mut format = txn.open_table(FORMAT).unwrap();
                format
                    .insert(FORMAT_KEY, 1u32.to_le_bytes().as_slice())
                    .unwrap();
                format.remove(WAL_KEY).unwrap();
                txn.open_table(ENTRIES)
                    .unwrap()
                    .insert(&b"k"[..], &b"v"[..])
                    .unwrap();
            }
            txn.commit().unwrap();
        }
        std::fs::remove_file(dir.path().join("index.wal")).unwrap();
        let (db, mut wal) = open(dir.path(), 1 << 20);
        assert_eq!(entry(&db, b"k").as_deref(), Some(&b"v"[..]));
        let txn = db.begin_write().unwrap();
        let version = txn
            .open_table(FORMAT)
            .unwrap()
            .get(FORMAT_KEY)
            .unwrap()
            .unwrap()
            .value()
            .to_vec();
        assert_eq!(version, FORMAT_VERSION.to_le_bytes());
        assert_eq!(generation(&txn).unwrap() + 1, wal.next_generation());
        txn.abort().unwrap();
        wal.append(&put(b"j", b"logged")).unwrap();
    }

    #[test]
    fn the_log_fits_frames_up_to_its_capacity_and_none_after_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let c = put(b"k", &[1; 100]);
        let frame = FRAME_HEADER_BYTES + c.len();
        let (_db, mut wal) = open(dir.path(), 2 * frame);
        assert!(wal.fits(&c));
        wal.append(&c).unwrap();
        assert!(wal.fits(&c));
        wal.append(&c).unwrap();
        assert!(!wal.fits(&c), "full: the next batch is a checkpoint");
        wal.checkpointed();
        assert!(wal.fits(&c));
        wal.commit_failed();
        assert!(!wal.fits(&c), "after a failure, only a checkpoint");
    }

    proptest! {
        #[test]
        fn reading_any_bytes_as_a_log_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), generation in 0u64..3) {
            let _ = valid_frames(&bytes, generation);
            let _ = decode_changes(&bytes);
        }

        #[test]
        fn a_log_cut_anywhere_keeps_exactly_the_whole_frames(cut in 0usize..400) {
            let frames: Vec<Vec<u8>> = (0..4).map(|n| encode_frame(9, n, &changes(n as u8).0)).collect();
            let log = frames.concat();
            let cut = cut.min(log.len());
            let mut whole = 0;
            let mut at = 0;
            for f in &frames {
                if at + f.len() <= cut {
                    whole += 1;
                }
                at += f.len();
            }
            prop_assert_eq!(valid_frames(&log[..cut], 9).len(), whole);
        }
    }
}
