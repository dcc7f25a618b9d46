//! Where a dev cluster keeps everything, under one data directory, and the files `nimbus dev`
//! writes there: the ports (fixed at the first run), the cluster secret (drawn once), each
//! process's configuration (written again at every start), and, after the first bootstrap,
//! the credentials and `dev.env`.
//!
//! ```text
//! DATA/ports.json          the S3 port and base port, fixed at the first run
//! DATA/cluster-secret      64 hex digits, drawn once
//! DATA/dev.json            the credentials; written last by a successful bootstrap
//! DATA/dev.env             `export` lines for awscli and python-swiftclient
//! DATA/dev.lock            held by the running `nimbus dev`
//! DATA/node<i>/storage.toml, d0/, d1/, meta/ (i ≤ 5)
//! DATA/proxy.toml
//! DATA/logs/<name>.log
//! ```
//!
//! **Invariant:** ports never change once chosen: device locations in the rings include
//! each node's `ip:port`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use nimbus_ring::Location;
use serde::{Deserialize, Serialize};

/// Storage nodes of a dev cluster.
pub const NODES: u16 = 6;
/// The nodes `1..=META_MEMBERS` also host the metadata members.
pub const META_MEMBERS: u16 = 5;
/// Devices of each node.
pub const DEVICES: [&str; 2] = ["d0", "d1"];
/// The S3 port when neither `--port` nor an earlier run says otherwise.
pub const DEFAULT_PORT: u16 = 9000;
/// The base port when neither `--base-port` nor an earlier run says otherwise.
pub const DEFAULT_BASE_PORT: u16 = 6200;
/// Metadata member `i` listens on `base + META_PORT_OFFSET + i`.
const META_PORT_OFFSET: u16 = 100;
/// The region every node of a dev cluster is in.
const REGION: u32 = 1;

/// The ports of a dev cluster, as `DATA/ports.json` holds them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ports {
    /// The proxy's S3 port.
    pub s3: u16,
    /// Node `i` listens on `base + i`, metadata member `i` on `base + 100 + i`.
    pub base: u16,
}

/// The credentials of a bootstrapped dev cluster, as `DATA/dev.json` holds them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// The account that owns everything.
    pub account: String,
    /// The S3 access key id.
    pub access_key: String,
    /// The S3 secret access key.
    pub secret_key: String,
    /// The Swift user, `account:user` (`X-Auth-User`).
    pub swift_user: String,
    /// The Swift key (`X-Auth-Key`).
    pub swift_key: String,
}

/// What a dev cluster's command line tunes: how soon its workers and expirer act, how much
/// its index stores log.
#[derive(Clone, Copy, Debug)]
pub struct Tunables {
    /// Seconds an unreferenced fragment, and a delete's tombstone, wait to be collected.
    pub gc_grace_secs: u64,
    /// Seconds after which the proxy aborts a multipart upload never completed.
    pub abandoned_upload_secs: u64,
    /// Seconds between passes of index anti-entropy.
    pub index_sync_secs: u64,
    /// Bytes of each index store's write-ahead log (`[index] wal_bytes`).
    pub index_wal_bytes: u64,
    /// Whether the proxy's index reads ask a shard's primary alone first (`leased_reads`).
    pub leased_reads: bool,
}

/// The data directory of a dev cluster and what lives in it.
pub struct Layout {
    /// The data directory, absolute.
    pub data: PathBuf,
    /// Its ports.
    pub ports: Ports,
}

