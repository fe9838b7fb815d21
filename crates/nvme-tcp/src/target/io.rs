//! NVM I/O commands of the target, executed on bdev channels.

use super::conn::TgtConn;
use super::Subsys;
use crate::ctrl::CmdData;
use bdev::{BdevError, IoChannel, IoRequest, IoStatus, IoType, IoTypeSet, IoVecs};
use nvme_spec::command::{DsmRange, IoCommand};
use nvme_spec::status::{GenericStatus, MediaStatus, PathStatus, Status, StatusCode};
use std::collections::VecDeque;

#[derive(Clone, Copy, Debug)]
struct Ns {
    bs: u64,
    blocks: u64,
    supported: IoTypeSet,
}

#[derive(Clone, Copy, Debug)]
struct SlotIo {
    remaining: u32,
    status: IoStatus,
    read_len: u32,
    write: bool,
}

const IDLE: SlotIo = SlotIo { remaining: 0, status: IoStatus::Success, read_len: 0, write: false };

/// The bdev channels of one I/O queue and the IO it has in flight.
pub(crate) struct IoState {
    chans: Vec<Box<dyn IoChannel>>,
    ns: Vec<Ns>,
    slots: Vec<SlotIo>,
    retry: VecDeque<(usize, IoRequest)>,
    done: Vec<(u64, IoStatus)>,
}

fn generic(g: GenericStatus, dnr: bool) -> Status {
    Status::new(StatusCode::Generic(g), dnr)
}

/// The path status of I/O through a port group in ANA state `raw` (`None`
/// when the state allows I/O).
fn ana_path_status(raw: u8) -> Option<PathStatus> {
    use nvme_spec::log::AnaState as Spec;
    match Spec::from_raw(raw) {
        Spec::Optimized | Spec::NonOptimized => None,
        Spec::Inaccessible | Spec::Reserved(_) => Some(PathStatus::AnaInaccessible),
        Spec::PersistentLoss => Some(PathStatus::AnaPersistentLoss),
        Spec::Change => Some(PathStatus::AnaTransition),
    }
}

/// Maps a bdev IO status to an NVMe completion status.
pub(crate) fn nvme_status(s: IoStatus, write: bool) -> Status {
    match s {
        IoStatus::Success => Status::SUCCESS,
        IoStatus::MediaError => Status::new(
            StatusCode::Media(if write { MediaStatus::WriteFault } else { MediaStatus::UnrecoveredReadError }),
            true,
        ),
        IoStatus::PathError | IoStatus::Timeout => Status::new(StatusCode::Path(PathStatus::InternalPathError), false),
        IoStatus::Aborted => generic(GenericStatus::AbortRequested, false),
        IoStatus::NoSpace => generic(GenericStatus::CapacityExceeded, true),
        IoStatus::Invalid => generic(GenericStatus::InvalidField, true),
    }
}

impl IoState {
    pub(crate) fn new(sub: &Subsys, depth: usize) -> Result<Self, BdevError> {
        let mut chans = Vec::new();
        let mut ns = Vec::new();
        for b in &sub.namespaces {
            chans.push(b.open_channel()?);
            let i = b.info();
            ns.push(Ns { bs: u64::from(i.block_size), blocks: i.num_blocks, supported: i.supported });
        }
        Ok(Self {
            chans,
            ns,
            slots: vec![IDLE; depth],
            retry: VecDeque::with_capacity(depth),
            done: Vec::with_capacity(depth),
        })
    }

    fn push(&mut self, ns: usize, req: IoRequest) {
        let ok = match self.chans.get_mut(ns) {
            Some(c) => c.submit(&req).is_ok(),
            None => false,
        };
        if !ok {
            self.retry.push_back((ns, req));
        }
    }

