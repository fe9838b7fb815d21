//! Bring-up, identify, admin commands and detach against the emulator.

mod common;

use common::*;
use nvme_pcie::emu::{EmuConfig, Emulator, FaultFilter};
use nvme_pcie::{Controller, ControllerConfig, NvmeError};
use nvme_spec::command::FeatureId;

#[test]
fn bring_up_identifies_controller_and_namespaces() {
    let (c, h) = attach(small_cfg());
    assert!(h.is_enabled());
    let i = c.info();
    assert_eq!(i.serial, "XBDEVEMU0001");
    assert_eq!(i.model, "xbdev emulated NVMe controller");
    assert_eq!(i.firmware, "EMU1.0");
    assert_eq!(i.version, (1, 4, 0));
    assert_eq!(i.max_queue_entries, 1024);
    assert_eq!(i.mdts_bytes, Some(128 << 10));
    assert_eq!(i.max_transfer, 128 << 10);
    assert_eq!(i.io_queues, 8);
    assert!(i.shadow_doorbells);
    let ns = c.namespaces();
    assert_eq!(ns.len(), 2);
    assert_eq!((ns[0].nsid, ns[0].block_size, ns[0].blocks), (1, 512, 16384));
    assert_eq!((ns[1].nsid, ns[1].block_size, ns[1].blocks), (2, 4096, 1024));
    let want = nvme_pcie::emu::EmuNamespace::new(8 << 20, 512, 1);
    assert_eq!(ns[0].nguid, want.nguid);
    assert_eq!(ns[0].eui64, want.eui64);
    assert_eq!(ns[0].uuid, want.uuid);
    assert_ne!(ns[0].nguid, ns[1].nguid);
}

#[test]
fn bring_up_honours_doorbell_stride_and_queue_limits() {
    let cfg = EmuConfig {
        dstrd: 2,
        max_queue_entries: 64,
        max_io_queues: 3,
        mdts: 0,
        doorbell_buffer: false,
        ready_delay_reads: 5,
        ..small_cfg()
    };
    let ccfg = ControllerConfig { io_queues: 16, max_transfer: 256 << 10, ..Default::default() };
    let (c, h) = attach_with(cfg, ccfg);
    assert_eq!(c.info().doorbell_stride, 16);
    assert_eq!(c.info().io_queues, 3);
    assert_eq!(c.info().mdts_bytes, None);
    assert_eq!(c.info().max_transfer, 256 << 10);
    assert!(!c.info().shadow_doorbells);
    assert!(c.create_io_queue_pair(65).is_err());
    let q1 = c.create_io_queue_pair(64).unwrap();
    let q2 = c.create_io_queue_pair(2).unwrap();
    let q3 = c.create_io_queue_pair(8).unwrap();
    assert!(matches!(c.create_io_queue_pair(8), Err(NvmeError::NoQueues { granted: 3 })));
    assert_eq!(h.io_queue_count(), 3);
    drop(q2);
    assert_eq!(h.io_queue_count(), 2);
    let mut q4 = c.create_io_queue_pair(16).unwrap();
    let buf = c.dma().alloc(4096).unwrap();
    pattern(&buf, 9);
    run1(&mut q4, |q| q.write(1, 0, &buf, 1)).unwrap();
    drop((q1, q3, q4));
    assert_eq!(h.io_queue_count(), 0);
}

#[test]
fn fatal_status_during_enable_is_reported() {
    let (e, h) = emu(small_cfg());
    h.set_fatal();
    let err = Controller::new(e, ControllerConfig::default()).unwrap_err();
    assert!(matches!(err, NvmeError::Fatal(_)), "{err}");
}

#[test]
fn removed_device_fails_bring_up_cleanly() {
    let (e, h) = emu(small_cfg());
    h.remove();
    let err = Controller::new(e, ControllerConfig::default()).unwrap_err();
    assert!(matches!(err, NvmeError::DeviceGone(_)), "{err}");
}

