//! The metadata leader's liveness duty (DESIGN.md, "Index", liveness): storage nodes post
//! heartbeats naming their devices to `POST /meta/heartbeat` (see `raft::server`); the leader
//! records them in a [`LivenessTracker`] and, every tick, proposes through Raft the
//! [`MapCommand::MarkDevice`] commands the tracker decides on.
//!
//! The decisions (when a device is down, when it may come back, flap damping) are the pure
//! tracker's; this module does the I/O around it: the clock, Raft's metrics, Raft writes.
//! Heartbeats never enter the Raft log; only changes of a device's state do.
//!
//! **Invariants:**
//! - Only the leader records heartbeats and proposes: a member that is not the leader
//!   refuses a heartbeat with a leader hint, and drops its tracker at its next tick.
//! - A tracker serves one term: a member that becomes leader, or leads again in a later
//!   term, starts a fresh one, which marks nothing down until it has led for
//!   [`LivenessConfig::timeout_ms`]. So a new leader never marks down a device that was
//!   heartbeating to the previous one.
//! - One task per member ([`Liveness::run`]), owned by its `MetaNode` and stopped by its
//!   shutdown; each of its Raft writes is bounded by the request timeout, and none holds the
//!   tracker's lock across an `.await`.
//! - Time is the member's wall clock in Unix milliseconds: heartbeats carry no time of the
//!   sender's, so a node's clock never decides whether its devices are up.

use std::net::SocketAddr;
use std::sync::{Mutex as StdMutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Raft, RaftMetrics};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tracing::{debug, info, warn};

use super::server::LeaderHint;
use super::state_machine::MapReader;
use super::{MapRaft, NodeId};
use crate::liveness::{LivenessConfig, LivenessTracker};
use crate::map::{DeviceKey, MapCommand, Millis};

/// The leader's tracker and the term it serves.
#[derive(Debug)]
struct TermTracker {
    term: u64,
    tracker: LivenessTracker,
}

/// A member's liveness duty: shared by its heartbeat handler and its liveness task. See the
/// module documentation.
pub struct Liveness {
    id: NodeId,
    raft: Raft<MapRaft>,
    reader: MapReader,
    config: LivenessConfig,
    tick: Duration,
    request_timeout: Duration,
    /// `Some` only while this member leads (as of its last heartbeat or tick).
    tracker: StdMutex<Option<TermTracker>>,
}

impl std::fmt::Debug for Liveness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Liveness")
            .field("id", &self.id)
            .field("config", &self.config)
            .field("tick", &self.tick)
            .finish_non_exhaustive()
    }
}

impl Liveness {
    /// Returns the duty of member `id`: heartbeats time out after `config.timeout_ms`, and
    /// the leader proposes changes every `tick`, each write bounded by `request_timeout`.
    #[must_use]
    pub fn new(
        id: NodeId,
        raft: Raft<MapRaft>,
        reader: MapReader,
        config: LivenessConfig,
        tick: Duration,
        request_timeout: Duration,
    ) -> Self {
        Liveness {
            id,
            raft,
            reader,
            config,
            tick,
            request_timeout,
            tracker: StdMutex::new(None),
        }
    }

    /// Records that node `node` reported `devices` alive now, if this member leads.
    ///
    /// # Errors
    /// The leader hint, when this member is not the leader (the caller resends there).
    pub fn heartbeat(&self, node: SocketAddr, devices: &[String]) -> Result<(), LeaderHint> {
        let term = self.leading_term()?;
        let now_ms = now_ms();
        let mut guard = self.lock();
        let tracker = tracker_for(&mut guard, term, self.config, now_ms);
        for device in devices {
            tracker.heartbeat(
                DeviceKey {
                    node,
                    device: device.clone(),
                },
                now_ms,
            );
        }
        Ok(())
    }

    /// Every tick, while this member leads, proposes the device state changes its tracker
    /// decides on; returns when `stop` turns `true` (or its sender is dropped).
    ///
    /// # Cancel safety
    /// Cancel safe between writes; a write dropped mid-flight may still be applied, which is
    /// harmless: marking a device as it already is changes nothing.
    pub async fn run(&self, mut stop: watch::Receiver<bool>) {
        let mut ticks = tokio::time::interval(self.tick);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let work = async {
            loop {
                ticks.tick().await;
                self.propose_changes().await;
            }
        };
        tokio::select! {
            // An error means the sender is gone: stop too.
            _ = stop.wait_for(|stopped| *stopped) => {}
            () = work => {}
        }
        debug!(id = self.id, "liveness task stopped");
    }

