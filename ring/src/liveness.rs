//! Device liveness, as the metadata leader sees it: storage nodes heartbeat their devices to
//! the leader; the leader proposes [`MapCommand::MarkDevice`] only when a device's state
//! changes, so heartbeats themselves never fill the Raft log.
//!
//! A device is marked down when no heartbeat has named it for `timeout_ms`, and up again when
//! heartbeats return. Flapping is damped: a device that changed state `max_flaps` times
//! within `flap_window_ms` is held down for `hold_down_ms` before it may come back up. A new
//! leader knows no history: it marks nothing down until it has led for `timeout_ms`.
//!
//! **Invariant:** pure: time is an argument, nothing is read from a clock.

use std::collections::{BTreeMap, VecDeque};

use crate::map::{ClusterMap, DeviceKey, MapCommand, Millis};

/// Tunables, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LivenessConfig {
    /// A device unheard of for this long is down.
    pub timeout_ms: Millis,
    /// The window in which state changes are counted.
    pub flap_window_ms: Millis,
    /// State changes within the window that make a device a flapper.
    pub max_flaps: usize,
    /// How long a flapper is held down.
    pub hold_down_ms: Millis,
}

impl Default for LivenessConfig {
    fn default() -> Self {
        LivenessConfig {
            timeout_ms: 15_000,
            flap_window_ms: 300_000,
            max_flaps: 4,
            hold_down_ms: 600_000,
        }
    }
}

#[derive(Debug, Default)]
struct Seen {
    last_heartbeat: Option<Millis>,
    /// When the leader proposed state changes for it, within the window.
    changes: VecDeque<Millis>,
    held_until: Millis,
}

/// The leader's liveness bookkeeping. See the module documentation.
#[derive(Debug)]
pub struct LivenessTracker {
    config: LivenessConfig,
    since: Millis,
    devices: BTreeMap<DeviceKey, Seen>,
}

impl LivenessTracker {
    /// Starts tracking at `now_ms` (when this member became leader).
    #[must_use]
    pub fn new(config: LivenessConfig, now_ms: Millis) -> Self {
        LivenessTracker {
            config,
            since: now_ms,
            devices: BTreeMap::new(),
        }
    }

    /// Records a heartbeat naming `device` at `now_ms`.
    pub fn heartbeat(&mut self, device: DeviceKey, now_ms: Millis) {
        let seen = self.devices.entry(device).or_default();
        seen.last_heartbeat = Some(seen.last_heartbeat.map_or(now_ms, |t| t.max(now_ms)));
    }

    /// Returns the commands that bring the map's view in line with the heartbeats, and
    /// records them as state changes (for damping). Propose them in order.
    pub fn proposals(&mut self, map: &ClusterMap, now_ms: Millis) -> Vec<MapCommand> {
        let c = self.config;
        let settled = now_ms.saturating_sub(self.since) >= c.timeout_ms;
        let mut out = Vec::new();
        for device in map.all_devices() {
            let seen = self.devices.entry(device.clone()).or_default();
            while seen
                .changes
                .front()
                .is_some_and(|&t| now_ms.saturating_sub(t) > c.flap_window_ms)
            {
                seen.changes.pop_front();
            }
            let alive = seen
                .last_heartbeat
                .is_some_and(|t| now_ms.saturating_sub(t) < c.timeout_ms);
            let up = map.is_up(&device);
            let change = if up && !alive && settled {
                Some(false)
            } else if !up && alive && now_ms >= seen.held_until {
                Some(true)
            } else {
                None
            };
            if let Some(to_up) = change {
                seen.changes.push_back(now_ms);
                if !to_up && seen.changes.len() >= c.max_flaps {
                    seen.held_until = now_ms.saturating_add(c.hold_down_ms);
                    tracing::warn!(node = %device.node, device = %device.device, "device flapping; held down");
                }
                out.push(MapCommand::MarkDevice {
                    device,
                    up: to_up,
                    now_ms,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::device::{DeviceSpec, Location};

    fn key(n: u8) -> DeviceKey {
        DeviceKey {
            node: SocketAddr::from(([10, 0, 0, n], 6200)),
            device: "d0".into(),
        }
    }

    fn map_with(devices: u8) -> ClusterMap {
        let mut m = ClusterMap::new();
        m.apply(&MapCommand::CreatePolicy {
            spec: "rep1".into(),
            part_power: 2,
            min_part_hours: 0,
            seed: 0,
            hash_key: [0; 32],
            make_default: true,
        })
        .unwrap();
        for n in 0..devices {
            let location = Location {
                region: 0,
                zone: u32::from(n),
                node: key(n).node,
                name: "d0".into(),
            };
            m.apply(&MapCommand::AddDevice {
                policy: "rep1".into(),
                device: DeviceSpec {
                    location,
                    weight: 1.0,
                },
                id: None,
            })
            .unwrap();
        }
        m
    }

    fn step(t: &mut LivenessTracker, m: &mut ClusterMap, now: Millis) -> usize {
        let props = t.proposals(m, now);
        for p in &props {
            m.apply(p).unwrap();
        }
        props.len()
    }

    const CFG: LivenessConfig = LivenessConfig {
        timeout_ms: 10,
        flap_window_ms: 1000,
        max_flaps: 4,
        hold_down_ms: 500,
    };

    #[test]
    fn a_silent_device_goes_down_and_comes_back_with_its_heartbeats() {
        let mut m = map_with(2);
        let mut t = LivenessTracker::new(CFG, 0);
        t.heartbeat(key(0), 5);
        t.heartbeat(key(1), 5);
        assert_eq!(
            step(&mut t, &mut m, 8),
            0,
            "a new leader waits before marking down"
        );
        t.heartbeat(key(0), 12);
        assert_eq!(step(&mut t, &mut m, 16), 1);
        assert!(m.is_up(&key(0)) && !m.is_up(&key(1)));
        let epoch = m.epoch();
        assert_eq!(step(&mut t, &mut m, 17), 0, "nothing changes twice");
        t.heartbeat(key(1), 20);
        t.heartbeat(key(0), 20);
        assert_eq!(step(&mut t, &mut m, 21), 1);
        assert!(m.is_up(&key(1)));
        assert!(m.epoch() > epoch);
    }

    #[test]
    fn a_flapping_device_is_held_down() {
        let mut m = map_with(1);
        let mut t = LivenessTracker::new(CFG, 0);
        let mut now = 100;
        // down, up, down, up: the fourth change within the window trips the damper
        for _ in 0..2 {
            now += 20;
            step(&mut t, &mut m, now);
            assert!(!m.is_up(&key(0)));
            t.heartbeat(key(0), now + 1);
            step(&mut t, &mut m, now + 2);
            assert!(m.is_up(&key(0)));
        }
        now += 20;
        step(&mut t, &mut m, now);
        assert!(!m.is_up(&key(0)));
        t.heartbeat(key(0), now + 1);
        step(&mut t, &mut m, now + 2);
        assert!(
            !m.is_up(&key(0)),
            "a flapper comes back only after the hold-down"
        );
        t.heartbeat(key(0), now + 600);
        step(&mut t, &mut m, now + 601);
        assert!(m.is_up(&key(0)));
    }
}