impl Layout {
    /// Opens `data` (created if new; made absolute), with the ports of its first run (see
    /// [`Layout::save_ports`]). A port given that differs from them is refused.
    ///
    /// # Errors
    /// I/O errors, a damaged `ports.json`, a port that differs from the first run's or that
    /// leaves no room for the nodes' and members' ports.
    pub fn open(data: &Path, s3: Option<u16>, base: Option<u16>) -> Result<Layout> {
        std::fs::create_dir_all(data).with_context(|| format!("create {}", data.display()))?;
        let data = std::fs::canonicalize(data)
            .with_context(|| format!("find the absolute path of {}", data.display()))?;
        if data.to_str().is_none() {
            bail!("{}: the data directory's path is not UTF-8", data.display());
        }
        let file = data.join("ports.json");
        let ports = match read_optional(&file)? {
            Some(text) => {
                let stored: Ports = serde_json::from_str(&text)
                    .with_context(|| format!("read {}", file.display()))?;
                for (flag, given, fixed) in [
                    ("--port", s3, stored.s3),
                    ("--base-port", base, stored.base),
                ] {
                    if let Some(given) = given
                        && given != fixed
                    {
                        bail!(
                            "{} was created with {flag} {fixed}; ports stay fixed because device locations in the rings include them (remove the directory to start over)",
                            data.display()
                        );
                    }
                }
                stored
            }
            None => Ports {
                s3: s3.unwrap_or(DEFAULT_PORT),
                base: base.unwrap_or(DEFAULT_BASE_PORT),
            },
        };
        let highest = u32::from(ports.base) + u32::from(META_PORT_OFFSET + META_MEMBERS);
        if ports.base == 0 || highest > u32::from(u16::MAX) {
            bail!(
                "--base-port {}: use 1 to {}",
                ports.base,
                u16::MAX - META_PORT_OFFSET - META_MEMBERS
            );
        }
        if ports.s3 == 0 {
            bail!("--port 0: name a port, so that it stays the same across restarts");
        }
        Ok(Layout { data, ports })
    }

    /// Records the ports, fixed from now on.
    ///
    /// # Errors
    /// I/O errors.
    pub fn save_ports(&self) -> Result<()> {
        let mut text = serde_json::to_string_pretty(&self.ports)?;
        text.push('\n');
        write_file(&self.data.join("ports.json"), &text, false)
    }

    /// Returns the directory of node `i`.
    pub fn node_dir(&self, i: u16) -> PathBuf {
        self.data.join(format!("node{i}"))
    }

