//! SGLs: the driver describes multi-segment I/O with SGLs when the
//! controller offers them, and the emulated controller walks SGLs strictly.

mod common;

use common::*;
use nvme_pcie::emu::{EmuConfig, Emulator};
use nvme_pcie::sgl::{Descriptor, SglAlignment, SglCaps, SGL_DATA_BLOCK_GRANULARITY_INVALID};
use nvme_pcie::{Controller, ControllerConfig, DmaBuffer, IoError, IoQueuePair, SubmitError};
use nvme_spec::queue::Psdt;
use nvme_spec::status::GenericStatus;
use nvme_spec::{DataPointer, IoCommand, Sqe, StatusCode};
use proptest::prelude::*;
use zerocopy::IntoBytes;

fn no_sgl() -> EmuConfig {
    EmuConfig { sgl: None, ..small_cfg() }
}

/// `len` bytes at byte `off` of a fresh allocation (its own mapping).
fn seg(c: &Controller<Emulator>, off: usize, len: usize) -> DmaBuffer {
    c.dma().alloc(off + len).unwrap().slice(off, len).unwrap()
}

fn concat(segs: &[DmaBuffer]) -> Vec<u8> {
    segs.iter().flat_map(bytes).collect()
}

fn fill(segs: &[DmaBuffer], seed: u64) {
    for (i, s) in segs.iter().enumerate() {
        pattern(s, seed.wrapping_mul(31).wrapping_add(i as u64));
    }
}

#[test]
fn multi_segment_io_uses_sgls_when_offered() {
    let (c, h) = attach(small_cfg());
    assert_eq!(c.info().sgl, Some(SglCaps::new(SglAlignment::Dword)));
    let mut q = c.create_io_queue_pair(32).unwrap();
    assert!(q.uses_sgls());
    // Odd offsets and lengths no PRP list can describe.
    let w = [seg(&c, 100, 1000), seg(&c, 12, 36), seg(&c, 0, 2048), seg(&c, 4000, 1012)];
    fill(&w, 1);
    run1(&mut q, |q| q.writev(1, 7, &w, 1)).unwrap();
    let mut raw = vec![0u8; 4096];
    h.read_namespace(1, 7 * 512, &mut raw);
    assert_eq!(raw, concat(&w));
    // Read back through a different segmentation.
    let r = [seg(&c, 8, 4), seg(&c, 4092, 3000), seg(&c, 0, 1092)];
    run1(&mut q, |q| q.readv(1, 7, &r, 2)).unwrap();
    assert_eq!(concat(&r), raw);
    assert_eq!(q.stats().sgl_commands, 2);
    assert_eq!(h.stats().sgl_commands, 2);
    // Single buffers keep using PRPs.
    let one = c.dma().alloc(4096).unwrap();
    run1(&mut q, |q| q.read(1, 7, &one, 3)).unwrap();
    assert_eq!(bytes(&one), raw);
    assert_eq!(q.stats().sgl_commands, 2);
    // The controller's dword granularity is checked before submission.
    let odd = [seg(&c, 0, 510), seg(&c, 0, 2)];
    assert_eq!(q.writev(1, 0, &odd, 4), Err(SubmitError::Misaligned));
    assert_eq!(q.outstanding(), 0);
    let too_many: Vec<DmaBuffer> = (0..17).map(|_| seg(&c, 0, 512)).collect();
    assert_eq!(q.readv(1, 0, &too_many, 5), Err(SubmitError::TooLarge));
}

#[test]
fn without_sgls_vectored_io_needs_page_aligned_inner_boundaries() {
    for (cfg, ccfg) in [
        (no_sgl(), ControllerConfig::default()),
        (small_cfg(), ControllerConfig { sgl: false, ..ControllerConfig::default() }),
    ] {
        let sgl_offered = cfg.sgl.is_some();
        let (c, h) = attach_with(cfg, ccfg);
        assert_eq!(c.info().sgl.is_some(), sgl_offered);
        let mut q = c.create_io_queue_pair(16).unwrap();
        assert!(!q.uses_sgls());
        let w = [seg(&c, 512, 3584), seg(&c, 0, 8192), seg(&c, 0, 1024)];
        fill(&w, 2);
        run1(&mut q, |q| q.writev(1, 0, &w, 1)).unwrap();
        let mut raw = vec![0u8; 12800];
        h.read_namespace(1, 0, &mut raw);
        assert_eq!(raw, concat(&w));
        let bad = [seg(&c, 0, 1024), seg(&c, 0, 1024)];
        assert_eq!(q.readv(1, 0, &bad, 2), Err(SubmitError::Misaligned));
        assert_eq!(q.stats().sgl_commands, 0);
        assert_eq!(h.stats().sgl_commands, 0);
    }
}

