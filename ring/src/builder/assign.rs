//! The assignment passes of a rebalance: they decide which device holds each slot.
//!
//! 1. *Place*: slots with no device (a new builder) get one, and slots on removed or
//!    zero-weight devices are moved off them.
//! 2. *Disperse*: a partition with more slots in a failure domain than the domain's cap
//!    moves the extra slots to domains below their caps.
//! 3. *Balance*: slots move from devices above their quota to devices below it, only where
//!    the move keeps the partition dispersed, until every device holds its quota or no legal
//!    move is left.
//!
//! A device is chosen by descending the failure-domain tree, at each level taking the child
//! furthest below its quota (relative to the quota) among those where the partition is below
//! the child's cap. Moving a slot never places two slots of a partition on one device and
//! never breaks a cap. Every data move is counted per partition: at most `max_moves` slots
//! of a partition change device in one rebalance, and none in a partition that moved within
//! `min_part_hours` (`frozen`). Placing a slot that had no device moves no data and is free.

use crate::rng::mix64;
use crate::topology::{DomainIdx, Topology};

/// A table entry for a slot that has no device yet.
pub(crate) const NONE: u16 = u16::MAX;

/// How many balance passes a rebalance makes at most; each pass after the first only picks
/// up the few moves that earlier moves made legal.
const MAX_BALANCE_PASSES: usize = 8;

/// The chain search visits at most this many times the number of partitions (and at least
/// [`CHAIN_BUDGET_MIN`] partitions), so that a rebalance stays fast even when the last few
/// slots cannot be placed exactly.
const CHAIN_BUDGET_SCANS: usize = 16;
const CHAIN_BUDGET_MIN: usize = 1 << 20;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Any device below its caps; prefer the one furthest below quota.
    Place,
    /// Only a device below its quota (and below its caps).
    Balance,
    /// Any active device the partition does not use yet, ignoring caps: the last resort for a
    /// slot that must have a device.
    Anywhere,
}

pub(super) struct Assigner<'a> {
    topo: &'a Topology,
    slots: usize,
    table: &'a mut [u16],
    original: Vec<u16>,
    /// Slots held per domain.
    assigned: Vec<i64>,
    /// The device index of each leaf domain.
    leaf_device: Vec<u16>,
    /// Weight > 0 and not removed.
    active: &'a [bool],
    /// Per partition: slots whose device differs from `original` (data moves).
    moved: Vec<u8>,
    frozen: &'a [bool],
    max_moves: u8,
    seed: u64,
}

impl<'a> Assigner<'a> {
    pub(super) fn new(
        topo: &'a Topology,
        table: &'a mut [u16],
        active: &'a [bool],
        frozen: &'a [bool],
        max_moves: u8,
        seed: u64,
    ) -> Self {
        let slots = topo.slots as usize;
        let mut assigned = vec![0i64; topo.domains.len()];
        let mut leaf_device = vec![NONE; topo.domains.len()];
        for (dev, path) in topo.paths.iter().enumerate() {
            leaf_device[path[3] as usize] = u16::try_from(dev).expect("device index fits u16");
        }
        for &dev in table.iter() {
            if dev != NONE {
                for idx in topo.paths[usize::from(dev)] {
                    assigned[idx as usize] += 1;
                }
            }
        }
        let partitions = table.len() / slots;
        Assigner {
            topo,
            slots,
            original: table.to_vec(),
            table,
            assigned,
            leaf_device,
            active,
            moved: vec![0; partitions],
            frozen,
            max_moves,
            seed,
        }
    }

    /// Runs the three passes over the partitions in `order`.
    pub(super) fn run(&mut self, order: &[u32]) {
        for &p in order {
            self.place(p as usize);
        }
        for &p in order {
            self.disperse(p as usize);
        }
        for _ in 0..MAX_BALANCE_PASSES {
            let mut moves = 0;
            for &p in order {
                moves += self.balance(p as usize);
            }
            if moves == 0 {
                break;
            }
        }
        self.balance_by_chains(order);
    }

    /// Fixes what single moves cannot: a device `u` below quota that no partition holding an
    /// over-quota device can hand a slot to without breaking a cap. It searches breadth-first
    /// for a chain of moves `o → y_k → … → y_1 → u`, each in a partition where it is legal,
    /// from an over-quota device `o`: every device on the chain gives one slot and takes one,
    /// so only `o` and `u` change count. Such a chain always exists while quotas are unmet
    /// (the quotas and caps form a flow problem with an integral solution), so the search
    /// stops only at its budget. It runs only on what the balance passes left, which is
    /// usually nothing.
    fn balance_by_chains(&mut self, order: &[u32]) {
        let mut budget = (CHAIN_BUDGET_SCANS * order.len()).max(CHAIN_BUDGET_MIN);
        let devices = self.active.len() as u16;
        loop {
            let mut progress = false;
            for u in 0..devices {
                while self.under_quota(u) {
                    match self.chain_into(u, order, &mut budget) {
                        Some(true) => progress = true,
                        Some(false) => break,
                        None => return,
                    }
                }
            }
            if !progress {
                return;
            }
        }
    }

