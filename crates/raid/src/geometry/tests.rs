use super::*;
use std::collections::HashSet;

fn params(level: Level, layout: u32, chunk: u32, disks: u32, dev: u64) -> ArrayParams {
    ArrayParams {
        level,
        layout,
        chunk_sectors: chunk,
        raid_disks: disks,
        dev_sectors: dev,
        member_sectors: vec![dev; disks as usize],
    }
}

/// Renders stripe rows as md documentation draws them: "D0 D1 P" etc.
fn rows(g: &Geometry, stripes: u64) -> Vec<String> {
    let Geometry::Striped(s) = g else { panic!("not striped") };
    (0..stripes)
        .map(|st| {
            let l = s.stripe_layout(st);
            (0..l.raid_disks())
                .map(|m| match l.role_of(m).unwrap() {
                    StripeRole::P => "P".to_string(),
                    StripeRole::Q => "Q".to_string(),
                    StripeRole::Data(k) => format!("D{}", st * l.data_disks() as u64 + k as u64),
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

#[test]
fn raid5_layout_tables() {
    let g = |alg| Geometry::new(&params(Level::Raid5, alg, 8, 4, 64)).unwrap();
    assert_eq!(rows(&g(0), 4), ["D0 D1 D2 P", "D3 D4 P D5", "D6 P D7 D8", "P D9 D10 D11"]);
    assert_eq!(rows(&g(1), 4), ["P D0 D1 D2", "D3 P D4 D5", "D6 D7 P D8", "D9 D10 D11 P"]);
    assert_eq!(rows(&g(2), 4), ["D0 D1 D2 P", "D4 D5 P D3", "D8 P D6 D7", "P D9 D10 D11"]);
    assert_eq!(rows(&g(3), 4), ["P D0 D1 D2", "D5 P D3 D4", "D7 D8 P D6", "D9 D10 D11 P"]);
    assert_eq!(rows(&g(4), 2), ["P D0 D1 D2", "P D3 D4 D5"]);
    assert_eq!(rows(&g(5), 2), ["D0 D1 D2 P", "D3 D4 D5 P"]);
    // raid4 ignores the layout: parity always last.
    let r4 = Geometry::new(&params(Level::Raid4, 2, 8, 4, 64)).unwrap();
    assert_eq!(rows(&r4, 2), ["D0 D1 D2 P", "D3 D4 D5 P"]);
}

#[test]
fn raid6_layout_tables() {
    let g = |alg| Geometry::new(&params(Level::Raid6, alg, 8, 5, 64)).unwrap();
    assert_eq!(rows(&g(2), 5), ["Q D0 D1 D2 P", "D3 D4 D5 P Q", "D7 D8 P Q D6", "D11 P Q D9 D10", "P Q D12 D13 D14"]);
    assert_eq!(rows(&g(0), 3), ["Q D0 D1 D2 P", "D3 D4 D5 P Q", "D6 D7 P Q D8"]);
    assert_eq!(rows(&g(1), 2), ["P Q D0 D1 D2", "D3 P Q D4 D5"]);
    assert_eq!(rows(&g(3), 2), ["P Q D0 D1 D2", "D5 P Q D3 D4"]);
    assert_eq!(rows(&g(4), 1), ["P Q D0 D1 D2"]);
    assert_eq!(rows(&g(5), 1), ["D0 D1 D2 P Q"]);
}

#[test]
fn raid6_syndrome_order() {
    // Symmetric layouts: slot == logical data index.
    let Geometry::Striped(s) = Geometry::new(&params(Level::Raid6, 2, 8, 6, 64)).unwrap() else { unreachable!() };
    for st in 0..12 {
        let l = s.stripe_layout(st);
        let order: Vec<usize> = l.syndrome_members().collect();
        let logical: Vec<usize> = (0..l.data_disks()).map(|k| l.data_member(k)).collect();
        assert_eq!(order, logical, "stripe {st}");
    }
    // Left-asymmetric, 5 disks, stripe 1: "D3 D4 D5 P Q": Q is last, so the
    // walk starts at member 0: slots follow the logical order.
    // Stripe 2: "D6 D7 P Q D8": walk starts after Q at member 4: D8 gets
    // slot 0, D6 slot 1, D7 slot 2.
    let Geometry::Striped(s) = Geometry::new(&params(Level::Raid6, 0, 8, 5, 64)).unwrap() else { unreachable!() };
    let l = s.stripe_layout(2);
    assert_eq!(l.syndrome_members().collect::<Vec<_>>(), vec![4, 0, 1]);
    assert_eq!(l.syndrome_slot(4), Some(0));
    assert_eq!(l.syndrome_slot(0), Some(1));
    assert_eq!(l.syndrome_slot(1), Some(2));
    assert_eq!(l.syndrome_slot(2), None);
    assert_eq!(l.syndrome_slot(3), None);
    for alg in 0..6 {
        let Geometry::Striped(s) = Geometry::new(&params(Level::Raid6, alg, 8, 7, 64)).unwrap() else { unreachable!() };
        for st in 0..14 {
            let l = s.stripe_layout(st);
            for (i, m) in l.syndrome_members().enumerate() {
                assert_eq!(l.syndrome_slot(m), Some(i));
            }
        }
    }
}

/// Every array sector maps to a distinct member sector, the reverse map
/// agrees, and parity/unused member sectors are not data.
fn check_bijection(g: &Geometry) {
    let mut seen = HashSet::new();
    for lba in 0..g.array_sectors() {
        let (target, run) = g.locate(lba).unwrap();
        assert!(run >= 1);
        let places: Vec<MemberSector> = match target {
            Target::Single(ms) => vec![ms],
            Target::Stripe(c) => {
                assert_eq!(c.layout.role_of(c.data.member), Some(StripeRole::Data(c.data_index)));
                vec![c.data]
            }
            Target::Mirrored => g.copies(lba).collect(),
        };
        assert!(!places.is_empty());
        let members: HashSet<usize> = places.iter().map(|p| p.member).collect();
        assert_eq!(members.len(), places.len(), "copies of {lba} share a member");
        for p in places {
            assert!(p.sector < g.member_used_sectors(p.member), "{lba} -> {p:?}");
            assert!(seen.insert(p), "{p:?} used twice (lba {lba}, {g:?})");
            let ext = g.member_extent(p.member, p.sector).unwrap();
            assert_eq!(ext.content, MemberContent::Data { lba }, "reverse of {p:?}");
        }
    }
    // Count data sectors from the member side too.
    let mut data = 0u64;
    for m in 0..g.raid_disks() {
        let mut s = 0;
        while s < g.member_used_sectors(m) {
            let e = g.member_extent(m, s).unwrap();
            if let MemberContent::Data { .. } = e.content {
                assert!(seen.contains(&MemberSector { member: m, sector: s }));
                data += 1;
            }
            s += 1;
        }
    }
    assert_eq!(data, seen.len() as u64);
}

#[test]
fn striped_bijection_all_layouts() {
    for level in [Level::Raid4, Level::Raid5, Level::Raid6] {
        for alg in 0..6 {
            let min = if level == Level::Raid6 { 4 } else { 2 };
            for disks in min..=7 {
                let g = Geometry::new(&params(level, alg, 8, disks, 8 * 9 + 5)).unwrap();
                assert_eq!(g.array_sectors(), 72 * (disks as u64 - level.redundancy() as u64));
                check_bijection(&g);
            }
        }
    }
}

#[test]
fn raid10_tables() {
    let copies = |g: &Geometry, lba| g.copies(lba).map(|c| (c.member, c.sector)).collect::<Vec<_>>();
    // n2 on 4 disks.
    let g = Geometry::new(&params(Level::Raid10, 0x102, 8, 4, 64)).unwrap();
    assert_eq!(g.array_sectors(), 128);
    assert_eq!(copies(&g, 0), [(0, 0), (1, 0)]);
    assert_eq!(copies(&g, 8), [(2, 0), (3, 0)]);
    assert_eq!(copies(&g, 17), [(0, 9), (1, 9)]);
    // n2 on 3 disks: chunk 1 wraps to the next row.
    let g = Geometry::new(&params(Level::Raid10, 0x102, 8, 3, 64)).unwrap();
    assert_eq!(g.array_sectors(), 96);
    assert_eq!(copies(&g, 8), [(2, 0), (0, 8)]);
    assert_eq!(copies(&g, 16), [(1, 8), (2, 8)]);
    // f2 on 4 disks: far copy half a member further, shifted one member.
    let g = Geometry::new(&params(Level::Raid10, 0x201, 8, 4, 64)).unwrap();
    assert_eq!(g.array_sectors(), 128);
    assert_eq!(copies(&g, 0), [(0, 0), (1, 32)]);
    assert_eq!(copies(&g, 24), [(3, 0), (0, 32)]);
    assert_eq!(copies(&g, 33), [(0, 9), (1, 41)]);
    // o2 on 4 disks: the copy is in the next chunk row.
    let g = Geometry::new(&params(Level::Raid10, 0x10201, 8, 4, 64)).unwrap();
    assert_eq!(copies(&g, 0), [(0, 0), (1, 8)]);
    assert_eq!(copies(&g, 24), [(3, 0), (0, 8)]);
    assert_eq!(copies(&g, 32), [(0, 16), (1, 24)]);
}

#[test]
fn raid10_bijection() {
    let layouts = [0x102, 0x103, 0x201, 0x301, 0x202, 0x10201, 0x10301, 0x10202, 0x40201, 0x40202];
    for layout in layouts {
        let l = Raid10Layout::from_md(layout).unwrap();
        assert_eq!(l.to_md(), layout);
        for disks in l.copies()..=7 {
            if l.offset && l.near > 1 && disks % l.near != 0 {
                assert!(Geometry::new(&params(Level::Raid10, layout, 8, disks, 64)).is_err());
                continue;
            }
            for dev in [64u64, 72, 8 * 13] {
                let g = Geometry::new(&params(Level::Raid10, layout, 8, disks, dev))
                    .unwrap_or_else(|e| panic!("{layout:#x} {disks}: {e}"));
                check_bijection(&g);
            }
        }
    }
}

#[test]
fn raid0_single_and_multi_zone() {
    let g = Geometry::new(&params(Level::Raid0, 0, 8, 3, 40)).unwrap();
    assert_eq!(g.array_sectors(), 120);
    let Geometry::Raid0(r) = &g else { unreachable!() };
    assert_eq!(r.zones().len(), 1);
    assert_eq!(g.locate(8).unwrap().0, Target::Single(MemberSector { member: 1, sector: 0 }));
    assert_eq!(g.locate(27).unwrap().0, Target::Single(MemberSector { member: 0, sector: 11 }));
    check_bijection(&g);

    // Sizes 4, 8 and 6 chunks (plus slack rounded away).
    let mut p = params(Level::Raid0, 0, 8, 3, 0);
    p.member_sectors = vec![32 + 3, 64, 48];
    assert_eq!(Geometry::new(&p), Err(GeometryError::Raid0LayoutRequired));
    for layout in [1, 2] {
        p.layout = layout;
        let g = Geometry::new(&p).unwrap();
        let Geometry::Raid0(r) = &g else { unreachable!() };
        assert_eq!(r.zones().len(), 3);
        assert_eq!(r.zones()[1].members, vec![1, 2]);
        assert_eq!(r.zones()[1].dev_start, 32);
        assert_eq!(r.zones()[2].members, vec![1]);
        assert_eq!(g.array_sectors(), 32 + 64 + 48);
        check_bijection(&g);
    }
    // Zone 1 starts at array chunk 12 (even): both layouts agree there;
    // chunk 13 goes to member 2 either way, but a zone starting at an odd
    // chunk distinguishes them.
    p.member_sectors = vec![24, 64, 64];
    p.layout = 1;
    let orig = Geometry::new(&p).unwrap();
    p.layout = 2;
    let alt = Geometry::new(&p).unwrap();
    // Zone 1 starts at array chunk 9 on members 1 and 2.
    let at = |g: &Geometry, lba| match g.locate(lba).unwrap().0 {
        Target::Single(ms) => ms,
        t => panic!("{t:?}"),
    };
    assert_eq!(at(&alt, 72), MemberSector { member: 1, sector: 24 });
    assert_eq!(at(&orig, 72), MemberSector { member: 2, sector: 24 });
}

#[test]
fn linear_mapping() {
    let mut p = params(Level::Linear, 0, 0, 3, 0);
    p.member_sectors = vec![10, 0, 7];
    let g = Geometry::new(&p).unwrap();
    assert_eq!(g.array_sectors(), 17);
    assert_eq!(g.locate(9).unwrap(), (Target::Single(MemberSector { member: 0, sector: 9 }), 1));
    assert_eq!(g.locate(10).unwrap(), (Target::Single(MemberSector { member: 2, sector: 0 }), 7));
    check_bijection(&g);
    p.chunk_sectors = 4;
    assert_eq!(Geometry::new(&p).unwrap().array_sectors(), 8 + 4);
}

#[test]
fn raid1_mapping() {
    let g = Geometry::new(&params(Level::Raid1, 0, 0, 3, 50)).unwrap();
    assert_eq!(g.array_sectors(), 50);
    assert_eq!(g.locate(7).unwrap(), (Target::Mirrored, 43));
    assert_eq!(g.copies(7).count(), 3);
    check_bijection(&g);
}

#[test]
fn split_pieces_cover_the_io() {
    let g = Geometry::new(&params(Level::Raid5, 2, 16, 5, 16 * 10)).unwrap();
    let pieces: Vec<Piece> = g.split(5, 100).unwrap().collect();
    assert_eq!(pieces[0].lba, 5);
    assert_eq!(pieces[0].sectors, 11);
    let mut next = 5;
    for p in &pieces {
        assert_eq!(p.lba, next);
        assert_eq!(p.io_offset, p.lba - 5);
        assert!(p.sectors <= 16);
        next += p.sectors;
    }
    assert_eq!(next, 105);
    assert!(matches!(g.split(g.array_sectors() - 1, 2), Err(GeometryError::OutOfRange { .. })));
    assert!(matches!(g.split(u64::MAX, 2), Err(GeometryError::OutOfRange { .. })));
    assert_eq!(g.split(0, 0).unwrap().count(), 0);
}

#[test]
fn parameter_errors() {
    assert!(matches!(Geometry::new(&params(Level::Raid5, 2, 12, 4, 64)), Err(GeometryError::BadChunk { .. })));
    assert!(matches!(Geometry::new(&params(Level::Raid5, 2, 4, 4, 64)), Err(GeometryError::BadChunk { .. })));
    assert!(matches!(Geometry::new(&params(Level::Raid6, 2, 8, 3, 64)), Err(GeometryError::TooFewDisks { .. })));
    assert!(matches!(Geometry::new(&params(Level::Raid5, 9, 8, 4, 64)), Err(GeometryError::UnsupportedLayout { .. })));
    assert!(matches!(
        Geometry::new(&params(Level::Raid10, 0x103, 8, 2, 64)),
        Err(GeometryError::UnsupportedLayout { .. })
    ));
    assert!(matches!(
        Geometry::new(&params(Level::Raid10, 0x80102, 8, 4, 64)),
        Err(GeometryError::UnsupportedLayout { .. })
    ));
    assert!(matches!(Geometry::new(&params(Level::Raid5, 2, 8, 4, 7)), Err(GeometryError::Empty)));
    let mut p = params(Level::Raid0, 0, 8, 3, 64);
    p.member_sectors.pop();
    assert!(matches!(Geometry::new(&p), Err(GeometryError::MemberCountMismatch { .. })));
    let g = Geometry::new(&params(Level::Raid1, 0, 0, 2, 64)).unwrap();
    assert!(matches!(g.member_extent(2, 0), Err(GeometryError::NoSuchMember { .. })));
    assert_eq!(g.member_extent(1, 64).unwrap().content, MemberContent::Unused);
    // Absurd sizes do not overflow.
    let huge = params(Level::Raid10, 0x102, 8, 1920, u64::MAX);
    assert!(matches!(Geometry::new(&huge), Err(GeometryError::Overflow) | Ok(_)));
    let huge = params(Level::Raid6, 2, 8, 1920, u64::MAX);
    assert!(matches!(Geometry::new(&huge), Err(GeometryError::Overflow) | Ok(_)));
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    fn any_geometry() -> impl Strategy<Value = Geometry> {
        (0usize..6, 0u32..6, 1u32..9, 1u64..40, 0u32..4).prop_filter_map("valid", |(lv, alg, disks, chunks, shift)| {
            let chunk = 8u32 << shift;
            let dev = chunks * u64::from(chunk) + u64::from(alg);
            let (level, layout) = match lv {
                0 => (Level::Raid0, 0),
                1 => (Level::Raid1, 0),
                2 => (Level::Raid4, 0),
                3 => (Level::Raid5, alg),
                4 => (Level::Raid6, alg),
                _ => (Level::Raid10, [0x102, 0x201, 0x10201, 0x103][alg as usize % 4]),
            };
            Geometry::new(&params(level, layout, chunk, disks, dev)).ok()
        })
    }

    proptest! {
        #[test]
        fn split_then_member_extent_round_trips(g in any_geometry(), a in any::<u64>(), b in any::<u64>()) {
            let size = g.array_sectors();
            let lba = a % size;
            let len = b % (size - lba).min(300) + 1;
            let mut total = 0;
            for p in g.split(lba, len).unwrap() {
                total += p.sectors;
                let places: Vec<MemberSector> = match p.target {
                    Target::Single(ms) => vec![ms],
                    Target::Stripe(c) => vec![c.data],
                    Target::Mirrored => g.copies(p.lba).collect(),
                };
                for ms in places {
                    let e = g.member_extent(ms.member, ms.sector).unwrap();
                    prop_assert_eq!(e.content, MemberContent::Data { lba: p.lba });
                    prop_assert!(e.sectors >= p.sectors);
                }
            }
            prop_assert_eq!(total, len);
        }
    }
}