#[test]
fn sgl_requests_beyond_mdts_are_split_at_block_boundaries_inside_segments() {
    let cfg = EmuConfig { mdts: 1, ..small_cfg() }; // 8 KiB per command
    let (c, h) = attach(cfg);
    let mut q = c.create_io_queue_pair(32).unwrap();
    let w = [seg(&c, 4, 5000), seg(&c, 0, 20), seg(&c, 96, 30000), seg(&c, 8, 1844)];
    fill(&w, 3);
    let total: usize = w.iter().map(DmaBuffer::len).sum();
    assert_eq!(total % 512, 0);
    let before = h.stats().commands;
    run1(&mut q, |q| q.writev(1, 33, &w, 1)).unwrap();
    assert_eq!(h.stats().commands - before, total.div_ceil(8192) as u64);
    let mut raw = vec![0u8; total];
    h.read_namespace(1, 33 * 512, &mut raw);
    assert_eq!(raw, concat(&w));
}

/// Submit a Read of `blocks` 512-byte blocks at LBA 0 of namespace 1 with
/// the given data pointer and return its status.
fn raw_read(q: &mut IoQueuePair<Emulator>, blocks: u16, dp: DataPointer, psdt: Option<Psdt>) -> Result<(), IoError> {
    let mut sqe: Sqe = IoCommand::Read { nsid: 1, slba: 0, nlb: blocks - 1, fua: false, lr: false }.to_sqe(0);
    sqe.set_data_pointer(dp);
    if let Some(p) = psdt {
        sqe.set_psdt(p);
    }
    run1(q, |q| q.submit_raw(sqe, None, 9))
}

