//! Partition summaries: which fragment indexes a partition holds committed on this device,
//! and the objects digest of each. The device's workers ask for them every pass, and every
//! other device comparing slots asks for a whole policy's once per pass, so they are kept
//! between calls instead of being walked from the directories each time.
//!
//! A kept summary is used while all of these hold:
//! - nothing the store did changed the partition's committed fragments since its walk began:
//!   every commit, delete and quarantine bumps the partition's generation after its
//!   file-system change, and a walk's summary is kept only if the generation read before
//!   the walk is still current;
//! - the partition's directory is the one walked (same device and inode, one `stat` per use):
//!   a wiped tree or a replaced disk is noticed at once;
//! - it is younger than the store's `summary_max_age`: a file removed behind the store's back
//!   (by hand, by a file-system repair) is noticed within that.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nimbus_core::ids::PartitionId;

use super::{ListedFragment, objects_digest, parse_fragment_name};

/// What a partition holds committed on this device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionSummary {
    /// Each fragment index with a committed fragment here, ascending, with the
    /// [`objects_digest`] of that index.
    pub digests: Vec<(u8, [u8; 32])>,
}

impl PartitionSummary {
    /// Summarizes a partition's listing (sorted, as `list_partition` returns it).
    #[must_use]
    pub fn of(fragments: &[ListedFragment]) -> Self {
        let mut indexes: Vec<u8> = fragments
            .iter()
            .filter(|f| f.durable)
            .map(|f| f.index)
            .collect();
        indexes.sort_unstable();
        indexes.dedup();
        PartitionSummary {
            digests: indexes
                .into_iter()
                .map(|i| (i, objects_digest(fragments, Some(i))))
                .collect(),
        }
    }

    /// The objects digest of fragment index `index` here: that of no object when none is held.
    #[must_use]
    pub fn digest(&self, index: u8) -> [u8; 32] {
        self.digests
            .iter()
            .find(|(i, _)| *i == index)
            .map_or_else(|| objects_digest(&[], Some(index)), |(_, d)| *d)
    }

    /// The fragment indexes held committed here, ascending.
    pub fn indexes(&self) -> impl Iterator<Item = u8> + '_ {
        self.digests.iter().map(|(i, _)| *i)
    }
}

/// A directory's (device, inode); `None` when there is no directory.
pub(super) type DirId = Option<(u64, u64)>;

/// A summary kept from a walk.
#[derive(Clone, Debug)]
pub(super) struct Kept {
    dir: DirId,
    at: Instant,
    summary: Arc<PartitionSummary>,
}

#[derive(Debug, Default)]
struct Slot {
    /// Bumped by every change the store makes to the partition's committed fragments.
    generation: u64,
    kept: Option<Kept>,
}

/// The kept summaries of one device's partitions.
#[derive(Debug)]
pub(super) struct Summaries {
    max_age: Duration,
    slots: Mutex<HashMap<(String, u32), Slot>>,
}

/// What is known of a partition before looking at its directory.
#[derive(Debug)]
pub(super) struct Ask {
    /// The partition's generation when asked.
    pub generation: u64,
    /// Its kept summary, if young enough to use.
    pub kept: Option<Kept>,
}

/// What looking at a partition's directory gave.
#[derive(Debug)]
pub(super) enum Found {
    /// The directory is the one the kept summary was walked from.
    Kept(Arc<PartitionSummary>),
    /// Walked: the directory's identity before the walk, and what it holds.
    Walked {
        dir: DirId,
        fragments: Vec<ListedFragment>,
    },
}

