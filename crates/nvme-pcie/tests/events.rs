//! Asynchronous events: Asynchronous Event Requests outstanding on the admin
//! queue, decoded events in the controller's bounded event log, re-arming.

mod common;

use std::time::{Duration, Instant};

use common::*;
use nvme_pcie::emu::{EmuConfig, EmuEvent, FaultFilter, Processing};
use nvme_pcie::events::{ErrorEvent, HealthEvent, NoticeEvent, AEC_ANA_CHANGE, AEC_NS_ATTRIBUTE};
use nvme_pcie::{AsyncEventKind, ControllerConfig, EventDetail, NvmeError};
use nvme_spec::command::LogPageId;
use nvme_spec::log::AnaState;
use nvme_spec::status::{command_specific, GenericStatus};
use nvme_spec::{Status, StatusCode};

/// Wait (Thread mode processes asynchronously) for the emulator's event
/// counts to reach `want`.
fn wait_counts(h: &nvme_pcie::emu::EmuHandle, want: (usize, usize)) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.event_counts() != want {
        assert!(Instant::now() < deadline, "event counts {:?}, want {want:?}", h.event_counts());
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn events_are_decoded_recorded_with_their_log_page_and_rearmed() {
    for processing in [Processing::Inline, Processing::Thread] {
        let (c, h) = attach(EmuConfig { processing, ..small_cfg() });
        assert_eq!(c.info().async_event_requests, 4);
        assert_eq!(c.info().oaes & (AEC_NS_ATTRIBUTE | AEC_ANA_CHANGE), AEC_NS_ATTRIBUTE | AEC_ANA_CHANGE);
        wait_counts(&h, (0, 4));
        assert!(c.async_events().is_empty());

        // An I/O error fills the error log; then an error event.
        let mut q = c.create_io_queue_pair(8).unwrap();
        let b = c.dma().alloc(512).unwrap();
        let st = Status::new(StatusCode::Generic(GenericStatus::InternalError), false);
        h.inject_status(FaultFilter::ANY_IO, st, 1);
        assert!(run1(&mut q, |q| q.read(1, 0, &b, 1)).is_err());
        assert!(h.inject_event(EmuEvent::Error(ErrorEvent::TransientInternalError)));
        assert!(h.inject_event(EmuEvent::Health { event: HealthEvent::TemperatureThreshold, critical_warning: 0x2 }));
        assert!(h.inject_event(EmuEvent::NamespaceChanged(vec![2])));
        assert!(h.inject_event(EmuEvent::AnaChange(AnaState::Inaccessible)));

        let deadline = Instant::now() + Duration::from_secs(10);
        let mut evs = c.async_events();
        while evs.len() < 4 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
            evs = c.async_events();
        }
        assert_eq!(evs.len(), 4, "{evs:?}");
        assert_eq!(evs.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
        assert_eq!(evs[0].kind, AsyncEventKind::Error(ErrorEvent::TransientInternalError));
        assert_eq!(evs[0].log_page, LogPageId::ERROR);
        match &evs[0].detail {
            EventDetail::Error(e) => assert_eq!(e.status().code, st.code),
            other => panic!("{other:?}"),
        }
        assert_eq!(evs[1].kind, AsyncEventKind::Health(HealthEvent::TemperatureThreshold));
        assert_eq!(
            evs[1].detail,
            EventDetail::Health { critical_warning: 0x2, temperature_k: 310, available_spare: 100 }
        );
        assert_eq!(evs[2].kind, AsyncEventKind::Notice(NoticeEvent::NamespaceAttributeChanged));
        assert_eq!(evs[2].detail, EventDetail::ChangedNamespaces(vec![2]));
        assert_eq!(evs[3].kind, AsyncEventKind::Notice(NoticeEvent::AnaChange));
        assert_eq!(evs[3].detail, EventDetail::Ana(vec![(1, AnaState::Inaccessible), (2, AnaState::Inaccessible)]));
        assert_eq!(c.async_event_count(), 4);
        // Every request is out again, nothing is left over.
        wait_counts(&h, (0, 4));
        // The Changed Namespace List was cleared by the driver's read.
        let page = c.get_log_page(LogPageId::CHANGED_NAMESPACES, u32::MAX, 4096).unwrap();
        assert!(page.iter().all(|&x| x == 0));
        assert_eq!(c.smart_log().unwrap().critical_warning, 0x2);
        run1(&mut q, |q| q.read(1, 0, &b, 2)).unwrap();
    }
}

#[test]
fn an_event_type_waits_until_its_log_page_is_read() {
    let (c, h) = attach(small_cfg());
    // Nobody polls the admin queue: the first error event is reported and
    // its type masked, the second waits in the controller.
    assert!(h.inject_event(EmuEvent::Error(ErrorEvent::PersistentInternalError)));
    assert!(h.inject_event(EmuEvent::Error(ErrorEvent::DiagnosticFailure)));
    assert_eq!(h.event_counts(), (1, 3));
    // A notice is another type: reported at once.
    assert!(h.inject_event(EmuEvent::NamespaceChanged(vec![1])));
    assert_eq!(h.event_counts(), (1, 2));
    // Handling reads the error log, which lets the second error out.
    c.poll_admin().unwrap();
    let kinds: Vec<_> = c.async_events().iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        vec![
            AsyncEventKind::Error(ErrorEvent::PersistentInternalError),
            AsyncEventKind::Notice(NoticeEvent::NamespaceAttributeChanged),
            AsyncEventKind::Error(ErrorEvent::DiagnosticFailure),
        ]
    );
    assert_eq!(h.event_counts(), (0, 4));
}

