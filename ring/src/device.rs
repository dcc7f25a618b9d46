//! Devices and their place in the failure-domain hierarchy: region, zone, node, device.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use nimbus_core::ids::DeviceId;
use serde::{Deserialize, Serialize};

use crate::error::BuilderError;

/// The longest device name accepted.
pub const MAX_DEVICE_NAME_BYTES: usize = 64;

/// A level of the failure-domain hierarchy, widest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// A region: a site or data centre.
    Region,
    /// A zone inside a region: a power, network or rack domain.
    Zone,
    /// A node: one storage-node process at one address.
    Node,
    /// A device: one disk.
    Device,
}

impl Tier {
    /// Every tier, widest first.
    pub const ALL: [Tier; 4] = [Tier::Region, Tier::Zone, Tier::Node, Tier::Device];

    /// Returns the tier's name as operators read it.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Tier::Region => "region",
            Tier::Zone => "zone",
            Tier::Node => "node",
            Tier::Device => "device",
        }
    }
}

/// Where a device sits: `r<region>z<zone>-<ip:port>/<device name>`, as operators write it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Location {
    /// Region number.
    pub region: u32,
    /// Zone number, unique within its region.
    pub zone: u32,
    /// The storage node's address.
    pub node: SocketAddr,
    /// The device's name on its node (a mount directory name such as `sdb1`).
    pub name: String,
}

/// Checks a device name: 1 to 64 of `A-Z a-z 0-9 . _ -`, not starting with a dot. The one
/// rule for device names, in rings, node configurations and heartbeats.
///
/// # Errors
/// [`BuilderError::BadDeviceName`].
pub fn validate_device_name(name: &str) -> Result<(), BuilderError> {
    let ok = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
    if name.is_empty()
        || name.len() > MAX_DEVICE_NAME_BYTES
        || name.starts_with('.')
        || !name.chars().all(ok)
    {
        return Err(BuilderError::BadDeviceName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

impl Location {
    /// Checks the device name; see [`validate_device_name`].
    ///
    /// # Errors
    /// [`BuilderError::BadDeviceName`].
    pub fn validate(&self) -> Result<(), BuilderError> {
        validate_device_name(&self.name)
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "r{}z{}-{}/{}",
            self.region, self.zone, self.node, self.name
        )
    }
}

/// Parses `r<region>z<zone>-<ip:port>/<name>`, e.g. `r1z2-10.0.0.5:6200/sdb` or
/// `r1z1-[::1]:6200/d0`.
impl FromStr for Location {
    type Err = BuilderError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BuilderError::BadLocation {
            location: s.to_owned(),
        };
        let rest = s.strip_prefix('r').ok_or_else(bad)?;
        let (region, rest) = rest.split_once('z').ok_or_else(bad)?;
        let (zone, rest) = rest.split_once('-').ok_or_else(bad)?;
        let (node, name) = rest.rsplit_once('/').ok_or_else(bad)?;
        let location = Location {
            region: region.parse().map_err(|_| bad())?,
            zone: zone.parse().map_err(|_| bad())?,
            node: node.parse().map_err(|_| bad())?,
            name: name.to_owned(),
        };
        location.validate()?;
        Ok(location)
    }
}

/// A device as the operator describes it when adding it to a builder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceSpec {
    /// Where the device sits.
    pub location: Location,
    /// Its share of the data relative to other devices (normally its capacity in GiB or TiB);
    /// finite and at least 0. A device of weight 0 holds nothing.
    pub weight: f64,
}

/// A device in a ring.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Device {
    /// The device's id, never reused.
    pub id: DeviceId,
    /// Where it sits.
    #[serde(flatten)]
    pub location: Location,
    /// Its weight; finite and at least 0.
    pub weight: f64,
}

/// Checks a weight: finite and at least 0.
///
/// # Errors
/// [`BuilderError::BadWeight`].
pub fn validate_weight(weight: f64) -> Result<(), BuilderError> {
    if weight.is_finite() && weight >= 0.0 {
        Ok(())
    } else {
        Err(BuilderError::BadWeight { weight })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn parses_locations() {
        let l: Location = "r1z2-10.0.0.5:6200/sdb".parse().unwrap();
        assert_eq!((l.region, l.zone, l.name.as_str()), (1, 2, "sdb"));
        assert_eq!(l.node, "10.0.0.5:6200".parse().unwrap());
        let v6: Location = "r0z0-[::1]:6200/d0".parse().unwrap();
        assert_eq!(v6.to_string(), "r0z0-[::1]:6200/d0");
        for bad in [
            "",
            "z1-1.2.3.4:1/a",
            "r1z1-1.2.3.4/a",
            "r1z1-1.2.3.4:1/",
            "r1z1-1.2.3.4:1/.hidden",
            "r1z1-1.2.3.4:1/a/b",
            "r-1z1-1.2.3.4:1/a",
            "r1z1-host:1/a",
        ] {
            assert!(bad.parse::<Location>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn weights_must_be_finite_and_not_negative() {
        assert!(validate_weight(0.0).is_ok());
        assert!(validate_weight(3.5).is_ok());
        for w in [-1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(validate_weight(w).is_err(), "{w} was accepted");
        }
    }

    proptest! {
        #[test]
        fn location_display_parses_back(
            region in 0u32..100, zone in 0u32..100, ip: [u8; 4], port: u16,
            name in "[a-z0-9][a-z0-9._-]{0,20}",
        ) {
            let l = Location {
                region, zone, node: SocketAddr::from((ip, port)), name,
            };
            prop_assert_eq!(l.to_string().parse::<Location>().unwrap(), l);
        }

        #[test]
        fn location_parser_never_panics(s in "\\PC{0,40}") {
            let _ = s.parse::<Location>();
        }
    }
}