    /// Starts `cmd` (data, if any, is in the slot buffer); `ana` is the
    /// raw ANA state of the port group the command came through.
    pub(crate) fn submit(&mut self, conn: &mut TgtConn, slot: u16, cmd: IoCommand, data: CmdData, ana: u8) {
        let fail = |conn: &mut TgtConn, st: Status| conn.complete(slot, st, 0, 0);
        if let Some(p) = ana_path_status(ana) {
            fail(conn, Status::new(StatusCode::Path(p), false));
            return;
        }
        let nsid = cmd.nsid();
        let all = nsid == 0xffff_ffff && matches!(cmd, IoCommand::Flush { .. });
        let idx = (nsid as usize).wrapping_sub(1);
        let Some(ns) = self.ns.get(idx).copied().or_else(|| if all { self.ns.first().copied() } else { None }) else {
            fail(conn, generic(GenericStatus::InvalidNamespaceOrFormat, true));
            return;
        };
        let Some(s) = self.slots.get_mut(usize::from(slot)) else {
            fail(conn, generic(GenericStatus::InternalError, true));
            return;
        };
        *s = SlotIo { write: !matches!(cmd, IoCommand::Read { .. }), ..IDLE };
        let tag = u64::from(slot);
        if let Some((slba, n)) = cmd.lba_range() {
            if slba.checked_add(u64::from(n)).is_none_or(|end| end > ns.blocks) {
                fail(conn, generic(GenericStatus::LbaOutOfRange, true));
                return;
            }
        }
        match cmd {
            IoCommand::Read { slba, nlb, .. } | IoCommand::Write { slba, nlb, .. } => {
                let blocks = u64::from(nlb) + 1;
                let len = blocks * ns.bs;
                let read = matches!(cmd, IoCommand::Read { .. });
                let sgl_len = match (read, data) {
                    (true, CmdData::FromController(n)) | (false, CmdData::InCapsule(n)) => u64::from(n),
                    _ => u64::MAX,
                };
                if sgl_len != len {
                    fail(conn, generic(GenericStatus::DataSglLengthInvalid, true));
                    return;
                }
                let Some(iov) = conn.bufs.ensure(slot, len as u32).and_then(|()| conn.bufs.iovec(slot)) else {
                    fail(conn, generic(GenericStatus::InternalError, false));
                    return;
                };
                let req = if read {
                    IoRequest::read(slba, blocks, IoVecs::single(iov), tag)
                } else {
                    IoRequest::write(slba, blocks, IoVecs::single(iov), tag)
                };
                if let Some(s) = self.slots.get_mut(usize::from(slot)) {
                    s.remaining = 1;
                    s.read_len = if read { len as u32 } else { 0 };
                }
                self.push(idx, req);
            }
            IoCommand::Flush { .. } => {
                let (first, last) = if all { (0, self.ns.len()) } else { (idx, idx + 1) };
                let mut n = 0;
                for i in first..last {
                    if self.ns.get(i).is_some_and(|x| x.supported.contains(IoType::Flush)) {
                        n += 1;
                        self.push(i, IoRequest::no_data(IoType::Flush, 0, 0, tag));
                    }
                }
                self.start(conn, slot, n);
            }
            IoCommand::WriteZeroes { slba, nlb, .. } => {
                if !ns.supported.contains(IoType::WriteZeroes) {
                    fail(conn, generic(GenericStatus::InvalidOpcode, true));
                    return;
                }
                self.push(idx, IoRequest::no_data(IoType::WriteZeroes, slba, u64::from(nlb) + 1, tag));
                self.start(conn, slot, 1);
            }
            IoCommand::DatasetManagement { nr, ad, .. } => {
                let count = usize::from(nr) + 1;
                let unmap = ad && ns.supported.contains(IoType::Unmap);
                // Validate, then submit, while the range list is borrowed
                // from the slot buffer; complete afterwards.
                let outcome = match (data, conn.bufs.data(slot)) {
                    (CmdData::InCapsule(_), Some(b)) => match DsmRange::parse_list(b, count) {
                        Ok(_) if !unmap => Ok(0),
                        Ok(ranges)
                            if ranges.iter().any(|r| {
                                let n = u64::from(r.nlb.get());
                                n > 0 && r.slba.get().checked_add(n).is_none_or(|e| e > ns.blocks)
                            }) =>
                        {
                            Err(generic(GenericStatus::LbaOutOfRange, true))
                        }
                        Ok(ranges) => {
                            let mut n = 0;
                            for r in ranges.iter().filter(|r| r.nlb.get() > 0) {
                                n += 1;
                                let req = IoRequest::no_data(IoType::Unmap, r.slba.get(), u64::from(r.nlb.get()), tag);
                                let ok = self.chans.get_mut(idx).is_some_and(|c| c.submit(&req).is_ok());
                                if !ok {
                                    self.retry.push_back((idx, req));
                                }
                            }
                            Ok(n)
                        }
                        Err(_) => Err(generic(GenericStatus::DataSglLengthInvalid, true)),
                    },
                    _ => Err(generic(GenericStatus::DataSglLengthInvalid, true)),
                };
                match outcome {
                    Ok(n) => self.start(conn, slot, n),
                    Err(st) => fail(conn, st),
                }
            }
        }
    }

    /// Takes the IO of the command in `slot` back if none of it has reached
    /// the bdev (all of it waits in the retry queue); returns whether it
    /// did. The command is then the caller's to complete.
    pub(crate) fn cancel_queued(&mut self, slot: u16) -> bool {
        let tag = u64::from(slot);
        let Some(s) = self.slots.get_mut(usize::from(slot)) else { return false };
        let queued = self.retry.iter().filter(|(_, r)| r.tag == tag).count();
        if s.remaining == 0 || queued != s.remaining as usize {
            return false;
        }
        self.retry.retain(|(_, r)| r.tag != tag);
        *s = IDLE;
        true
    }

    fn start(&mut self, conn: &mut TgtConn, slot: u16, n: u32) {
        if n == 0 {
            conn.complete(slot, Status::SUCCESS, 0, 0);
        } else if let Some(s) = self.slots.get_mut(usize::from(slot)) {
            s.remaining = n;
        }
    }

    /// Resubmits IO the channels had no room for and completes finished
    /// commands. Returns whether anything happened.
    pub(crate) fn poll(&mut self, conn: &mut TgtConn) -> bool {
        let mut work = false;
        for _ in 0..self.retry.len() {
            let Some((ns, req)) = self.retry.pop_front() else { break };
            match self.chans.get_mut(ns).map(|c| c.submit(&req).is_ok()) {
                Some(false) => {
                    self.retry.push_front((ns, req));
                    break;
                }
                Some(true) => work = true,
                None => self.done.push((req.tag, IoStatus::Invalid)),
            }
        }
        let mut done = std::mem::take(&mut self.done);
        for c in &mut self.chans {
            c.poll(&mut |tag, st| done.push((tag, st)));
        }
        for (tag, st) in done.drain(..) {
            work = true;
            let slot = tag as u16;
            let Some(s) = self.slots.get_mut(usize::from(slot)) else { continue };
            if s.remaining == 0 {
                continue;
            }
            s.remaining -= 1;
            if s.status == IoStatus::Success {
                s.status = st;
            }
            if s.remaining == 0 {
                let s = *s;
                let len = if s.status == IoStatus::Success { s.read_len } else { 0 };
                conn.complete(slot, nvme_status(s.status, s.write), 0, len);
            }
        }
        self.done = done;
        work
    }
}