#[test]
fn disabled_events_and_the_request_limit() {
    let ccfg = ControllerConfig { async_events: false, ..ControllerConfig::default() };
    let (c, h) = attach_with(small_cfg(), ccfg);
    assert_eq!(c.info().async_event_requests, 0);
    assert_eq!(h.event_counts(), (0, 0));
    // Notices are not enabled by this host; error events always are.
    assert!(!h.inject_event(EmuEvent::NamespaceChanged(vec![1])));
    assert!(h.inject_event(EmuEvent::Error(ErrorEvent::InvalidDoorbell)));
    assert_eq!(h.event_counts(), (1, 0));
    assert!(c.async_events().is_empty());

    // The driver keeps AERL + 1 requests out; one more is refused.
    let (c, _h) = attach(small_cfg());
    let r = c.admin_command(nvme_spec::AdminCommand::AsyncEventRequest.to_sqe(0), None);
    match r {
        Err(NvmeError::AdminStatus { status, .. }) => {
            assert_eq!(status.code, StatusCode::CommandSpecific(command_specific::AER_LIMIT_EXCEEDED))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn requests_are_rearmed_after_reset_and_events_handled_by_polling_queues() {
    let ccfg = ControllerConfig { event_log_len: 2, ..ControllerConfig::default() };
    let (c, h) = attach_with(small_cfg(), ccfg);
    c.reset().unwrap();
    assert_eq!(h.event_counts(), (0, 4), "the reset dropped the requests; the driver put them out again");
    let mut q = c.create_io_queue_pair(8).unwrap();
    for (i, e) in [ErrorEvent::InvalidDoorbell, ErrorEvent::DiagnosticFailure, ErrorEvent::FirmwareImageLoadError]
        .into_iter()
        .enumerate()
    {
        assert!(h.inject_event(EmuEvent::Error(e)));
        // An idle queue pair's polling handles it (no admin call here).
        let deadline = Instant::now() + Duration::from_secs(10);
        while c.async_event_count() < i as u64 + 1 {
            q.poll(&mut |_, _| {});
            assert!(Instant::now() < deadline, "event {i} not handled");
        }
    }
    // The log keeps the newest two.
    let evs = c.async_events();
    assert_eq!(evs.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2, 3]);
    assert_eq!(evs[1].kind, AsyncEventKind::Error(ErrorEvent::FirmwareImageLoadError));
    assert_eq!(c.async_event_count(), 3);
}
