//! The storage node's configuration: a TOML file (`nimbus storage --config FILE`), every
//! field documented in `etc/storage.example.toml` with its default. Flags on the command line
//! override the file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::io::{EngineConfig, IoEngineKind};

/// A storage node's configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address of the internal API. Default `127.0.0.1:6200`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// File holding the cluster secret: 64 hex digits. Required.
    pub cluster_secret_file: PathBuf,
    /// `uring`, `portable` or `auto` (io_uring when the kernel allows it). Default `auto`.
    #[serde(default = "default_io_engine")]
    pub io_engine: String,
    /// I/O engine sizes, per device.
    #[serde(default)]
    pub engine: EngineSection,
    /// The devices this node owns: at least one.
    #[serde(rename = "device", default)]
    pub devices: Vec<DeviceConfig>,
    /// Present on metadata members: this node also hosts a voter (or learner) of the cluster
    /// map's Raft group.
    pub meta: Option<MetaSection>,
    /// Present when the node heartbeats its devices to the metadata members, whose leader
    /// marks a device down when its heartbeats stop. Absent: no heartbeats.
    pub heartbeat: Option<HeartbeatSection>,
    /// How the auditor re-reads each device's fragments.
    #[serde(default)]
    pub audit: AuditSection,
    /// Each device's index store.
    #[serde(default)]
    pub index: IndexSection,
    /// How the background workers (mover, reconstructor, collector) pace themselves. They
    /// run only on nodes with a `[heartbeat]` section: they need the cluster map.
    #[serde(default)]
    pub workers: WorkersSection,
}

/// The background workers' pace.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkersSection {
    /// Bytes per second each device's workers read to move or rebuild fragments at most; 0
    /// turns the workers off. Default 64 MiB/s.
    pub bytes_per_sec: u64,
    /// Seconds between the end of one pass over a device's partitions and the start of the
    /// next. Default 30.
    pub pass_pause_secs: u64,
    /// Partitions of one device worked on at once. Default 1.
    pub concurrent_partitions: usize,
    /// Seconds a fragment file must be unchanged before the collector may remove it as
    /// garbage (no index entry references its version) or as an orphan (never committed).
    /// It must exceed the longest PUT. Default 3600.
    pub gc_grace_secs: u64,
    /// Seconds between index anti-entropy passes (each shard's primary compares the
    /// replicas' digests and copies what one lacks). Default 600.
    pub index_sync_secs: u64,
    /// Seconds a delete's tombstone is kept in the index before anti-entropy forgets it on
    /// every replica (only while all of them are up and agree). Default 604800 (7 days).
    pub tombstone_grace_secs: u64,
    /// Seconds a partition's summary (the fragment indexes it holds and their digests, which
    /// passes compare) is trusted without walking its directories again, while nothing the
    /// store did changed it: how long a fragment file removed behind the store's back goes
    /// unnoticed. Default 600.
    pub summary_max_age_secs: u64,
}

impl Default for WorkersSection {
    fn default() -> Self {
        WorkersSection {
            bytes_per_sec: 64 << 20,
            pass_pause_secs: 30,
            concurrent_partitions: 1,
            gc_grace_secs: 3600,
            index_sync_secs: 600,
            tombstone_grace_secs: 7 * 24 * 3600,
            summary_max_age_secs: 600,
        }
    }
}

/// Each device's index store.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IndexSection {
    /// The most bytes of index writes the write-ahead log holds before the index database
    /// commits them durably (a checkpoint) and the log starts again; also the most a restart
    /// replays. 0 commits every batch durably, without the log. Default 16777216 (16 MiB).
    pub wal_bytes: u64,
}

impl Default for IndexSection {
    fn default() -> Self {
        IndexSection {
            wal_bytes: crate::index::DEFAULT_WAL_BYTES,
        }
    }
}

/// The auditor's pace.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSection {
    /// Bytes per second each device's auditor reads at most; 0 turns it off. Default 8 MiB/s
    /// (a 10 TB device every ~2 weeks).
    pub bytes_per_sec: u64,
    /// Seconds between the end of one pass over a device and the start of the next. Default
    /// 3600.
    pub cycle_pause_secs: u64,
}

impl Default for AuditSection {
    fn default() -> Self {
        AuditSection {
            bytes_per_sec: 8 << 20,
            cycle_pause_secs: 3600,
        }
    }
}

/// Where and how often the node heartbeats.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatSection {
    /// Metadata API addresses (`host:port`) of some or all members: the node asks them for
    /// the leader and follows its hints. At least one.
    pub members: Vec<String>,
    /// Milliseconds between heartbeats; each heartbeat, leader hints included, must be
    /// delivered within one interval. 50 to 60000; keep it well below the leader's
    /// liveness timeout (15 s). Default 1000.
    #[serde(default = "default_heartbeat_interval_ms")]
    pub interval_ms: u64,
    /// The node's address as its devices are placed in the rings (`ip:port`). Default: the
    /// address the internal API is bound to (`listen`), which must then not be a wildcard.
    pub node: Option<SocketAddr>,
}

