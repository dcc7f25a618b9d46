//! Bad input gets a clear error and leaves the builder as it was.

use nimbus_core::ids::DeviceId;
use nimbus_ring::builder::BuilderSettings;
use nimbus_ring::{BuilderError, RingBuilder};

use crate::{spec, t0};

fn settings(part_power: u32) -> BuilderSettings {
    BuilderSettings {
        policy: "ec4+2".parse().unwrap(),
        part_power,
        min_part_hours: 1,
        seed: 0,
        hash_key: [0; 32],
    }
}

#[test]
fn part_power_out_of_range_is_refused() {
    for pp in [0, 25, 64] {
        let err = RingBuilder::new(settings(pp)).unwrap_err();
        assert_eq!(err, BuilderError::PartPowerOutOfRange { part_power: pp });
        assert!(err.to_string().contains("1 to 24"));
    }
    assert!(RingBuilder::new(settings(1)).is_ok());
}

#[test]
fn bad_weights_are_refused_and_change_nothing() {
    let mut b = RingBuilder::new(settings(4)).unwrap();
    let id = b.add_device(spec(0, 0, 0, "a", 1.0), None).unwrap();
    let before = b.clone();
    for w in [-1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        assert!(matches!(
            b.add_device(spec(0, 0, 1, "b", w), None),
            Err(BuilderError::BadWeight { .. })
        ));
        assert!(matches!(
            b.set_weight(id, w),
            Err(BuilderError::BadWeight { .. })
        ));
    }
    assert_eq!(b, before);
}

#[test]
fn duplicate_devices_and_ids_are_refused() {
    let mut b = RingBuilder::new(settings(4)).unwrap();
    let id = b.add_device(spec(0, 0, 0, "a", 1.0), None).unwrap();
    let before = b.clone();
    let err = b.add_device(spec(0, 0, 0, "a", 2.0), None).unwrap_err();
    assert!(matches!(err, BuilderError::DuplicateDevice { id: i, .. } if i == id));
    let err = b.add_device(spec(0, 0, 1, "b", 1.0), Some(id)).unwrap_err();
    assert_eq!(err, BuilderError::DuplicateDeviceId { id });
    // the same node in another zone
    let mut other_zone = spec(0, 1, 0, "c", 1.0);
    other_zone.location.node = spec(0, 0, 0, "x", 1.0).location.node;
    assert!(matches!(
        b.add_device(other_zone, None),
        Err(BuilderError::NodeInOtherZone { .. })
    ));
    assert_eq!(b, before);
}

#[test]
fn unknown_and_removed_devices_are_refused() {
    let mut b = RingBuilder::new(settings(4)).unwrap();
    let id = b.add_device(spec(0, 0, 0, "a", 1.0), None).unwrap();
    let unknown = DeviceId(42);
    assert_eq!(
        b.remove_device(unknown),
        Err(BuilderError::UnknownDevice { id: unknown })
    );
    assert_eq!(
        b.set_weight(unknown, 1.0),
        Err(BuilderError::UnknownDevice { id: unknown })
    );
    b.remove_device(id).unwrap();
    assert_eq!(b.remove_device(id), Err(BuilderError::DeviceRemoved { id }));
    assert_eq!(
        b.set_weight(id, 3.0),
        Err(BuilderError::DeviceRemoved { id })
    );
}

#[test]
fn more_slots_than_devices_can_hold_is_refused() {
    let mut b = RingBuilder::new(settings(4)).unwrap();
    for i in 0..5 {
        b.add_device(spec(0, 0, i, "d", 1.0), None).unwrap();
    }
    b.add_device(spec(0, 0, 9, "empty", 0.0), None).unwrap();
    let before = b.clone();
    let err = b.rebalance(t0()).unwrap_err();
    assert_eq!(
        err,
        BuilderError::TooFewDevices {
            policy: "ec4+2".into(),
            slots: 6,
            devices: 5
        }
    );
    assert!(err.to_string().contains("needs 6 devices with weight > 0"));
    assert_eq!(b, before);
    assert_eq!(b.ring().unwrap_err(), BuilderError::NotBuilt);
}
