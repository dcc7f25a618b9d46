//! Ring and builder files: round trips, and every kind of damage detected.

use nimbus_ring::{FormatError, Ring, RingBuilder};
use proptest::prelude::*;

use crate::{Topo, cases, t0, topo};

fn built(t: &Topo) -> RingBuilder {
    let mut b = t.builder(1);
    b.rebalance(t0()).unwrap();
    b
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(24)))]

    #[test]
    fn builders_and_rings_round_trip(t in topo()) {
        prop_assume!(t.active() >= t.slots());
        let b = built(&t);
        prop_assert_eq!(&RingBuilder::decode(&b.encode()).unwrap(), &b);
        let ring = b.ring().unwrap();
        prop_assert_eq!(&Ring::decode(&ring.encode()).unwrap(), &ring);
        // an unbuilt builder too
        let fresh = t.builder(1);
        prop_assert_eq!(RingBuilder::decode(&fresh.encode()).unwrap(), fresh);
    }

    #[test]
    fn a_flipped_byte_or_a_truncation_is_detected(
        t in topo(), at: prop::sample::Index, bit in 0u8..8, cut: prop::sample::Index,
    ) {
        prop_assume!(t.active() >= t.slots());
        let b = built(&t);
        for bytes in [b.encode(), b.ring().unwrap().encode()] {
            let mut flipped = bytes.clone();
            flipped[at.index(bytes.len())] ^= 1 << bit;
            prop_assert!(RingBuilder::decode(&flipped).is_err());
            prop_assert!(Ring::decode(&flipped).is_err());
            let short = &bytes[..cut.index(bytes.len())];
            prop_assert!(RingBuilder::decode(short).is_err());
            prop_assert!(Ring::decode(short).is_err());
        }
    }

    #[test]
    fn decoding_garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = RingBuilder::decode(&bytes);
        let _ = Ring::decode(&bytes);
    }
}

fn sample() -> RingBuilder {
    let devices = (0..6).map(|i| (0, i, 0, 1.0)).collect();
    built(&Topo {
        policy: "ec4+2",
        part_power: 4,
        seed: 0,
        devices,
    })
}

/// Rewrites the frame's checksum after editing, as a newer writer would have.
fn reseal(bytes: &mut [u8]) {
    let n = bytes.len() - 32;
    let sum = blake3::hash(&bytes[..n]);
    bytes[n..].copy_from_slice(sum.as_bytes());
}

#[test]
fn errors_name_the_problem() {
    let b = sample();
    let bytes = b.encode();

    let mut newer = bytes.clone();
    newer[8] = 2;
    reseal(&mut newer);
    assert_eq!(
        RingBuilder::decode(&newer).unwrap_err(),
        FormatError::NewerFormat {
            version: 2,
            supported: 1
        }
    );

    let err = RingBuilder::decode(&bytes[..bytes.len() - 1]).unwrap_err();
    assert!(matches!(err, FormatError::WrongLength { .. }), "{err}");

    let mut flipped = bytes.clone();
    flipped[40] ^= 0x10;
    assert_eq!(
        RingBuilder::decode(&flipped).unwrap_err(),
        FormatError::ChecksumMismatch
    );

    let ring = b.ring().unwrap().encode();
    assert_eq!(
        RingBuilder::decode(&ring).unwrap_err(),
        FormatError::WrongMagic {
            expected: "ring builder"
        }
    );
    assert_eq!(
        Ring::decode(&bytes).unwrap_err(),
        FormatError::WrongMagic { expected: "ring" }
    );
}

#[test]
fn a_well_sealed_file_with_bad_contents_is_refused() {
    // A slot naming a device index that does not exist, under a valid checksum.
    let ring = sample().ring().unwrap();
    let mut bytes = ring.encode();
    let table_start = bytes.len() - 32 - 16 * 6 * 2;
    bytes[table_start] = 0xfe;
    bytes[table_start + 1] = 0x00;
    reseal(&mut bytes);
    let err = Ring::decode(&bytes).unwrap_err();
    assert!(matches!(err, FormatError::Invalid { .. }), "{err}");
}

#[test]
fn files_are_replaced_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("object.builder");
    let b = sample();
    b.save(&path).unwrap();
    assert_eq!(RingBuilder::load(&path).unwrap(), b);
    b.save(&path).unwrap();
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("object.builder")]);
    let missing = RingBuilder::load(&dir.path().join("nope")).unwrap_err();
    assert!(missing.to_string().contains("nope"));
}
