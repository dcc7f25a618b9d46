//! The proxy's configuration: a TOML file (`nimbus proxy --config FILE`), every field
//! documented in `etc/proxy.example.toml` with its default.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// The smallest segment a PUT is cut into.
pub const MIN_SEGMENT_BYTES: u32 = 64 * 1024;
/// The largest segment a PUT is cut into.
pub const MAX_SEGMENT_BYTES: u32 = 64 * 1024 * 1024;

/// A proxy's configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// Address of the S3 API. Default `127.0.0.1:8080`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// File holding the cluster secret: 64 hex digits. Required.
    pub cluster_secret_file: PathBuf,
    /// Metadata API addresses (`host:port`) of some or all metadata members: the proxy reads
    /// and watches the cluster map there. At least one.
    pub meta: Vec<String>,
    /// The S3 region the proxy answers as. Default `us-east-1`.
    #[serde(default = "default_region")]
    pub region: String,
    /// Domains for virtual-host-style S3 requests (`bucket.<domain>`); path style always
    /// works. Default none.
    #[serde(default)]
    pub s3_domains: Vec<String>,
    /// Bytes per segment of an erasure-coded PUT. Default 1 MiB.
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: u32,
    /// Objects of at most this many bytes are kept inside their index entry. Default 4 KiB.
    #[serde(default = "default_inline_max")]
    pub inline_max: u32,
    /// Seconds between the expirer's passes over the buckets' queues of objects with an
    /// expiry (Swift's `X-Delete-At`); 0 turns it off on this proxy. Default 30.
    #[serde(default = "default_expirer_interval")]
    pub expirer_interval_secs: u64,
    /// Multipart uploads initiated more than this many seconds ago are aborted by the
    /// expirer's passes (their parts then reclaimed by the storage nodes' collector); 0
    /// keeps them forever. Default 604800 (7 days).
    #[serde(default = "default_abandoned_upload")]
    pub abandoned_upload_secs: u64,
    /// Whether index reads ask a shard's primary alone first, which answers alone while it
    /// holds a read lease (one call instead of a majority's). Default true.
    #[serde(default = "default_leased_reads")]
    pub leased_reads: bool,
}

fn default_leased_reads() -> bool {
    true
}

fn default_abandoned_upload() -> u64 {
    7 * 24 * 3600
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_region() -> String {
    "us-east-1".to_owned()
}

fn default_segment_bytes() -> u32 {
    1024 * 1024
}

fn default_expirer_interval() -> u64 {
    30
}

fn default_inline_max() -> u32 {
    4096
}

/// Why a configuration is refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML does not parse or has unknown fields.
    #[error("proxy configuration: {0}")]
    Parse(#[from] toml::de::Error),
    /// A value breaks a rule.
    #[error("proxy configuration: {0}")]
    Invalid(String),
}

impl ProxyConfig {
    /// Parses and validates a configuration file's text.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first problem.
    pub fn parse(text: &str) -> Result<ProxyConfig, ConfigError> {
        let config: ProxyConfig = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every rule.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first value that breaks one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.meta.is_empty() {
            return invalid("meta: name at least one metadata member".into());
        }
        if self.region.is_empty() || self.region.len() > 64 {
            return invalid("region: 1 to 64 characters".into());
        }
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&self.segment_bytes) {
            return invalid(format!(
                "segment_bytes: {MIN_SEGMENT_BYTES} to {MAX_SEGMENT_BYTES}"
            ));
        }
        if self.inline_max as usize > nimbus_core::index::MAX_INLINE_BYTES {
            return invalid(format!(
                "inline_max: at most {}",
                nimbus_core::index::MAX_INLINE_BYTES
            ));
        }
        Ok(())
    }
}