    /// Returns node `i`'s address.
    pub fn node_addr(&self, i: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports.base + i))
    }

    /// Returns metadata member `i`'s address.
    pub fn meta_addr(&self, i: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports.base + META_PORT_OFFSET + i))
    }

    /// Returns every metadata member's address, as `host:port`.
    pub fn meta_members(&self) -> Vec<String> {
        (1..=META_MEMBERS)
            .map(|i| self.meta_addr(i).to_string())
            .collect()
    }

    /// Returns the proxy's S3 endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.s3)
    }

    /// Returns where a device of node `i` sits in the rings: each node is its own zone.
    pub fn location(&self, i: u16, device: &str) -> Location {
        Location {
            region: REGION,
            zone: u32::from(i),
            node: self.node_addr(i),
            name: device.to_owned(),
        }
    }

    /// Returns the cluster secret's file.
    pub fn secret_file(&self) -> PathBuf {
        self.data.join("cluster-secret")
    }

    /// Returns the directory of the processes' logs.
    pub fn logs_dir(&self) -> PathBuf {
        self.data.join("logs")
    }

    /// Returns node `i`'s configuration file.
    pub fn node_config(&self, i: u16) -> PathBuf {
        self.node_dir(i).join("storage.toml")
    }

    /// Returns the proxy's configuration file.
    pub fn proxy_config(&self) -> PathBuf {
        self.data.join("proxy.toml")
    }

    /// Returns the file of the credentials, which marks a finished bootstrap.
    pub fn credentials_file(&self) -> PathBuf {
        self.data.join("dev.json")
    }

    /// Returns the file of `export` lines.
    pub fn env_file(&self) -> PathBuf {
        self.data.join("dev.env")
    }

    /// Locks the data directory for this process's life (the lock goes with the file).
    ///
    /// # Errors
    /// Another `nimbus dev` holds it, or I/O errors.
    pub fn lock(&self) -> Result<std::fs::File> {
        let path = self.data.join("dev.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("open {}", path.display()))?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(file),
            Err(rustix::io::Errno::WOULDBLOCK) => {
                bail!("another nimbus dev is running on {}", self.data.display())
            }
            Err(e) => {
                Err(std::io::Error::from(e)).with_context(|| format!("lock {}", path.display()))
            }
        }
    }

    /// Creates the cluster secret unless it exists.
    ///
    /// # Errors
    /// I/O errors, no randomness.
    pub fn ensure_secret(&self) -> Result<()> {
        let file = self.secret_file();
        if read_optional(&file)?.is_some() {
            return Ok(());
        }
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| anyhow!("draw the cluster secret: {e}"))?;
        let hex = nimbus_core::auth::ClusterSecret::new(bytes).to_hex();
        write_file(&file, &format!("{hex}\n"), true)
    }

    /// Writes every process's configuration, and creates the directories they use, with
    /// the workers' and the expirer's timings and the index stores' log size.
    ///
    /// # Errors
    /// I/O errors.
    pub fn write_configs(&self, tunables: &Tunables) -> Result<()> {
        let Tunables {
            gc_grace_secs,
            abandoned_upload_secs,
            index_sync_secs,
            index_wal_bytes,
            leased_reads,
        } = *tunables;
        let dir = self.logs_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let secret = toml_str(&self.secret_file());
        let members = self
            .meta_members()
            .iter()
            .map(|m| format!("\"{m}\""))
            .collect::<Vec<_>>()
            .join(", ");
        for i in 1..=NODES {
            let dir = self.node_dir(i);
            let mut text = format!(
                "# Written by `nimbus dev` at every start: edits are lost.\n\
                 listen = \"{}\"\n\
                 cluster_secret_file = {secret}\n\
                 io_engine = \"auto\"\n\n\
                 # Small engines: twelve devices share one machine.\n\
                 [engine]\nbuffers = 16\nbuffer_bytes = 262144\n",
                self.node_addr(i)
            );
            for device in DEVICES {
                let path = dir.join(device);
                std::fs::create_dir_all(&path)
                    .with_context(|| format!("create {}", path.display()))?;
                let _ = write!(
                    text,
                    "\n[[device]]\nname = \"{device}\"\npath = {}\nreserve_bytes = 268435456\n",
                    toml_str(&path)
                );
            }
            if i <= META_MEMBERS {
                let _ = write!(
                    text,
                    "\n[meta]\nid = {i}\ndir = {}\nlisten = \"{}\"\n",
                    toml_str(&dir.join("meta")),
                    self.meta_addr(i)
                );
            }
            let _ = write!(
                text,
                "\n[heartbeat]\nmembers = [{members}]\ninterval_ms = 1000\n\n\
                 # Passes every few seconds: a dev cluster heals while you watch.\n\
                 [workers]\npass_pause_secs = 3\ngc_grace_secs = {gc_grace_secs}\nindex_sync_secs = {index_sync_secs}\n\
                 tombstone_grace_secs = {gc_grace_secs}\nsummary_max_age_secs = 30\n\n\
                 [index]\nwal_bytes = {index_wal_bytes}\n"
            );
            write_file(&self.node_config(i), &text, false)?;
        }
        let text = format!(
            "# Written by `nimbus dev` at every start: edits are lost.\n\
             listen = \"127.0.0.1:{}\"\n\
             cluster_secret_file = {secret}\n\
             meta = [{members}]\n\
             region = \"us-east-1\"\n\
             # Virtual-host style: http://BUCKET.localhost:PORT (where *.localhost resolves).\n\
             s3_domains = [\"localhost\"]\n\
             # Objects past their X-Delete-At go within seconds on a dev cluster.\n\
             expirer_interval_secs = 5\n\
             abandoned_upload_secs = {abandoned_upload_secs}\n\
             leased_reads = {leased_reads}\n",
            self.ports.s3
        );
        write_file(&self.proxy_config(), &text, false)
    }

    /// Returns the credentials of a finished bootstrap, or `None` before one.
    ///
    /// # Errors
    /// I/O errors, a damaged file.
    pub fn credentials(&self) -> Result<Option<Credentials>> {
        let file = self.credentials_file();
        match read_optional(&file)? {
            Some(text) => serde_json::from_str(&text)
                .with_context(|| format!("read {}", file.display()))
                .map(Some),
            None => Ok(None),
        }
    }

    /// Records a finished bootstrap: `dev.env`, then `dev.json` last.
    ///
    /// # Errors
    /// I/O errors.
    pub fn save_credentials(&self, credentials: &Credentials) -> Result<()> {
        self.write_env(credentials)?;
        let mut text = serde_json::to_string_pretty(credentials)?;
        text.push('\n');
        write_file(&self.credentials_file(), &text, true)
    }

    /// Writes `dev.env`.
    ///
    /// # Errors
    /// I/O errors.
    pub fn write_env(&self, c: &Credentials) -> Result<()> {
        let endpoint = self.endpoint();
        let mut text = String::from(
            "# Written by `nimbus dev`: `. dev.env` points awscli and python-swiftclient at the dev cluster.\n",
        );
        for (name, value) in [
            ("AWS_ACCESS_KEY_ID", c.access_key.as_str()),
            ("AWS_SECRET_ACCESS_KEY", &c.secret_key),
            ("AWS_ENDPOINT_URL", &endpoint),
            ("AWS_DEFAULT_REGION", "us-east-1"),
            ("ST_AUTH", &format!("{endpoint}/auth/v1.0")),
            ("ST_USER", &c.swift_user),
            ("ST_KEY", &c.swift_key),
        ] {
            let _ = writeln!(text, "export {name}={}", shell_quote(value));
        }
        write_file(&self.env_file(), &text, true)
    }
}

