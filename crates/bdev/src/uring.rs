//! The io_uring channel behind the `aio` backend. Holds the unsafe needed to hand buffer
//! addresses to the kernel.

use crate::bdev::IoChannel;
use crate::dma::{self, IoVec};
use crate::io::{IoRequest, IoStatus, IoType, IoVecs, QueueFull};
use io_uring::{opcode, squeue, types, IoUring};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::Arc;

/// `IORING_ENTER_GETEVENTS` (include/uapi/linux/io_uring.h): with deferred task work, only an
/// enter carrying it posts the completions that arrived meanwhile.
const ENTER_GETEVENTS: u32 = 1;

#[derive(Copy, Clone)]
struct InFlight {
    tag: u64,
    expected: u32,
    iovs: IoVecs,
}

/// One io_uring per channel.
pub struct UringChannel {
    ring: IoUring,
    _file: Arc<File>,
    bs: u64,
    slots: Vec<InFlight>,
    free: Vec<u32>,
    unsubmitted: u32,
    /// Registered buffer regions: (start, end, index), sorted by start.
    fixed: Vec<(usize, usize, u16)>,
}

fn map_errno(res: i32) -> IoStatus {
    match -res {
        libc::EIO | libc::EILSEQ | libc::ENODATA => IoStatus::MediaError,
        libc::ENOSPC | libc::EDQUOT => IoStatus::NoSpace,
        libc::EINVAL | libc::EOPNOTSUPP | libc::EBADF | libc::EFBIG | libc::EROFS | libc::EPERM => IoStatus::Invalid,
        libc::ECANCELED | libc::EINTR => IoStatus::Aborted,
        libc::ETIMEDOUT => IoStatus::Timeout,
        _ => IoStatus::PathError,
    }
}

impl UringChannel {
    /// A ring of `depth` entries over `file`, with the file and existing DMA regions registered.
    pub fn new(file: Arc<File>, block_size: u32, depth: u32) -> std::io::Result<UringChannel> {
        let entries = depth.next_power_of_two();
        // Completion work runs only when this (single) thread enters the kernel, never by
        // interrupting it; `poll` enters when the kernel flags pending work (IORING_SQ_TASKRUN).
        // Older kernels get fewer of these flags.
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_coop_taskrun()
            .setup_taskrun_flag()
            .setup_defer_taskrun()
            .build(entries)
            .or_else(|_| {
                IoUring::builder().setup_single_issuer().setup_coop_taskrun().setup_taskrun_flag().build(entries)
            })
            .or_else(|_| IoUring::new(entries))?;
        ring.submitter().register_files(&[file.as_raw_fd()])?;
        let mut fixed = Vec::new();
        let regions = dma::regions();
        if !regions.is_empty() && regions.len() <= 1024 {
            let iovecs: Vec<libc::iovec> =
                regions.iter().map(|r| libc::iovec { iov_base: r.addr as *mut libc::c_void, iov_len: r.len }).collect();
            // SAFETY: every region is a live mapping owned by the DMA pool, which never unmaps
            // pooled regions; the kernel pins them for the ring's lifetime.
            if unsafe { ring.submitter().register_buffers(&iovecs) }.is_ok() {
                fixed = regions.iter().enumerate().map(|(i, r)| (r.addr, r.addr + r.len, i as u16)).collect();
                fixed.sort_unstable();
            }
        }
        let n = ring.params().sq_entries() as usize;
        let empty = InFlight { tag: 0, expected: 0, iovs: IoVecs::new() };
        Ok(UringChannel {
            ring,
            _file: file,
            bs: block_size as u64,
            slots: vec![empty; n],
            free: (0..n as u32).rev().collect(),
            unsubmitted: 0,
            fixed,
        })
    }

    fn fixed_index(&self, v: &IoVec) -> Option<u16> {
        let a = v.addr();
        let i = self.fixed.partition_point(|r| r.0 <= a).checked_sub(1)?;
        let (s, e, idx) = self.fixed[i];
        (a >= s && a + v.len() <= e).then_some(idx)
    }

