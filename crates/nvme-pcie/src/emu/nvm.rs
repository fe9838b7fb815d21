//! NVM command set execution over the RAM backing store.

use nvme_spec::command::DsmRange;
use nvme_spec::status::GenericStatus;
use nvme_spec::{Command, IoCommand, QueueType, Sqe, Status};
use zerocopy::FromBytes;

use super::queues::{generic, Outcome};
use super::{lock, Ctl, NsData};

impl Ctl {
    pub(crate) fn exec_io(&self, sqe: &Sqe) -> Outcome {
        let cmd = match Command::parse(sqe, QueueType::Io) {
            Ok(Command::Io(c)) => c,
            Ok(_) => return Outcome::err(generic(GenericStatus::InvalidOpcode)),
            Err(e) => return Outcome::err(e.status()),
        };
        let nsid = cmd.nsid();
        let ns = match nsid.checked_sub(1).and_then(|i| self.ns.get(i as usize)) {
            Some(ns) => ns,
            None if matches!(cmd, IoCommand::Flush { .. }) && nsid == u32::MAX => {
                return Outcome::ok(0);
            }
            None => return Outcome::err(generic(GenericStatus::InvalidNamespaceOrFormat)),
        };
        let r = match cmd {
            IoCommand::Read { slba, nlb, .. } => self.rw(sqe, ns, slba, nlb, false),
            IoCommand::Write { slba, nlb, .. } => self.rw(sqe, ns, slba, nlb, true),
            IoCommand::Flush { .. } => Ok(()),
            IoCommand::WriteZeroes { slba, nlb, .. } => range(ns, slba, u32::from(nlb) + 1).map(|(start, len)| {
                let mut d = ns.data.write().unwrap_or_else(|e| e.into_inner());
                if let Some(s) = d.get_mut(start..start + len) {
                    s.fill(0);
                }
            }),
            IoCommand::DatasetManagement { nr, ad, .. } => self.dsm(sqe, ns, nr, ad),
        };
        match r {
            Ok(()) => Outcome::ok(0),
            Err(s) => Outcome::err(s),
        }
    }

    fn rw(&self, sqe: &Sqe, ns: &NsData, slba: u64, nlb: u16, write: bool) -> Result<(), Status> {
        let (start, len) = range(ns, slba, u32::from(nlb) + 1)?;
        if self.max_transfer().is_some_and(|m| len > m) {
            return Err(generic(GenericStatus::InvalidField));
        }
        let mut segs = Vec::new();
        self.data_segments(sqe, len, &mut segs)?;
        let xfer = generic(GenericStatus::DataTransferError);
        let mut pos = start;
        if write {
            let mut d = ns.data.write().unwrap_or_else(|e| e.into_inner());
            for (iova, n) in segs {
                let dst = d.get_mut(pos..pos + n).ok_or(xfer)?;
                self.iommu.read(iova, dst).map_err(|_| xfer)?;
                pos += n;
            }
            lock(&self.admin).host_writes += 1;
        } else {
            let d = ns.data.read().unwrap_or_else(|e| e.into_inner());
            for (iova, n) in segs {
                let src = d.get(pos..pos + n).ok_or(xfer)?;
                self.iommu.write(iova, src).map_err(|_| xfer)?;
                pos += n;
            }
            lock(&self.admin).host_reads += 1;
        }
        Ok(())
    }

    fn dsm(&self, sqe: &Sqe, ns: &NsData, nr: u8, ad: bool) -> Result<(), Status> {
        let count = usize::from(nr) + 1;
        let mut segs = Vec::new();
        self.data_segments(sqe, count * 16, &mut segs)?;
        let xfer = generic(GenericStatus::DataTransferError);
        let mut raw = vec![0u8; count * 16];
        let mut pos = 0;
        for (iova, n) in segs {
            let dst = raw.get_mut(pos..pos + n).ok_or(xfer)?;
            self.iommu.read(iova, dst).map_err(|_| xfer)?;
            pos += n;
        }
        let ranges = <[DsmRange]>::ref_from_bytes(&raw).map_err(|_| xfer)?;
        // Validate every range before touching data.
        let mut spans = Vec::with_capacity(ranges.len());
        for r in ranges {
            if r.nlb.get() == 0 {
                continue;
            }
            spans.push(range(ns, r.slba.get(), r.nlb.get())?);
        }
        if ad {
            // Deallocated blocks read as zeroes (Identify Namespace DLFEAT).
            let mut d = ns.data.write().unwrap_or_else(|e| e.into_inner());
            for (start, len) in spans {
                if let Some(s) = d.get_mut(start..start + len) {
                    s.fill(0);
                }
            }
        }
        Ok(())
    }
}

/// Byte range of `nlb` blocks at `slba`, or LBA Out of Range.
fn range(ns: &NsData, slba: u64, nlb: u32) -> Result<(usize, usize), Status> {
    let oor = generic(GenericStatus::LbaOutOfRange);
    let end = slba.checked_add(u64::from(nlb)).ok_or(oor)?;
    if end > ns.info.blocks {
        return Err(oor);
    }
    let start = usize::try_from(slba << ns.info.lba_shift).map_err(|_| oor)?;
    let len = (nlb as usize) << ns.info.lba_shift;
    Ok((start, len))
}