fn generic_status(r: Result<(), IoError>) -> GenericStatus {
    match r {
        Err(IoError::Status(s)) => match s.code {
            StatusCode::Generic(g) => g,
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

fn write_list(list: &DmaBuffer, descs: &[Descriptor]) {
    for (i, d) in descs.iter().enumerate() {
        list.write_bytes(i * 16, d.encode().as_bytes()).unwrap();
    }
}

#[test]
fn emulator_rejects_malformed_sgls_with_the_right_status() {
    let (c, h) = attach(small_cfg());
    let mut q = c.create_io_queue_pair(16).unwrap();
    let data = c.dma().alloc(8192).unwrap();
    let list = c.dma().alloc(4096).unwrap();
    let (d, l) = (data.iova(), list.iova());
    let sgl = |x: Descriptor| DataPointer::Sgl(x.encode());
    let raw_sgl = |id: u8| DataPointer::Sgl(nvme_spec::SglDescriptor::new(d, 1024, id));
    use GenericStatus as G;

    // A well-formed SGL of two data blocks in a last segment works.
    write_list(
        &list,
        &[Descriptor::DataBlock { addr: d, len: 512 }, Descriptor::DataBlock { addr: d + 4096, len: 512 }],
    );
    raw_read(&mut q, 2, sgl(Descriptor::LastSegment { addr: l, len: 32 }), None).unwrap();
    // Data length shorter or longer than the transfer.
    assert_eq!(
        generic_status(raw_read(&mut q, 2, sgl(Descriptor::DataBlock { addr: d, len: 512 }), None)),
        G::DataSglLengthInvalid
    );
    assert_eq!(
        generic_status(raw_read(&mut q, 1, sgl(Descriptor::DataBlock { addr: d, len: 1024 }), None)),
        G::DataSglLengthInvalid
    );
    assert_eq!(
        generic_status(raw_read(&mut q, 1, sgl(Descriptor::LastSegment { addr: l, len: 32 }), None)),
        G::DataSglLengthInvalid
    );
    // Descriptor types and subtypes a PCIe controller does not take.
    for id in [0x10, 0x40, 0x5a, 0x70, 0xe0, 0xf0, 0x02] {
        assert_eq!(generic_status(raw_read(&mut q, 2, raw_sgl(id), None)), G::SglDescriptorTypeInvalid, "id {id:#x}");
    }
    assert_eq!(generic_status(raw_read(&mut q, 2, raw_sgl(0x01), None)), G::SglOffsetInvalid);
    // Dword granularity.
    let g = raw_read(&mut q, 1, sgl(Descriptor::DataBlock { addr: d + 2, len: 512 }), None);
    assert_eq!(generic_status(g), G::Other(SGL_DATA_BLOCK_GRANULARITY_INVALID));
    write_list(&list, &[Descriptor::DataBlock { addr: d, len: 510 }, Descriptor::DataBlock { addr: d + 4096, len: 2 }]);
    let g = raw_read(&mut q, 1, sgl(Descriptor::LastSegment { addr: l, len: 32 }), None);
    assert_eq!(generic_status(g), G::Other(SGL_DATA_BLOCK_GRANULARITY_INVALID));
    // Segment lengths that are zero or not whole descriptors.
    for len in [0, 8, 40] {
        let g = raw_read(&mut q, 1, sgl(Descriptor::LastSegment { addr: l, len }), None);
        assert_eq!(generic_status(g), G::InvalidSglSegmentDescriptor, "segment length {len}");
    }
    // A chain descriptor inside the last segment, or not at the end of a segment.
    write_list(&list, &[Descriptor::DataBlock { addr: d, len: 512 }, Descriptor::Segment { addr: l + 64, len: 16 }]);
    let g = raw_read(&mut q, 1, sgl(Descriptor::LastSegment { addr: l, len: 32 }), None);
    assert_eq!(generic_status(g), G::InvalidSglSegmentDescriptor);
    write_list(
        &list,
        &[Descriptor::LastSegment { addr: l + 64, len: 16 }, Descriptor::DataBlock { addr: d, len: 512 }],
    );
    let g = raw_read(&mut q, 1, sgl(Descriptor::Segment { addr: l, len: 32 }), None);
    assert_eq!(generic_status(g), G::InvalidSglSegmentDescriptor);
    // A segment reached through a Segment descriptor that does not chain on.
    write_list(&list, &[Descriptor::DataBlock { addr: d, len: 512 }]);
    let g = raw_read(&mut q, 1, sgl(Descriptor::Segment { addr: l, len: 16 }), None);
    assert_eq!(generic_status(g), G::InvalidSglSegmentDescriptor);
    // A segment chain that loops forever.
    write_list(&list, &[Descriptor::DataBlock { addr: d, len: 0 }, Descriptor::Segment { addr: l, len: 32 }]);
    let g = raw_read(&mut q, 1, sgl(Descriptor::Segment { addr: l, len: 32 }), None);
    assert_eq!(generic_status(g), G::InvalidSglCount);
    // Unmapped memory: data, and the segment itself.
    let g = raw_read(&mut q, 1, sgl(Descriptor::DataBlock { addr: 0x10, len: 512 }), None);
    assert_eq!(generic_status(g), G::DataTransferError);
    let g = raw_read(&mut q, 1, sgl(Descriptor::LastSegment { addr: 0x1000, len: 16 }), None);
    assert_eq!(generic_status(g), G::DataTransferError);
    // MPTR as an SGL segment is not offered; 11b is reserved.
    let ok = sgl(Descriptor::DataBlock { addr: d, len: 512 });
    raw_read(&mut q, 1, ok, None).unwrap();
    assert_eq!(generic_status(raw_read(&mut q, 1, ok, Some(Psdt::SglMetaSegment))), G::InvalidField);
    let mut sqe: Sqe = IoCommand::Read { nsid: 1, slba: 0, nlb: 0, fua: false, lr: false }.to_sqe(0);
    sqe.set_data_pointer(ok);
    sqe.cdw0 = (sqe.cdw0.get() | 0xc000).into();
    assert_eq!(generic_status(run1(&mut q, |q| q.submit_raw(sqe, None, 1))), G::InvalidField);
    // Admin commands must use PRPs.
    let mut id = nvme_spec::AdminCommand::identify(nvme_spec::command::Cns::Controller, 0).to_sqe(0);
    id.set_data_pointer(sgl(Descriptor::DataBlock { addr: l, len: 4096 }));
    assert!(matches!(c.admin_command(id, None), Err(nvme_pcie::NvmeError::AdminStatus { .. })));
    // The queue and controller are fine afterwards.
    assert!(h.is_enabled());
    run1(&mut q, |q| q.read(1, 0, &data, 2)).unwrap();
}

#[test]
fn excess_sgl_length_is_accepted_when_advertised() {
    let cfg = EmuConfig { sgl: Some(SglAlignment::Byte), sgl_excess_length: true, ..small_cfg() };
    let (c, _h) = attach(cfg);
    let sgls = c.info().sgl.unwrap();
    assert!(sgls.excess_length && sgls.alignment == SglAlignment::Byte);
    let mut q = c.create_io_queue_pair(16).unwrap();
    let data = c.dma().alloc(8192).unwrap();
    let dp = DataPointer::Sgl(Descriptor::DataBlock { addr: data.iova() + 1, len: 4000 }.encode());
    raw_read(&mut q, 1, dp, None).unwrap();
    let dp = DataPointer::Sgl(Descriptor::DataBlock { addr: data.iova(), len: 100 }.encode());
    assert_eq!(generic_status(raw_read(&mut q, 1, dp, None)), GenericStatus::DataSglLengthInvalid);
    // Byte granularity: the driver accepts odd segments too.
    let w = [seg(&c, 3, 511), seg(&c, 1, 1)];
    fill(&w, 4);
    run1(&mut q, |q| q.writev(1, 5, &w, 3)).unwrap();
    let r = c.dma().alloc(512).unwrap();
    run1(&mut q, |q| q.read(1, 5, &r, 4)).unwrap();
    assert_eq!(bytes(&r), concat(&w));
}

/// Random segment lists: dword-aligned offsets and lengths adding up to
/// whole blocks.
fn segment_lists() -> impl Strategy<Value = Vec<(usize, usize)>> {
    prop::collection::vec((0usize..2048, 1usize..3000), 1..=8).prop_map(|v| {
        let mut v: Vec<(usize, usize)> = v.into_iter().map(|(o, l)| (o & !3, (l + 3) & !3)).collect();
        let total: usize = v.iter().map(|x| x.1).sum();
        let pad = total.next_multiple_of(512) - total;
        if let Some(last) = v.last_mut() {
            last.1 += pad;
        }
        v
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Data written through random SGL segment lists (split at random
    /// MDTS) reads back the same through PRPs and through other random
    /// segment lists, and matches what the namespace holds.
    #[test]
    fn random_segment_lists_round_trip(
        wsegs in segment_lists(),
        rsegs in segment_lists(),
        lba in 0u64..2000,
        mdts in 1u8..6,
    ) {
        let (c, h) = attach(EmuConfig { mdts, ..small_cfg() });
        let mut q = c.create_io_queue_pair(64).unwrap();
        let w: Vec<DmaBuffer> = wsegs.iter().map(|&(o, l)| seg(&c, o, l)).collect();
        fill(&w, lba);
        let total: usize = w.iter().map(DmaBuffer::len).sum();
        run1(&mut q, |q| q.writev(1, lba, &w, 1)).unwrap();
        let mut raw = vec![0u8; total];
        h.read_namespace(1, lba * 512, &mut raw);
        prop_assert_eq!(&raw, &concat(&w));
        let one = c.dma().alloc(total).unwrap();
        run1(&mut q, |q| q.read(1, lba, &one, 2)).unwrap();
        prop_assert_eq!(&bytes(&one), &raw);
        // Reads of the same range through another segmentation.
        let rtotal: usize = rsegs.iter().map(|x| x.1).sum();
        let r: Vec<DmaBuffer> = rsegs.iter().map(|&(o, l)| seg(&c, o, l)).collect();
        run1(&mut q, |q| q.readv(1, lba, &r, 3)).unwrap();
        let mut want = vec![0u8; rtotal];
        h.read_namespace(1, lba * 512, &mut want);
        prop_assert_eq!(concat(&r), want);
        prop_assert_eq!(q.stats().sgl_commands > 0, wsegs.len() > 1 || rsegs.len() > 1);
    }
}