    /// Finds and applies one chain ending at `u`; returns whether it moved anything, or
    /// `None` when the budget ran out.
    fn chain_into(&mut self, u: u16, order: &[u32], budget: &mut usize) -> Option<bool> {
        let n = self.active.len();
        // via[y] = (x, p, s): y gives its slot s of partition p to x, one step nearer u.
        let mut via: Vec<Option<(u16, usize, usize)>> = vec![None; n];
        let mut reached = vec![false; n];
        reached[usize::from(u)] = true;
        let mut frontier = vec![u];
        while !frontier.is_empty() {
            let mut next = Vec::new();
            for &p in order {
                let p = p as usize;
                *budget = budget.checked_sub(frontier.len())?;
                for s in 0..self.slots {
                    let y = self.table[p * self.slots + s];
                    if y == NONE || reached[usize::from(y)] || !self.can_change(p, s) {
                        continue;
                    }
                    let Some(&x) = frontier.iter().find(|&&x| self.fits(p, s, x)) else {
                        continue;
                    };
                    reached[usize::from(y)] = true;
                    via[usize::from(y)] = Some((x, p, s));
                    if self.over_quota(y) {
                        return Some(self.apply_chain(y, u, &via));
                    }
                    next.push(y);
                }
            }
            frontier = next;
        }
        Some(false)
    }

    /// Applies the chain from `from` to `u`, checking each move again: two steps of one chain
    /// may share a partition. Stops at the first step that is no longer legal; every applied
    /// step was legal, so the table stays valid either way.
    fn apply_chain(&mut self, from: u16, u: u16, via: &[Option<(u16, usize, usize)>]) -> bool {
        let mut y = from;
        while y != u {
            let Some((x, p, s)) = via[usize::from(y)] else {
                return false;
            };
            if self.table[p * self.slots + s] != y || !self.can_change(p, s) || !self.fits(p, s, x)
            {
                return false;
            }
            self.set(p, s, x);
            y = x;
        }
        true
    }

    fn under_quota(&self, dev: u16) -> bool {
        let leaf = self.topo.paths[usize::from(dev)][3] as usize;
        self.active[usize::from(dev)] && self.assigned[leaf] < self.topo.domains[leaf].quota as i64
    }

    /// Returns whether slot `s` of partition `p` may move to device `to` without breaking a
    /// cap or repeating a device.
    fn fits(&self, p: usize, s: usize, to: u16) -> bool {
        if !self.active[usize::from(to)] {
            return false;
        }
        let devs = &self.table[p * self.slots..(p + 1) * self.slots];
        let target = &self.topo.paths[usize::from(to)];
        (0..4).all(|t| {
            let count = devs
                .iter()
                .enumerate()
                .filter(|&(k, &d)| {
                    k != s && d != NONE && self.topo.paths[usize::from(d)][t] == target[t]
                })
                .count();
            count < self.topo.domains[target[t] as usize].cap as usize
        })
    }

    fn place(&mut self, p: usize) {
        for s in 0..self.slots {
            let dev = self.table[p * self.slots + s];
            let must = dev == NONE || (!self.active[usize::from(dev)] && self.can_change(p, s));
            if !must {
                continue;
            }
            let choice = self
                .choose(p, s, Mode::Place)
                .or_else(|| self.choose(p, s, Mode::Anywhere));
            if let Some(to) = choice {
                self.set(p, s, to);
            }
        }
    }

    fn disperse(&mut self, p: usize) {
        for _ in 0..self.slots {
            let Some(s) = self.worst_crowded_slot(p) else {
                return;
            };
            if !self.can_change(p, s) {
                return;
            }
            match self.choose(p, s, Mode::Place) {
                Some(to) => self.set(p, s, to),
                None => return,
            }
        }
    }

    /// Moves at most one slot of `p` per pass, so that the moves a change needs are spread
    /// over many partitions (each keeping more of its redundancy while data moves) and only
    /// piled onto one partition when no other partition can take them.
    fn balance(&mut self, p: usize) -> usize {
        for s in 0..self.slots {
            let dev = self.table[p * self.slots + s];
            if dev == NONE || !self.over_quota(dev) || !self.can_change(p, s) {
                continue;
            }
            if let Some(to) = self.choose(p, s, Mode::Balance) {
                self.set(p, s, to);
                return 1;
            }
        }
        0
    }

    fn over_quota(&self, dev: u16) -> bool {
        let leaf = self.topo.paths[usize::from(dev)][3] as usize;
        self.assigned[leaf] > self.topo.domains[leaf].quota as i64
    }