    fn build(&self, idx: u32, io: &IoRequest) -> squeue::Entry {
        let fd = types::Fixed(0);
        let off = io.offset_blocks * self.bs;
        let len = io.num_blocks * self.bs;
        let slot = &self.slots[idx as usize];
        let segs = slot.iovs.as_slice();
        let e = match io.io_type {
            IoType::Read | IoType::Write if segs.len() == 1 => {
                let v = segs[0];
                let read = io.io_type == IoType::Read;
                match self.fixed_index(&v) {
                    Some(b) if read => opcode::ReadFixed::new(fd, v.as_ptr(), v.len() as u32, b).offset(off).build(),
                    Some(b) => opcode::WriteFixed::new(fd, v.as_ptr(), v.len() as u32, b).offset(off).build(),
                    None if read => opcode::Read::new(fd, v.as_ptr(), v.len() as u32).offset(off).build(),
                    None => opcode::Write::new(fd, v.as_ptr(), v.len() as u32).offset(off).build(),
                }
            }
            IoType::Read => {
                opcode::Readv::new(fd, segs.as_ptr().cast::<libc::iovec>(), segs.len() as u32).offset(off).build()
            }
            IoType::Write => {
                opcode::Writev::new(fd, segs.as_ptr().cast::<libc::iovec>(), segs.len() as u32).offset(off).build()
            }
            IoType::Flush => opcode::Fsync::new(fd).flags(types::FsyncFlags::DATASYNC).build(),
            IoType::Unmap => opcode::Fallocate::new(fd, len)
                .offset(off)
                .mode(libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE)
                .build(),
            IoType::WriteZeroes => opcode::Fallocate::new(fd, len)
                .offset(off)
                .mode(libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE)
                .build(),
            IoType::Reset => opcode::Nop::new().build(),
        };
        e.user_data(idx as u64)
    }
}

impl IoChannel for UringChannel {
    fn submit(&mut self, io: &IoRequest) -> Result<(), QueueFull> {
        let Some(idx) = self.free.pop() else { return Err(QueueFull) };
        let expected = if io.io_type.has_data() { (io.num_blocks * self.bs) as u32 } else { 0 };
        self.slots[idx as usize] = InFlight { tag: io.tag, expected, iovs: io.iovs };
        let entry = self.build(idx, io);
        // SAFETY: the entry's buffers are the request's iovecs (valid until completion by the
        // IoRequest contract) or, for vectored ops, the copy of them in `self.slots[idx]`,
        // which stays in place until this slot's completion is reaped.
        let pushed = unsafe { self.ring.submission().push(&entry) };
        if pushed.is_err() {
            self.free.push(idx);
            return Err(QueueFull);
        }
        self.unsubmitted += 1;
        Ok(())
    }

    fn poll(&mut self, done: &mut dyn FnMut(u64, IoStatus)) -> usize {
        if self.free.len() == self.slots.len() {
            // Nothing queued or in flight: nothing to submit and no completion to come.
            return 0;
        }
        let enter = self.unsubmitted > 0 || {
            let sq = self.ring.submission();
            sq.taskrun() || sq.cq_overflow()
        };
        if enter {
            // One enter both submits the batch and (GETEVENTS with no minimum) runs the
            // deferred completion work, so completions that are already in are reaped below
            // without a second system call.
            // SAFETY: no extended argument is passed; `unsubmitted` entries were pushed and
            // the submission queue's tail was published when the `submission()` handles of
            // `submit` were dropped.
            let entered =
                unsafe { self.ring.submitter().enter::<libc::sigset_t>(self.unsubmitted, 0, ENTER_GETEVENTS, None) };
            match entered {
                Ok(n) => self.unsubmitted -= (n as u32).min(self.unsubmitted),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) || e.raw_os_error() == Some(libc::EAGAIN) => {}
                Err(e) => log::error!("io_uring_enter failed: {e}"),
            }
        }
        let mut n = 0;
        let UringChannel { ring, slots, free, .. } = self;
        for cqe in ring.completion() {
            let idx = cqe.user_data() as u32;
            let Some(slot) = slots.get(idx as usize) else { continue };
            let res = cqe.result();
            let status = if res < 0 {
                map_errno(res)
            } else if slot.expected != 0 && res as u32 != slot.expected {
                // A short read or write: past the end of a file that shrank, or a media problem.
                IoStatus::MediaError
            } else {
                IoStatus::Success
            };
            free.push(idx);
            done(slot.tag, status);
            n += 1;
        }
        n
    }

    fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    fn wait(&mut self, timeout: std::time::Duration) -> bool {
        if self.in_flight() == 0 {
            return false;
        }
        if !self.ring.completion().is_empty() {
            return true;
        }
        let ts = types::Timespec::from(timeout);
        let args = types::SubmitArgs::new().timespec(&ts);
        // Submits anything queued too; ETIME (timeout) and EINTR are normal outcomes.
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(n) => self.unsubmitted -= (n as u32).min(self.unsubmitted),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY)) => {}
            Err(e) => {
                log::error!("io_uring_enter (wait) failed: {e}");
                return false;
            }
        }
        true
    }
}

impl Drop for UringChannel {
    fn drop(&mut self) {
        // Wait for the kernel to finish with every buffer before they can be reused.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while self.in_flight() > 0 && std::time::Instant::now() < deadline {
            let _ = self.ring.submit_and_wait(1);
            self.poll(&mut |_, _| {});
        }
    }
}