    /// One tick: asks the tracker what changed and writes it through Raft, in order,
    /// stopping at the first write that fails (the next tick proposes it again, because the
    /// map still disagrees with the heartbeats).
    async fn propose_changes(&self) {
        let Ok(term) = self.leading_term() else {
            if self.lock().take().is_some() {
                debug!(
                    id = self.id,
                    "no longer the leader; liveness tracker dropped"
                );
            }
            return;
        };
        let now_ms = now_ms();
        let map = self.reader.current();
        let proposals = {
            let mut guard = self.lock();
            tracker_for(&mut guard, term, self.config, now_ms).proposals(&map, now_ms)
        };
        for command in proposals {
            // The tracker proposes nothing else; anything else would be a bug, not data.
            let MapCommand::MarkDevice { device, up, .. } = &command else {
                continue;
            };
            let (node, name, up) = (device.node, device.device.clone(), *up);
            let written =
                tokio::time::timeout(self.request_timeout, self.raft.client_write(command)).await;
            match written {
                Ok(Ok(_)) if up => info!(%node, device = %name, "device marked up"),
                Ok(Ok(_)) => info!(%node, device = %name, "device marked down"),
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                    debug!(id = self.id, "lost leadership while marking devices");
                    self.lock().take();
                    return;
                }
                Ok(Err(e)) => {
                    warn!(%node, device = %name, up, error = %e, "marking a device failed");
                    return;
                }
                Err(_) => {
                    warn!(%node, device = %name, up, timeout = ?self.request_timeout,
                        "marking a device was not committed in time");
                    return;
                }
            }
        }
    }

    /// Returns the current term if this member is the leader, else where the leader is.
    fn leading_term(&self) -> Result<u64, LeaderHint> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        if metrics.state.is_leader() && metrics.current_leader == Some(self.id) {
            Ok(metrics.current_term)
        } else {
            Err(leader_hint(&metrics))
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<TermTracker>> {
        // The tracker is left consistent at every point a panic could leave the lock.
        self.tracker.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Returns the tracker of `term`, starting a fresh one at `now_ms` for a new term.
fn tracker_for(
    slot: &mut Option<TermTracker>,
    term: u64,
    config: LivenessConfig,
    now_ms: Millis,
) -> &mut LivenessTracker {
    if slot.as_ref().is_none_or(|t| t.term != term) {
        info!(term, "leading: liveness tracker started");
    }
    let current = match slot.take() {
        Some(t) if t.term == term => t,
        _ => TermTracker {
            term,
            tracker: LivenessTracker::new(config, now_ms),
        },
    };
    &mut slot.insert(current).tracker
}

/// Returns where a member that is not the leader says the leader is.
pub(crate) fn leader_hint(metrics: &RaftMetrics<NodeId, BasicNode>) -> LeaderHint {
    let leader_addr = metrics.current_leader.and_then(|l| {
        metrics
            .membership_config
            .membership()
            .get_node(&l)
            .map(|n| n.addr.clone())
    });
    LeaderHint {
        leader_id: metrics.current_leader,
        leader_addr,
    }
}

/// Returns the wall clock in Unix milliseconds (0 before 1970, which no clock reports).
fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{DeviceSpec, Location};
    use crate::map::ClusterMap;

    const CFG: LivenessConfig = LivenessConfig {
        timeout_ms: 10,
        flap_window_ms: 100,
        max_flaps: 4,
        hold_down_ms: 50,
    };

    fn key() -> DeviceKey {
        DeviceKey {
            node: SocketAddr::from(([10, 0, 0, 1], 6200)),
            device: "d0".into(),
        }
    }

    fn map_with_one_device() -> ClusterMap {
        let mut map = ClusterMap::new();
        let commands = [
            MapCommand::CreatePolicy {
                spec: "rep1".into(),
                part_power: 2,
                min_part_hours: 0,
                seed: 0,
                hash_key: [0; 32],
                make_default: true,
            },
            MapCommand::AddDevice {
                policy: "rep1".into(),
                device: DeviceSpec {
                    location: Location {
                        region: 0,
                        zone: 0,
                        node: key().node,
                        name: key().device,
                    },
                    weight: 1.0,
                },
                id: None,
            },
        ];
        for command in &commands {
            map.apply(command).unwrap();
        }
        map
    }

    #[test]
    fn a_tracker_is_kept_within_a_term_and_replaced_in_a_new_one() {
        let map = map_with_one_device();
        let mut slot = None;
        tracker_for(&mut slot, 3, CFG, 0).heartbeat(key(), 0);
        assert_eq!(slot.as_ref().map(|t| t.term), Some(3));
        // The same term keeps the tracker: silent since 0, the device is due down.
        let kept = tracker_for(&mut slot, 3, CFG, 50).proposals(&map, 50);
        assert_eq!(kept.len(), 1, "{kept:?}");
        // A new term starts afresh: nothing is marked down before `timeout_ms` of leading.
        let fresh = tracker_for(&mut slot, 5, CFG, 100).proposals(&map, 105);
        assert_eq!(slot.as_ref().map(|t| t.term), Some(5));
        assert!(fresh.is_empty(), "{fresh:?}");
        let settled = tracker_for(&mut slot, 5, CFG, 111).proposals(&map, 111);
        assert_eq!(settled.len(), 1, "{settled:?}");
    }
}