#[test]
fn admin_log_pages_and_features() {
    let (c, h) = attach(small_cfg());
    let mut q = c.create_io_queue_pair(32).unwrap();
    let buf = c.dma().alloc(8192).unwrap();
    run1(&mut q, |q| q.write(1, 0, &buf, 1)).unwrap();
    run1(&mut q, |q| q.read(1, 0, &buf, 2)).unwrap();
    run1(&mut q, |q| q.read(1, 0, &buf, 3)).unwrap();
    let smart = c.smart_log().unwrap();
    assert_eq!(smart.host_writes.get(), 1);
    assert_eq!(smart.host_reads.get(), 2);
    assert_eq!(smart.avail_spare, 100);
    let fw = c.firmware_log().unwrap();
    assert_eq!(fw.active_slot(), 1);
    assert_eq!(fw.revision(1), Some("EMU1.0"));
    assert!(c.error_log().unwrap().is_empty());
    // A failed command produces an error log entry.
    let media = nvme_spec::Status::new(
        nvme_spec::StatusCode::Media(nvme_spec::status::MediaStatus::UnrecoveredReadError),
        true,
    );
    h.inject_status(FaultFilter::ANY_IO, media, 1);
    let r = run1(&mut q, |q| q.read(1, 0, &buf, 4));
    let err = r.unwrap_err();
    assert!(err.is_media_error() && !err.is_path_error(), "{err:?}");
    let log = c.error_log().unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].status(), media);
    assert_eq!(log[0].sqid.get(), q.qid());
    run1(&mut q, |q| q.read(1, 0, &buf, 5)).unwrap();
    let vwc = c.get_features(FeatureId::VOLATILE_WRITE_CACHE, 0).unwrap();
    assert_eq!(vwc, 1);
    c.set_features(FeatureId::VOLATILE_WRITE_CACHE, 0).unwrap();
    assert_eq!(c.get_features(FeatureId::VOLATILE_WRITE_CACHE, 0).unwrap(), 0);
    assert_eq!(c.get_features(FeatureId::NUMBER_OF_QUEUES, 0).unwrap(), 0x0007_0007);
    assert!(matches!(c.get_features(FeatureId(0x7e), 0), Err(NvmeError::AdminStatus { .. })));
    c.keep_alive().unwrap();
    // Passthrough: Identify Controller through a caller buffer.
    let id = c.dma().alloc(4096).unwrap();
    let sqe = nvme_spec::AdminCommand::identify(nvme_spec::command::Cns::Controller, 0).to_sqe(0);
    c.admin_command(sqe, Some(&id)).unwrap();
    let mut raw = vec![0u8; 4096];
    id.read_bytes(0, &mut raw).unwrap();
    let idc = nvme_spec::identify::IdentifyController::parse(&raw).unwrap();
    assert_eq!(idc.serial(), Some("XBDEVEMU0001"));
}

#[test]
fn detach_releases_every_dma_mapping() {
    let (e, h) = emu(small_cfg());
    let c = Controller::new(e, ControllerConfig::default()).unwrap();
    let q = c.create_io_queue_pair(128).unwrap();
    let b = c.dma().alloc(1 << 20).unwrap();
    assert!(h.dma_mappings() >= 5);
    drop(q);
    drop(b);
    drop(c);
    assert_eq!(h.dma_mappings(), 0);
    assert!(!h.is_enabled(), "detach disables the controller");
}

#[test]
fn several_controllers_in_one_process() {
    let cs: Vec<Controller<Emulator>> = (0..3)
        .map(|i| {
            let cfg = EmuConfig { serial: format!("SN{i}"), ..small_cfg() };
            Controller::new(Emulator::new(&format!("emu{i}"), cfg), ControllerConfig::default()).unwrap()
        })
        .collect();
    let mut qs: Vec<_> = cs.iter().map(|c| c.create_io_queue_pair(16).unwrap()).collect();
    for (i, (c, q)) in cs.iter().zip(qs.iter_mut()).enumerate() {
        assert_eq!(c.info().serial, format!("SN{i}"));
        let b = c.dma().alloc(4096).unwrap();
        pattern(&b, i as u64);
        run1(q, |q| q.write(1, 8, &b, 0)).unwrap();
    }
    for (i, (c, q)) in cs.iter().zip(qs.iter_mut()).enumerate() {
        let b = c.dma().alloc(4096).unwrap();
        run1(q, |q| q.read(1, 8, &b, 0)).unwrap();
        let want = c.dma().alloc(4096).unwrap();
        pattern(&want, i as u64);
        assert_eq!(bytes(&b), bytes(&want));
    }
}
