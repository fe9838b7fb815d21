//! Unit tests of the metadata state: records applied, refused and replayed.

use super::*;
use crate::record::VOL_THIN;

fn state() -> MdState {
    // 64 KiB clusters: 16 granules of 4 KiB (8 blocks of 512 bytes).
    MdState::new(Layout::compute(64 << 20, 512, 64 << 10, 0, 8).unwrap())
}

fn desc(id: u32, name: &str) -> VolDesc {
    VolDesc::new(id, [id as u8; 16], name, VOL_THIN, 4 * 128)
}

fn setup(st: &mut MdState) {
    st.apply(&Record::CreateVolume(desc(1, "v"))).unwrap();
    st.apply(&Record::AllocRuns { id: 1, first_lc: 0, flags: 0, valid: 0, runs: vec![(5, 2)] }).unwrap();
    st.apply(&Record::SetValid { id: 1, lc: 0, pc: 5, mask: 0b1111 }).unwrap();
}

#[test]
fn release_clears_bits_then_frees_the_emptied_cluster() {
    let mut st = state();
    setup(&mut st);
    let ext = st.vols[&1].ext.clone();
    let fx = st.apply(&Record::Release { id: 1, lc: 0, pc: 5, mask: 0b0011 }).unwrap();
    assert!(fx.freed.is_empty() && !fx.structural);
    assert_eq!((ext.ent(0), ext.valid(0)), (6, 0b1100));
    assert!(st.alloc.get(5));
    let fx = st.apply(&Record::Release { id: 1, lc: 0, pc: 5, mask: 0b1100 }).unwrap();
    assert_eq!(fx.freed, vec![Freed::Cluster(5)]);
    assert_eq!((ext.ent(0), ext.valid(0)), (0, 0));
    assert!(!st.alloc.get(5), "the bitmap no longer counts it");
    assert!(st.inuse.get(5), "not reusable before the record is durable");
    st.release(Freed::Cluster(5));
    assert!(!st.inuse.get(5));
    assert_eq!(st.owned_clusters(1), 1);
}

#[test]
fn release_that_contradicts_the_state_is_refused_and_changes_nothing() {
    let mut st = state();
    setup(&mut st);
    let ext = st.vols[&1].ext.clone();
    for bad in [
        Record::Release { id: 1, lc: 0, pc: 6, mask: 1 },        // wrong cluster
        Record::Release { id: 1, lc: 0, pc: 5, mask: 0b1_0000 }, // bit not valid
        Record::Release { id: 1, lc: 0, pc: 5, mask: 0 },        // nothing
        Record::Release { id: 1, lc: 0, pc: 5, mask: 1 << 16 },  // past the cluster
        Record::Release { id: 1, lc: 1, pc: 6, mask: 1 },        // mapped, no valid bit
        Record::Release { id: 1, lc: 3, pc: 7, mask: 1 },        // unmapped
        Record::Release { id: 1, lc: 99, pc: 5, mask: 1 },       // past the end
        Record::Release { id: 9, lc: 0, pc: 5, mask: 1 },        // no such volume
    ] {
        assert!(st.apply(&bad).is_err(), "{bad:?} accepted");
        assert_eq!((ext.ent(0), ext.valid(0), ext.ent(1)), (6, 0b1111, 7));
        assert!(st.alloc.get(5) && st.alloc.get(6));
    }
}

#[test]
fn release_keeps_parent_backed_granules_and_snapshots() {
    let mut st = state();
    setup(&mut st);
    // Snapshot: volume 1 becomes a clone of snapshot 2 over its whole size.
    st.apply(&Record::Snapshot { origin: 1, snap: desc(2, "s") }).unwrap();
    assert!(st.apply(&Record::Release { id: 2, lc: 0, pc: 5, mask: 1 }).is_err(), "snapshots are read-only");
    st.apply(&Record::AllocRuns { id: 1, first_lc: 2, flags: 0, valid: 0b11, runs: vec![(9, 1)] }).unwrap();
    assert!(st.apply(&Record::Release { id: 1, lc: 2, pc: 9, mask: 0b10 }).is_err(), "parent-backed");
    // Past the parent limit the granules are the volume's alone.
    st.apply(&Record::SetParent { id: 1, parent: 2, parent_limit: 2 * 128 + 8 }).unwrap();
    assert!(st.apply(&Record::Release { id: 1, lc: 2, pc: 9, mask: 0b11 }).is_err(), "granule 0 is below");
    st.apply(&Record::Release { id: 1, lc: 2, pc: 9, mask: 0b10 }).unwrap();
    assert_eq!(st.vols[&1].ext.valid(2), 0b01);
}

#[test]
fn replaying_releases_rebuilds_the_same_state() {
    let recs = [
        Record::CreateVolume(desc(1, "v")),
        Record::AllocRuns { id: 1, first_lc: 0, flags: 0, valid: 0xffff, runs: vec![(3, 3)] },
        Record::Release { id: 1, lc: 1, pc: 4, mask: 0xffff },
        Record::Release { id: 1, lc: 2, pc: 5, mask: 0x00f0 },
        Record::AllocRuns { id: 1, first_lc: 1, flags: 0, valid: 1, runs: vec![(6, 1)] },
    ];
    let mut w = crate::format::Writer::default();
    for r in &recs {
        r.encode(&mut w);
    }
    let mut rd = crate::format::Reader::new(&w.buf, "t");
    let mut st = state();
    for _ in &recs {
        let fx = st.apply(&Record::decode(&mut rd).unwrap()).unwrap();
        for f in fx.freed {
            st.release(f);
        }
    }
    let ext = &st.vols[&1].ext;
    assert_eq!((ext.ent(0), ext.ent(1), ext.ent(2)), (4, 7, 6));
    assert_eq!((ext.valid(0), ext.valid(1), ext.valid(2)), (0xffff, 1, 0xff0f));
    assert!(!st.alloc.get(4) && !st.inuse.get(4));
    // The checkpoint of that state loads into the same state.
    let mut st2 = state();
    for r in st.checkpoint_records() {
        st2.apply(&r).unwrap();
    }
    let e2 = &st2.vols[&1].ext;
    assert_eq!((e2.ent(1), e2.valid(2)), (7, 0xff0f));
    assert_eq!(st2.alloc, st.alloc);
}

#[test]
fn volume_sizes_past_64_times_the_store_are_refused_before_allocating_maps() {
    // Found by the store_open fuzz target: a journaled CreateVolume of ~2^40 clusters sized
    // its cluster maps from the record and aborted the load.
    let mut st = state();
    let max_blocks = st.layout.total_clusters * 64 * st.cluster_blocks();
    for rec in [
        Record::CreateVolume(VolDesc::new(1, [1; 16], "big", VOL_THIN, u64::MAX)),
        Record::PutVolume(VolDesc::new(1, [1; 16], "big", VOL_THIN, max_blocks + 1)),
    ] {
        assert!(matches!(st.apply(&rec), Err(ApplyError::Inconsistent { .. })), "{rec:?}");
        assert!(st.vols.is_empty());
    }
    st.apply(&Record::CreateVolume(VolDesc::new(1, [1; 16], "max", VOL_THIN, max_blocks))).unwrap();
    let gb = st.granule_blocks();
    let too_big = (max_blocks + st.cluster_blocks()).div_ceil(gb) * gb;
    assert!(st.apply(&Record::Resize { id: 1, size_blocks: too_big }).is_err());
    assert_eq!(st.vols[&1].desc.size_blocks, max_blocks);
}
