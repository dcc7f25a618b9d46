//! Storage policies: how an object's bytes are made redundant. A policy decides how many slots
//! each partition of its ring has (`n` replicas, or `k + m` fragment indexes) and how many of
//! them may move at once without the data becoming unreadable.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// The most slots a partition may have: far beyond any sensible policy, small enough that a
/// partition's devices fit in a few cache lines.
pub const MAX_SLOTS: u8 = 32;

/// The longest policy name accepted.
pub const MAX_NAME_BYTES: usize = 64;

/// How a policy makes data redundant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PolicyKind {
    /// `replicas` full copies.
    Replication {
        /// Number of copies, 1 to [`MAX_SLOTS`].
        replicas: u8,
    },
    /// Reed-Solomon: `data` data fragments and `parity` parity fragments; any `data` of them
    /// rebuild the segment.
    ErasureCoding {
        /// Data fragments per segment (`k`).
        data: u8,
        /// Parity fragments per segment (`m`).
        parity: u8,
    },
}

impl PolicyKind {
    /// Returns the number of slots a partition has under this policy: replicas, or `k + m`.
    #[must_use]
    pub fn slot_count(self) -> u8 {
        match self {
            PolicyKind::Replication { replicas } => replicas,
            PolicyKind::ErasureCoding { data, parity } => data + parity,
        }
    }

    /// Returns how many slots of one partition may move in one rebalance while the partition
    /// stays readable: `m` for erasure coding, `n - 1` for replication (at least 1, so that a
    /// single-replica ring can still be rebalanced).
    #[must_use]
    pub fn max_slot_moves(self) -> u8 {
        match self {
            PolicyKind::Replication { replicas } => replicas.saturating_sub(1).max(1),
            PolicyKind::ErasureCoding { parity, .. } => parity,
        }
    }

    fn validate(self) -> Result<(), PolicyError> {
        let (low, total) = match self {
            PolicyKind::Replication { replicas } => (replicas, u16::from(replicas)),
            PolicyKind::ErasureCoding { data, parity } => {
                (data.min(parity), u16::from(data) + u16::from(parity))
            }
        };
        if low == 0 {
            return Err(PolicyError::ZeroCount);
        }
        if total > u16::from(MAX_SLOTS) {
            return Err(PolicyError::TooManySlots { slots: total });
        }
        Ok(())
    }
}

/// A named storage policy, such as `rep3` or `ec4+2`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct StoragePolicy {
    name: String,
    #[serde(flatten)]
    kind: PolicyKind,
}

impl StoragePolicy {
    /// Returns a policy after checking its name and counts.
    ///
    /// # Errors
    /// [`PolicyError`] when the name is empty, too long or uses characters other than
    /// `a-z 0-9 . _ + -`, when a count is zero, or when there would be more than
    /// [`MAX_SLOTS`] slots.
    pub fn new(name: impl Into<String>, kind: PolicyKind) -> Result<Self, PolicyError> {
        let name = name.into();
        validate_name(&name)?;
        kind.validate()?;
        Ok(StoragePolicy { name, kind })
    }

    /// Returns the policy's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Returns how the policy makes data redundant.
    #[must_use]
    pub fn kind(&self) -> PolicyKind {
        self.kind
    }

    /// Returns the number of slots per partition; see [`PolicyKind::slot_count`].
    #[must_use]
    pub fn slot_count(&self) -> u8 {
        self.kind.slot_count()
    }

    /// Returns the most slots of a partition one rebalance may move; see
    /// [`PolicyKind::max_slot_moves`].
    #[must_use]
    pub fn max_slot_moves(&self) -> u8 {
        self.kind.max_slot_moves()
    }
}

impl fmt::Display for StoragePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            PolicyKind::Replication { replicas } => {
                write!(f, "{} ({replicas} replicas)", self.name)
            }
            PolicyKind::ErasureCoding { data, parity } => {
                write!(f, "{} (erasure coding {data}+{parity})", self.name)
            }
        }
    }
}

/// Parses the canonical spellings `repN` and `ecK+M`, naming the policy after its spelling.
impl FromStr for StoragePolicy {
    type Err = PolicyError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let bad = || PolicyError::Unrecognized {
            spec: spec.to_owned(),
        };
        let kind = if let Some(n) = spec.strip_prefix("rep") {
            PolicyKind::Replication {
                replicas: n.parse().map_err(|_| bad())?,
            }
        } else if let Some(km) = spec.strip_prefix("ec") {
            let (k, m) = km.split_once('+').ok_or_else(bad)?;
            PolicyKind::ErasureCoding {
                data: k.parse().map_err(|_| bad())?,
                parity: m.parse().map_err(|_| bad())?,
            }
        } else {
            return Err(bad());
        };
        StoragePolicy::new(spec, kind)
    }
}

/// Checks a storage policy name: 1 to 64 of `a-z 0-9 . _ + -`, not starting with `.` (names
/// are directory names on every device, so `.` and `..` must never be one).
///
/// # Errors
/// [`PolicyError::BadName`].
pub fn validate_name(name: &str) -> Result<(), PolicyError> {
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._+-".contains(c);
    if name.is_empty()
        || name.len() > MAX_NAME_BYTES
        || name.starts_with('.')
        || !name.chars().all(allowed)
    {
        return Err(PolicyError::BadName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Why a storage policy was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The spelling is neither `repN` nor `ecK+M`.
    #[error(
        "unrecognized storage policy {spec:?}: expected repN (e.g. rep3) or ecK+M (e.g. ec4+2)"
    )]
    Unrecognized {
        /// What was given.
        spec: String,
    },
    /// The name is empty, too long, has characters outside `a-z 0-9 . _ + -`, or starts with `.`.
    #[error(
        "bad storage policy name {name:?}: use 1 to 64 of a-z, 0-9, '.', '_', '+' and '-', not starting with '.'"
    )]
    BadName {
        /// What was given.
        name: String,
    },
    /// A replica, data or parity count of zero.
    #[error(
        "a storage policy needs at least one replica, or at least one data and one parity fragment"
    )]
    ZeroCount,
    /// More slots per partition than [`MAX_SLOTS`].
    #[error("a storage policy may have at most {MAX_SLOTS} slots per partition, not {slots}")]
    TooManySlots {
        /// The slots asked for.
        slots: u16,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_canonical_spellings() {
        let ec: StoragePolicy = "ec4+2".parse().unwrap();
        assert_eq!(ec.slot_count(), 6);
        assert_eq!(ec.max_slot_moves(), 2);
        let rep: StoragePolicy = "rep3".parse().unwrap();
        assert_eq!(rep.slot_count(), 3);
        assert_eq!(rep.max_slot_moves(), 2);
        let rep1: StoragePolicy = "rep1".parse().unwrap();
        assert_eq!(rep1.max_slot_moves(), 1);
    }

    #[test]
    fn refuses_bad_policies() {
        for spec in [
            "", "rep", "rep0", "ec4", "ec0+2", "ec4+0", "ec30+3", "raid5", "ec4+-1",
        ] {
            assert!(
                spec.parse::<StoragePolicy>().is_err(),
                "{spec} was accepted"
            );
        }
        assert!(StoragePolicy::new("Gold", PolicyKind::Replication { replicas: 3 }).is_err());
        for dotted in ["..", ".", ".rep3"] {
            assert!(validate_name(dotted).is_err(), "{dotted}");
        }
    }
}