impl HeartbeatSection {
    /// Returns the interval between heartbeats.
    #[must_use]
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }
}

fn default_heartbeat_interval_ms() -> u64 {
    1000
}

/// A metadata member's settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetaSection {
    /// Its Raft id: a positive integer, unique in the cluster and never reused.
    pub id: u64,
    /// Its metadata directory (Raft log and snapshots); absolute.
    pub dir: PathBuf,
    /// Address of its metadata API (Raft RPCs, map reads and writes). Default
    /// `127.0.0.1:6300`.
    #[serde(default = "default_meta_listen")]
    pub listen: SocketAddr,
    /// The address other members and clients reach it at, when not `listen`.
    pub advertise: Option<String>,
    /// A snapshot of the map is taken once this many log entries were applied since the
    /// last one. Default 1000.
    #[serde(default = "default_snapshot_every")]
    pub snapshot_every_logs: u64,
    /// Log entries kept behind the last snapshot, so that a briefly lagging member catches up
    /// without one. Default 1000.
    #[serde(default = "default_snapshot_every")]
    pub logs_kept_after_snapshot: u64,
}

fn default_snapshot_every() -> u64 {
    1000
}

fn default_meta_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 6300))
}

/// Sizes of each device's I/O engine.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSection {
    /// Buffers per device: the most reads and writes in flight on it. Default 64.
    pub buffers: usize,
    /// Bytes per buffer (a multiple of 4096). Default 1 MiB.
    pub buffer_bytes: usize,
    /// io_uring submission queue entries per device. Default 256.
    pub ring_entries: u32,
}

impl Default for EngineSection {
    fn default() -> Self {
        let d = EngineConfig::default();
        EngineSection {
            buffers: d.buffers,
            buffer_bytes: d.buffer_bytes,
            ring_entries: d.ring_entries,
        }
    }
}

/// One device.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// The device's name in the ring (`sdb`, `d0`): 1 to 64 of `A-Z a-z 0-9 . _ -`.
    pub name: String,
    /// Its directory, normally the mount point of its own disk.
    pub path: PathBuf,
    /// New fragments are refused (507) while free space is below this. Default 1 GiB.
    #[serde(default = "default_reserve")]
    pub reserve_bytes: u64,
    /// Read and write fragments with O_DIRECT where the file system allows. Default true.
    #[serde(default = "default_true")]
    pub direct_io: bool,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 6200))
}

fn default_io_engine() -> String {
    "auto".into()
}

fn default_reserve() -> u64 {
    1 << 30
}

fn default_true() -> bool {
    true
}

/// Every problem found in a configuration.
#[derive(Debug, thiserror::Error)]
#[error("invalid storage configuration:\n  - {}", problems.join("\n  - "))]
pub struct ConfigError {
    /// One line per problem.
    pub problems: Vec<String>,
}

impl Config {
    /// Parses and validates a configuration.
    ///
    /// # Errors
    /// [`ConfigError`] listing every problem (a TOML error is one problem).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config = Config::parse(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses without validating, so that command-line overrides can be applied first.
    ///
    /// # Errors
    /// [`ConfigError`] with the TOML error.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError {
            problems: vec![e.to_string()],
        })
    }

    /// Returns the engine kind.
    ///
    /// # Errors
    /// A message for an unknown engine name.
    pub fn io_engine_kind(&self) -> Result<IoEngineKind, String> {
        self.io_engine.parse()
    }

    /// Returns the engine sizes.
    #[must_use]
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            buffers: self.engine.buffers,
            buffer_bytes: self.engine.buffer_bytes,
            ring_entries: self.engine.ring_entries,
        }
    }

    /// Checks everything at once.
    ///
    /// # Errors
    /// [`ConfigError`] listing every problem.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if let Err(e) = self.io_engine_kind() {
            problems.push(e);
        }
        if self.devices.is_empty() {
            problems.push("no [[device]]: a storage node needs at least one".into());
        }
        let e = &self.engine;
        if !(1..=4096).contains(&e.buffers) {
            problems.push(format!("engine.buffers = {}: use 1 to 4096", e.buffers));
        }
        if e.buffer_bytes < 65536
            || !e.buffer_bytes.is_multiple_of(4096)
            || e.buffer_bytes > 64 << 20
        {
            problems.push(format!(
                "engine.buffer_bytes = {}: use a multiple of 4096 from 64 KiB to 64 MiB",
                e.buffer_bytes
            ));
        }
        if !e.ring_entries.is_power_of_two() || !(8..=4096).contains(&e.ring_entries) {
            problems.push(format!(
                "engine.ring_entries = {}: use a power of two from 8 to 4096",
                e.ring_entries
            ));
        }
        let mut names = std::collections::HashSet::new();
        let mut paths = std::collections::HashSet::new();
        for d in &self.devices {
            if let Err(e) = nimbus_ring::device::validate_device_name(&d.name) {
                problems.push(e.to_string());
            }
            if !names.insert(d.name.clone()) {
                problems.push(format!("device {:?} is listed twice", d.name));
            }
            if !paths.insert(d.path.clone()) {
                problems.push(format!("device path {} is listed twice", d.path.display()));
            }
            if d.path.is_relative() {
                problems.push(format!(
                    "device {:?}: path {} is not absolute",
                    d.name,
                    d.path.display()
                ));
            }
        }
        if let Some(meta) = &self.meta {
            if meta.id == 0 {
                problems.push("meta.id must be a positive integer".into());
            }
            if meta.snapshot_every_logs == 0 {
                problems.push("meta.snapshot_every_logs must be at least 1".into());
            }
            if meta.dir.is_relative() {
                problems.push(format!("meta.dir {} is not absolute", meta.dir.display()));
            }
        }
        if let Some(heartbeat) = &self.heartbeat {
            heartbeat_problems(heartbeat, self.listen, &mut problems);
        }
        if !(1..=64).contains(&self.workers.concurrent_partitions) {
            problems.push(format!(
                "workers.concurrent_partitions = {}: use 1 to 64",
                self.workers.concurrent_partitions
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems })
        }
    }
}