impl Summaries {
    pub(super) fn new(max_age: Duration) -> Self {
        Summaries {
            max_age,
            slots: Mutex::default(),
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u32), Slot>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks a partition's committed fragments changed; called after the change is made.
    pub(super) fn changed(&self, policy: &str, partition: PartitionId) {
        let mut slots = self.slots();
        let slot = slots.entry((policy.to_owned(), partition.0)).or_default();
        slot.generation = slot.generation.wrapping_add(1);
        slot.kept = None;
    }

    /// Marks every partition changed: for a change whose partition is unknown.
    pub(super) fn all_changed(&self) {
        for slot in self.slots().values_mut() {
            slot.generation = slot.generation.wrapping_add(1);
            slot.kept = None;
        }
    }

    /// What is known of a partition now.
    pub(super) fn ask(&self, policy: &str, partition: PartitionId) -> Ask {
        let mut slots = self.slots();
        let slot = slots.entry((policy.to_owned(), partition.0)).or_default();
        Ask {
            generation: slot.generation,
            kept: slot.kept.clone().filter(|k| k.at.elapsed() < self.max_age),
        }
    }

    /// Keeps the summary of a walk that began at `generation`, unless the store changed the
    /// partition since: that walk may have missed the change.
    pub(super) fn keep(
        &self,
        policy: &str,
        partition: PartitionId,
        generation: u64,
        dir: DirId,
        summary: Arc<PartitionSummary>,
    ) {
        let mut slots = self.slots();
        let slot = slots.entry((policy.to_owned(), partition.0)).or_default();
        if slot.generation == generation {
            slot.kept = Some(Kept {
                dir,
                at: Instant::now(),
                summary,
            });
        }
    }
}

/// Blocking: the kept summary if `dir` is still the directory it was walked from, else a walk.
pub(super) fn check_or_walk(dir: &Path, kept: Option<&Kept>) -> io::Result<Found> {
    let id = dir_id(dir)?;
    if let Some(kept) = kept
        && kept.dir == id
    {
        return Ok(Found::Kept(Arc::clone(&kept.summary)));
    }
    Ok(Found::Walked {
        dir: id,
        fragments: walk(dir)?,
    })
}

/// Blocking: the (device, inode) of directory `dir`, `None` if there is none.
pub(super) fn dir_id(dir: &Path) -> io::Result<DirId> {
    match rustix::fs::stat(dir) {
        Ok(st) if rustix::fs::FileType::from_raw_mode(st.st_mode).is_dir() => {
            #[allow(clippy::useless_conversion)] // the field types differ between targets
            Ok(Some((u64::from(st.st_dev), u64::from(st.st_ino))))
        }
        Ok(_) => Ok(None),
        Err(e) if e == rustix::io::Errno::NOENT || e == rustix::io::Errno::NOTDIR => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Blocking: every fragment under partition directory `dir`, sorted. Directories that vanish
/// during the walk (the collector removing an object's last file) are passed over.
pub(super) fn walk(dir: &Path) -> io::Result<Vec<ListedFragment>> {
    let mut out = Vec::new();
    for prefix in names(dir)? {
        let pdir = dir.join(&prefix);
        for object_hash in names(&pdir)? {
            for name in names(&pdir.join(&object_hash))? {
                if let Some(f) = parse_fragment_name(&object_hash, &name) {
                    out.push(f);
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The names in directory `dir`: none when it is missing or not a directory.
fn names(dir: &Path) -> io::Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(Vec::new());
        }
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for entry in entries {
        if let Some(name) = entry?.file_name().to_str() {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(index: u8) -> Arc<PartitionSummary> {
        Arc::new(PartitionSummary {
            digests: vec![(index, [index; 32])],
        })
    }

    #[test]
    fn a_walk_overtaken_by_a_change_is_not_kept() {
        let s = Summaries::new(Duration::from_secs(60));
        let p = PartitionId(3);
        // A walk with no change under way is kept.
        let ask = s.ask("ec4+2", p);
        assert!(ask.kept.is_none());
        s.keep("ec4+2", p, ask.generation, Some((1, 2)), summary(1));
        let kept = s.ask("ec4+2", p).kept.unwrap();
        assert_eq!(kept.summary, summary(1));
        // A change made while a walk was under way: that walk may have missed it.
        let ask = s.ask("ec4+2", p);
        s.changed("ec4+2", p);
        s.keep("ec4+2", p, ask.generation, Some((1, 2)), summary(2));
        assert!(s.ask("ec4+2", p).kept.is_none());
        // Other partitions and policies are untouched by it; `all_changed` drops them too.
        let q = s.ask("rep3", p);
        s.keep("rep3", p, q.generation, None, summary(4));
        s.changed("ec4+2", PartitionId(4));
        assert!(s.ask("rep3", p).kept.is_some());
        s.all_changed();
        assert!(s.ask("rep3", p).kept.is_none());
    }

    #[test]
    fn a_summary_is_dropped_once_too_old() {
        let s = Summaries::new(Duration::ZERO);
        let ask = s.ask("ec4+2", PartitionId(1));
        s.keep("ec4+2", PartitionId(1), ask.generation, None, summary(0));
        assert!(s.ask("ec4+2", PartitionId(1)).kept.is_none());
    }
}