    /// Returns whether slot `s` of partition `p` may change device now.
    fn can_change(&self, p: usize, s: usize) -> bool {
        let i = p * self.slots + s;
        if self.original[i] == NONE || self.table[i] != self.original[i] {
            return true; // no data there yet, or this slot's move is already counted
        }
        !self.frozen[p] && self.moved[p] < self.max_moves
    }

    fn set(&mut self, p: usize, s: usize, to: u16) {
        let i = p * self.slots + s;
        let from = self.table[i];
        if from != NONE {
            for idx in self.topo.paths[usize::from(from)] {
                self.assigned[idx as usize] -= 1;
            }
        }
        for idx in self.topo.paths[usize::from(to)] {
            self.assigned[idx as usize] += 1;
        }
        if self.original[i] != NONE {
            let was = from != self.original[i];
            let will = to != self.original[i];
            match (was, will) {
                (false, true) => self.moved[p] += 1,
                (true, false) => self.moved[p] -= 1,
                _ => {}
            }
        }
        self.table[i] = to;
    }

    /// Returns the slot of `p` to move first to fix its dispersion: among slots on active
    /// devices in a domain holding more of `p` than its cap, the one whose device is furthest
    /// above quota.
    fn worst_crowded_slot(&self, p: usize) -> Option<usize> {
        let devs = &self.table[p * self.slots..(p + 1) * self.slots];
        let mut best: Option<(i64, usize)> = None;
        for (s, &dev) in devs.iter().enumerate() {
            if dev == NONE || !self.active[usize::from(dev)] {
                continue;
            }
            let path = &self.topo.paths[usize::from(dev)];
            let crowded = (0..3).any(|tier| {
                let dom = path[tier];
                let count = devs
                    .iter()
                    .filter(|&&d| d != NONE && self.topo.paths[usize::from(d)][tier] == dom)
                    .count();
                count > self.topo.domains[dom as usize].cap as usize
            });
            if crowded {
                let leaf = path[3] as usize;
                let excess = self.assigned[leaf] - self.topo.domains[leaf].quota as i64;
                if best.is_none_or(|(e, _)| excess > e) {
                    best = Some((excess, s));
                }
            }
        }
        best.map(|(_, s)| s)
    }

    /// Chooses a device for slot `s` of partition `p`, or `None` if `mode` allows none.
    fn choose(&self, p: usize, s: usize, mode: Mode) -> Option<u16> {
        let base = p * self.slots;
        let mut others = [[DomainIdx::MAX; 4]; nimbus_core::policy::MAX_SLOTS as usize];
        let mut n = 0;
        for (k, &dev) in self.table[base..base + self.slots].iter().enumerate() {
            if k != s && dev != NONE {
                others[n] = self.topo.paths[usize::from(dev)];
                n += 1;
            }
        }
        let current = self.table[base + s];
        let here = if current == NONE {
            [DomainIdx::MAX; 4]
        } else {
            self.topo.paths[usize::from(current)]
        };
        let ctx = Choice {
            others: &others[..n],
            here,
            mode,
            salt: mix64(self.seed ^ ((p as u64) << 8) ^ s as u64),
        };
        self.descend(0, 0, &ctx)
    }

    fn descend(&self, dom: DomainIdx, depth: usize, ctx: &Choice<'_>) -> Option<u16> {
        if depth == 4 {
            let dev = self.leaf_device[dom as usize];
            return self.active[usize::from(dev)].then_some(dev);
        }
        let children = &self.topo.domains[dom as usize].children;
        let mut tried: Vec<DomainIdx> = Vec::new();
        loop {
            let mut best: Option<(f64, u64, DomainIdx)> = None;
            for &k in children {
                let d = &self.topo.domains[k as usize];
                if d.capacity == 0 || tried.contains(&k) {
                    continue;
                }
                let deficit =
                    d.quota as i64 - self.assigned[k as usize] + i64::from(ctx.here[depth] == k);
                if ctx.mode == Mode::Balance && deficit <= 0 {
                    continue;
                }
                let score = deficit as f64 / d.quota.max(1) as f64;
                let tie = mix64(ctx.salt ^ u64::from(k));
                if best.is_none_or(|(bs, bt, _)| score > bs || (score == bs && tie > bt)) {
                    best = Some((score, tie, k));
                }
            }
            let (_, _, k) = best?;
            let count = ctx.others.iter().filter(|path| path[depth] == k).count();
            let room = match ctx.mode {
                Mode::Anywhere => depth < 3 || count == 0,
                Mode::Place | Mode::Balance => count < self.topo.domains[k as usize].cap as usize,
            };
            if room && let Some(dev) = self.descend(k, depth + 1, ctx) {
                return Some(dev);
            }
            tried.push(k);
        }
    }
}

struct Choice<'a> {
    /// Paths of the partition's other slots' devices.
    others: &'a [[DomainIdx; 4]],
    /// Path of the slot's current device (its own slot does not count against it).
    here: [DomainIdx; 4],
    mode: Mode,
    salt: u64,
}
