//! Abort. The admin queue hands an Abort to the connection of the I/O
//! queue it names (served by any poll group) through the controller; that
//! connection ends the command if it has not reached the bdev yet (still
//! waiting for its write data, or queued because the bdev channel was
//! full): the command completes with Command Abort Requested and the
//! Abort with "aborted". A command already on the bdev runs on: "not
//! aborted". The answer goes back to the admin queue the same way.

use super::conn::TgtConn;
use super::io::IoState;
use super::Ctrl;
use crate::ctrl::abort_requested;
use nvme_spec::status::Status;
use std::sync::atomic::Ordering;

/// Abort completion dword 0: bit 0 clear, the command was aborted.
pub(crate) const ABORTED: u32 = 0;
/// Abort completion dword 0: bit 0 set, the command was not aborted.
pub(crate) const NOT_ABORTED: u32 = 1;

/// An Abort command waiting for the connection of its I/O queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AbortRequest {
    sqid: u16,
    cid: u16,
    /// Slot of the Abort command on the admin queue.
    admin_slot: u16,
}

/// Admin queue: Abort of command `cid` of submission queue `sqid`, in
/// admin `slot`.
pub(crate) fn request(conn: &mut TgtConn, ctrl: &Ctrl, slot: u16, sqid: u16, cid: u16) {
    if sqid != 0 {
        let mut r = ctrl.regs();
        if r.io_qids.contains(&sqid) {
            r.aborts.push(AbortRequest { sqid, cid, admin_slot: slot });
            ctrl.abort_asked.store(true, Ordering::Release);
            return;
        }
    }
    // Admin commands run to completion when they arrive (Asynchronous
    // Event Requests aside, which are not aborted), and a queue that is
    // not connected holds no command.
    conn.complete(slot, Status::SUCCESS, NOT_ABORTED, 0);
}

/// Admin queue: completes the Abort commands whose answers came back.
/// Returns whether there were any.
pub(crate) fn answer(conn: &mut TgtConn, ctrl: &Ctrl) -> bool {
    if !ctrl.abort_answered.load(Ordering::Acquire) {
        return false;
    }
    let answers = {
        let mut r = ctrl.regs();
        ctrl.abort_answered.store(false, Ordering::Release);
        std::mem::take(&mut r.abort_answers)
    };
    for &(slot, dw0) in &answers {
        conn.complete(slot, Status::SUCCESS, dw0, 0);
    }
    !answers.is_empty()
}

/// I/O queue `qid`: serves the Abort requests for it. Returns whether
/// there were any.
pub(crate) fn serve(conn: &mut TgtConn, io: &mut IoState, ctrl: &Ctrl, qid: u16) -> bool {
    if !ctrl.abort_asked.load(Ordering::Acquire) {
        return false;
    }
    let mine: Vec<AbortRequest> = {
        let mut r = ctrl.regs();
        let (mine, rest) = r.aborts.iter().partition(|a| a.sqid == qid);
        r.aborts = rest;
        ctrl.abort_asked.store(!r.aborts.is_empty(), Ordering::Release);
        mine
    };
    if mine.is_empty() {
        return false;
    }
    let answers: Vec<(u16, u32)> = mine
        .iter()
        .map(|a| (a.admin_slot, if abort_command(conn, io, a.cid) { ABORTED } else { NOT_ABORTED }))
        .collect();
    let mut r = ctrl.regs();
    r.abort_answers.extend(answers);
    ctrl.abort_answered.store(true, Ordering::Release);
    true
}

/// Ends command `cid` if it has not reached the bdev; returns whether it
/// was aborted.
fn abort_command(conn: &mut TgtConn, io: &mut IoState, cid: u16) -> bool {
    if conn.q.abort_waiting_for_data(cid) {
        log::info!("nvmf target: aborted command {cid} waiting for its data");
        return true;
    }
    let Some(slot) = conn.q.executing_slot(cid) else {
        return false;
    };
    if !io.cancel_queued(slot) {
        return false;
    }
    log::info!("nvmf target: aborted command {cid} before it reached the bdev");
    conn.complete(slot, abort_requested(), 0, 0);
    true
}

/// I/O queue `qid` of `ctrl` is going away: it is no longer connected and
/// the Aborts still waiting for it are answered "not aborted".
pub(crate) fn queue_gone(ctrl: &Ctrl, qid: u16) {
    let mut r = ctrl.regs();
    r.io_qids.retain(|q| *q != qid);
    let (gone, rest): (Vec<AbortRequest>, Vec<AbortRequest>) = r.aborts.iter().partition(|a| a.sqid == qid);
    if gone.is_empty() {
        return;
    }
    r.aborts = rest;
    ctrl.abort_asked.store(!r.aborts.is_empty(), Ordering::Release);
    r.abort_answers.extend(gone.iter().map(|a| (a.admin_slot, NOT_ABORTED)));
    ctrl.abort_answered.store(true, Ordering::Release);
}
