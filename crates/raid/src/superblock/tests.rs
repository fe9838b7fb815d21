use super::*;

/// Written by mdadm 4.2 / Linux 6.1: `mdadm --create --level=5
/// --raid-devices=3 --assume-clean` on three 32 MiB virtio disks.
const MDADM_DEV0: &[u8] = include_bytes!("testdata/mdadm_raid5_dev0.bin");
const MDADM_DEV2: &[u8] = include_bytes!("testdata/mdadm_raid5_dev2.bin");
const DEV_SECTORS: u64 = 32 * 2048;

#[test]
fn parses_mdadm_superblock() {
    let sb = Superblock::parse_on_member(MDADM_DEV0, 8, DEV_SECTORS).unwrap();
    assert_eq!(sb.level, Level::Raid5);
    assert_eq!(sb.layout, 2);
    assert_eq!(sb.raid_disks, 3);
    assert_eq!(sb.chunk_sectors, 1024);
    assert_eq!(sb.size, 61440);
    assert_eq!(sb.data_offset, 4096);
    assert_eq!(sb.data_size, 61440);
    assert_eq!(sb.super_offset, 8);
    assert_eq!(sb.dev_number, 0);
    assert_eq!(sb.max_dev(), 128);
    assert_eq!(sb.events, 0);
    assert!(sb.is_clean());
    assert_eq!(sb.name(), "(none):0");
    assert_eq!(sb.uuid_string(), "67d71b4e:f88d419c:4ee6e811:c46d2460");
    assert_eq!(sb.bblog_size, 8);
    assert_eq!(sb.bblog_offset, 16);
    assert_eq!(sb.role(), Some(DevRole::Active(0)));
    assert_eq!(&sb.dev_roles[..4], &[DevRole::Active(0), DevRole::Active(1), DevRole::Active(2), DevRole::Spare]);
    let sb2 = Superblock::parse_on_member(MDADM_DEV2, 8, DEV_SECTORS).unwrap();
    assert_eq!(sb2.dev_number, 2);
    assert_eq!(sb2.role(), Some(DevRole::Active(2)));
    assert_eq!(sb2.set_uuid, sb.set_uuid);
    assert_ne!(sb2.device_uuid, sb.device_uuid);
}

#[test]
fn reencodes_mdadm_superblock_bit_for_bit() {
    for bytes in [MDADM_DEV0, MDADM_DEV2] {
        let sb = Superblock::parse(bytes).unwrap();
        let out = sb.encode(512).unwrap();
        assert_eq!(out.as_slice(), bytes);
        assert_eq!(checksum(bytes).unwrap(), sb.to_raw().sb_csum.get());
    }
}

#[test]
fn rejects_bad_magic_version_and_checksum() {
    let mut b = MDADM_DEV0.to_vec();
    b[0] = 0;
    assert!(matches!(Superblock::parse(&b), Err(SuperblockError::BadMagic(_))));

    let mut b = MDADM_DEV0.to_vec();
    b[4] = 2;
    assert_eq!(Superblock::parse(&b), Err(SuperblockError::BadMajorVersion(2)));

    let mut b = MDADM_DEV0.to_vec();
    b[200] ^= 0x10; // events
    assert!(matches!(Superblock::parse(&b), Err(SuperblockError::BadChecksum { .. })));

    // A role byte is covered by the checksum too.
    let mut b = MDADM_DEV0.to_vec();
    b[256 + 2 * 100] = 0x12;
    assert!(matches!(Superblock::parse(&b), Err(SuperblockError::BadChecksum { .. })));

    assert!(matches!(Superblock::parse(&MDADM_DEV0[..200]), Err(SuperblockError::TooShort { .. })));
    assert!(matches!(Superblock::parse(&MDADM_DEV0[..300]), Err(SuperblockError::TooShort { .. })));
}

fn reseal(sb: &Superblock) -> Vec<u8> {
    sb.encode(512).unwrap()
}

#[test]
fn rejects_max_dev_out_of_range() {
    let mut b = MDADM_DEV0.to_vec();
    b[220..224].copy_from_slice(&5000u32.to_le_bytes());
    assert_eq!(Superblock::parse(&b), Err(SuperblockError::MaxDevOutOfRange(5000)));
}

#[test]
fn rejects_unknown_features_padding_level_roles() {
    let base = Superblock::parse(MDADM_DEV0).unwrap();

    let mut sb = base.clone();
    sb.feature_map = FeatureMap(1 << 20);
    assert_eq!(Superblock::parse(&reseal(&sb)), Err(SuperblockError::UnknownFeatures(1 << 20)));

    // Padding and level are not representable in `Superblock`; patch the
    // bytes and fix the checksum by hand.
    let patch = |off: usize, val: &[u8]| {
        let mut b = MDADM_DEV0.to_vec();
        b[off..off + val.len()].copy_from_slice(val);
        let c = checksum(&b).unwrap();
        b[CSUM_OFFSET..CSUM_OFFSET + 4].copy_from_slice(&c.to_le_bytes());
        b
    };
    assert_eq!(Superblock::parse(&patch(12, &[1])), Err(SuperblockError::NonZeroPadding));
    assert_eq!(Superblock::parse(&patch(240, &[1])), Err(SuperblockError::NonZeroPadding));
    assert_eq!(Superblock::parse(&patch(72, &7i32.to_le_bytes())), Err(SuperblockError::UnknownLevel(7)));
    assert_eq!(
        Superblock::parse(&patch(256 + 6, &0xff10u16.to_le_bytes())),
        Err(SuperblockError::InvalidRole { index: 3, value: 0xff10 })
    );
    assert_eq!(
        Superblock::parse(&patch(160, &200u32.to_le_bytes())),
        Err(SuperblockError::DevNumberOutOfRange { dev_number: 200, max_dev: 128 })
    );
}