/// Reads a file, or `None` when it does not exist.
fn read_optional(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

/// Replaces `path` with `text` (a temporary file renamed over it, so that a crash leaves
/// the old or the new file); `private`: readable by the owner only.
fn write_file(path: &Path, text: &str, private: bool) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(if private { 0o600 } else { 0o644 })
            .open(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().with_context(|| format!("write {}", path.display()))
}

/// A TOML basic string holding `path` (a UTF-8 path: [`Layout::open`] checks the data
/// directory's).
fn toml_str(path: &Path) -> String {
    let mut out = String::from("\"");
    for c in path.to_string_lossy().chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `value` as one shell word.
fn shell_quote(value: &str) -> String {
    if !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:/@".contains(c))
    {
        return value.to_owned();
    }
    format!("'{}'", value.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configurations_parse_as_their_roles_read_them() {
        let dir = tempfile::TempDir::new().unwrap();
        let data = dir.path().join("with \"quotes\" and \\");
        let layout = Layout::open(&data, Some(9100), Some(16000)).unwrap();
        layout
            .write_configs(&Tunables {
                gc_grace_secs: 60,
                abandoned_upload_secs: 3600,
                index_sync_secs: 5,
                index_wal_bytes: 1 << 20,
                leased_reads: true,
            })
            .unwrap();
        for i in 1..=NODES {
            let text = std::fs::read_to_string(layout.node_config(i)).unwrap();
            let config = nimbus_storage_node::config::Config::from_toml(&text).unwrap();
            assert_eq!(config.listen.port(), 16000 + i);
            assert_eq!(config.devices.len(), 2);
            assert!(config.devices[0].path.starts_with(&layout.data));
            assert_eq!(config.meta.is_some(), i <= META_MEMBERS);
            assert_eq!(config.heartbeat.unwrap().members.len(), 5);
            assert_eq!(config.index.wal_bytes, 1 << 20);
        }
        let text = std::fs::read_to_string(layout.proxy_config()).unwrap();
        let proxy = nimbus_proxy::ProxyConfig::parse(&text).unwrap();
        assert_eq!(proxy.listen.port(), 9100);
        assert_eq!(proxy.meta, layout.meta_members());
        assert_eq!(proxy.cluster_secret_file, layout.secret_file());
    }

    #[test]
    fn ports_are_fixed_by_the_first_run() {
        let dir = tempfile::TempDir::new().unwrap();
        let first = Layout::open(dir.path(), None, Some(16000)).unwrap();
        assert_eq!(
            first.ports,
            Ports {
                s3: 9000,
                base: 16000
            }
        );
        first.save_ports().unwrap();
        let again = Layout::open(dir.path(), None, None).unwrap();
        assert_eq!(again.ports, first.ports);
        let err = Layout::open(dir.path(), Some(9001), None).err().unwrap();
        assert!(format!("{err:#}").contains("was created with --port 9000"));
        assert!(Layout::open(&dir.path().join("x"), None, Some(65500)).is_err());
    }

    #[test]
    fn env_values_stay_one_shell_word() {
        assert_eq!(shell_quote("dev:admin"), "dev:admin");
        assert_eq!(shell_quote("a b'c"), "'a b'\\''c'");
        assert_eq!(shell_quote(""), "''");
    }
}