/// Checks the `[heartbeat]` section of a node listening on `listen`.
fn heartbeat_problems(h: &HeartbeatSection, listen: SocketAddr, problems: &mut Vec<String>) {
    if h.members.is_empty() {
        problems.push("heartbeat.members is empty: name at least one metadata member".into());
    }
    for member in &h.members {
        let port = member
            .rsplit_once(':')
            .map(|(host, port)| (host, port.parse::<u16>()));
        if !matches!(port, Some((host, Ok(p))) if !host.is_empty() && p != 0) {
            problems.push(format!("heartbeat.members: {member:?} is not host:port"));
        }
    }
    if !(50..=60_000).contains(&h.interval_ms) {
        problems.push(format!(
            "heartbeat.interval_ms = {}: use 50 to 60000",
            h.interval_ms
        ));
    }
    let node = h.node.unwrap_or(listen);
    if node.ip().is_unspecified() {
        problems.push(format!(
            "heartbeat: the node address {node} is a wildcard; set heartbeat.node to the \
             address its devices have in the rings"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_configuration_parses() {
        let text = include_str!("../../etc/storage.example.toml");
        let c = Config::from_toml(text).unwrap();
        assert_eq!(c.devices.len(), 2);
        assert_eq!(c.io_engine_kind(), Ok(IoEngineKind::Auto));
        let heartbeat = c.heartbeat.unwrap();
        assert_eq!(heartbeat.members.len(), 3);
        assert_eq!(heartbeat.interval(), Duration::from_secs(1));
    }

    #[test]
    fn heartbeat_problems_are_reported_with_the_others() {
        let text = r#"
            listen = "0.0.0.0:6200"
            cluster_secret_file = "/etc/nimbus/secret"
            [[device]]
            name = "sdb"
            path = "/srv/sdb"
            [heartbeat]
            members = ["10.0.0.1:6300", "10.0.0.2", ":6300", "10.0.0.3:0"]
            interval_ms = 10
        "#;
        let err = Config::from_toml(text).unwrap_err();
        assert_eq!(err.problems.len(), 5, "{err}");
        let fixed = text
            .replace(r#", "10.0.0.2", ":6300", "10.0.0.3:0""#, "")
            .replace("interval_ms = 10", "node = \"10.0.0.7:6200\"");
        let c = Config::from_toml(&fixed).unwrap();
        let heartbeat = c.heartbeat.unwrap();
        assert_eq!(heartbeat.interval_ms, 1000);
        assert_eq!(heartbeat.node, Some("10.0.0.7:6200".parse().unwrap()));
        let empty = fixed.replace(r#"members = ["10.0.0.1:6300"]"#, "members = []");
        assert_eq!(Config::from_toml(&empty).unwrap_err().problems.len(), 1);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = r#"
            cluster_secret_file = "/etc/nimbus/secret"
            io_engine = "fast"
            [engine]
            ring_entries = 100
            [[device]]
            name = "../x"
            path = "relative"
        "#;
        let err = Config::from_toml(text).unwrap_err();
        assert_eq!(err.problems.len(), 4, "{err}");
        assert!(Config::from_toml("listen = 5").is_err());
        assert!(Config::from_toml("cluster_secret_file = \"/s\"\nunknown = 1").is_err());
    }
}