#[test]
fn member_checks() {
    let sb = Superblock::parse(MDADM_DEV0).unwrap();
    assert_eq!(
        sb.validate_on_member(0, DEV_SECTORS),
        Err(SuperblockError::SuperOffsetMismatch { recorded: 8, actual: 0 })
    );
    assert_eq!(
        sb.validate_on_member(8, DEV_SECTORS - 1),
        Err(SuperblockError::PastDevice { region: "data area", end: DEV_SECTORS, device_sectors: DEV_SECTORS - 1 })
    );
    let mut s = sb.clone();
    s.data_offset = 8;
    assert!(matches!(s.validate_on_member(8, DEV_SECTORS * 2), Err(SuperblockError::Overlap { .. })));
    let mut s = sb.clone();
    s.size = s.data_size + 1;
    assert!(matches!(s.validate_on_member(8, DEV_SECTORS), Err(SuperblockError::SizeExceedsData { .. })));
    let mut s = sb.clone();
    s.feature_map.insert(FeatureMap::BITMAP_OFFSET);
    s.bitmap_offset = 8;
    assert_eq!(s.validate_on_member(8, DEV_SECTORS), Ok(()));
    s.bitmap_offset = 4096;
    assert!(matches!(s.validate_on_member(8, DEV_SECTORS), Err(SuperblockError::Overlap { region: "bitmap", .. })));
    s.bitmap_offset = -100;
    assert!(matches!(s.validate_on_member(8, DEV_SECTORS), Err(SuperblockError::PastDevice { .. })));
}

#[test]
fn versions_and_times() {
    assert_eq!(SuperblockVersion::V1_2.super_offset(100), Some(8));
    assert_eq!(SuperblockVersion::V1_1.super_offset(100), Some(0));
    assert_eq!(SuperblockVersion::V1_0.super_offset(65536), Some(65520));
    assert_eq!(SuperblockVersion::V1_0.super_offset(65541), Some(65520));
    assert_eq!(SuperblockVersion::V1_0.super_offset(4), None);
    let t = MdTime::new(1_700_000_000, 123_456);
    assert_eq!(t.seconds(), 1_700_000_000);
    assert_eq!(t.micros(), 123_456);
    assert_eq!(format_uuid(&[0xab; 16]), "abababab:abababab:abababab:abababab");
}

#[test]
fn odd_max_dev_checksum_includes_half_word() {
    let mut sb = Superblock::parse(MDADM_DEV0).unwrap();
    sb.dev_roles.truncate(5);
    let b = sb.encode(512).unwrap();
    assert_eq!(Superblock::parse(&b).unwrap(), sb);
    let mut bad = b.clone();
    bad[256 + 8] ^= 1; // last (fifth) role
    assert!(matches!(Superblock::parse(&bad), Err(SuperblockError::BadChecksum { .. })));
    // Bytes after max_dev roles are not covered.
    let mut ok = b;
    ok[256 + 10] ^= 1;
    assert!(Superblock::parse(&ok).is_ok());
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1200)) {
            let _ = Superblock::parse(&bytes);
            let _ = Superblock::parse_on_member(&bytes, 8, 1 << 20);
        }

        #[test]
        fn mutated_mdadm_superblock_never_panics(
            idx in 0usize..512, val in any::<u8>(), fix_csum in any::<bool>()
        ) {
            let mut b = MDADM_DEV0.to_vec();
            b[idx] = val;
            if fix_csum {
                if let Ok(c) = checksum(&b) {
                    b[CSUM_OFFSET..CSUM_OFFSET + 4].copy_from_slice(&c.to_le_bytes());
                }
            }
            if let Ok(sb) = Superblock::parse(&b) {
                // Whatever parses re-encodes to a block that parses the same.
                let again = Superblock::parse(&sb.encode(512).unwrap()).unwrap();
                prop_assert_eq!(again, sb.clone());
                let _ = sb.validate_on_member(8, DEV_SECTORS);
            }
        }

        #[test]
        fn round_trip(events in any::<u64>(), roles in proptest::collection::vec(0u16..40, 1..64),
                      dev_number in 0u32..64, layout in any::<u32>(), size in any::<u64>()) {
            let mut sb = Superblock::parse(MDADM_DEV0).unwrap();
            sb.events = events;
            sb.dev_roles = roles.iter().map(|&r| DevRole::Active(r)).collect();
            sb.dev_number = dev_number % sb.max_dev();
            sb.layout = layout;
            sb.size = size;
            let b = sb.encode(4096).unwrap();
            prop_assert_eq!(b.len(), 4096);
            prop_assert_eq!(Superblock::parse(&b).unwrap(), sb);
        }
    }
}
