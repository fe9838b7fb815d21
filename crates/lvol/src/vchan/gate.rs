//! Admission of a volume channel's ops: the freeze gate, reuse epochs (which freed space IO
//! in progress may still use), granule claims and parked ops waiting for a claim or for space.

use super::*;

impl VolChannel {
    /// End of a submit or poll: wake the metadata thread if records were queued, and publish
    /// the oldest reuse epoch of the IO in progress (only ever moves forward while busy; an
    /// idle channel is recognized by its `busy` count).
    pub(super) fn wake_md(&mut self) {
        if self.kick {
            self.kick = false;
            self.core.kick();
        }
        self.publish_oldest();
    }

    /// Publish the oldest reuse epoch of the IO in progress in the gate.
    pub(super) fn publish_oldest(&mut self) {
        let oldest = if self.n_old > 0 {
            self.ep_old
        } else if self.n_cur > 0 {
            self.ep_cur
        } else {
            return;
        };
        if oldest != self.ep_published {
            self.ep_published = oldest;
            self.gate.oldest.store(oldest, Ordering::SeqCst);
        }
    }

    pub(super) fn set_busy(&mut self, delta: i64) {
        self.busy = (self.busy as i64 + delta) as u64;
        self.gate.busy.store(self.busy, Ordering::SeqCst);
    }

    /// Admit op `i` past the freeze gate and stamp it with the reuse epoch; false when the
    /// store is frozen.
    pub(super) fn admit(&mut self, i: usize) -> bool {
        self.set_busy(1);
        fence(Ordering::SeqCst);
        if self.core.frozen.load(Ordering::SeqCst) {
            self.set_busy(-1);
            return false;
        }
        // After the busy store and fence: see `Core::reclaim`.
        // Two generations: new IO joins the newest one; it moves to the epoch just read only
        // once the older generation drained, so the oldest generation always drains (a stamp
        // older than the epoch read is only more careful).
        self.join_epoch(i);
        let g = self.core.gen.load(Ordering::Acquire);
        if g != self.gen {
            let md = self.core.lock_md();
            match md.views.get(&self.id) {
                Some(v) => self.view = v.clone(),
                None => self.gone = true,
            }
            self.gen = g;
        }
        true
    }

    /// Stamp op `i` with the reuse epoch (the channel is busy and fenced: see `admit`).
    pub(super) fn join_epoch(&mut self, i: usize) {
        let e = self.core.epoch.load(Ordering::SeqCst);
        if e != self.ep_cur && self.n_old == 0 {
            self.ep_old = self.ep_cur;
            self.n_old = self.n_cur;
            self.n_cur = 0;
            self.ep_cur = e;
        }
        self.n_cur += 1;
        self.ops[i].ep = self.ep_cur;
    }

    /// Op `i` no longer counts in its reuse epoch generation.
    pub(super) fn leave_epoch(&mut self, i: usize) {
        if self.ops[i].ep == self.ep_cur && self.n_cur > 0 {
            self.n_cur -= 1;
        } else {
            self.n_old = self.n_old.saturating_sub(1);
        }
    }

    /// Drop op `i`'s granule claim (under the metadata lock) and wake its waiters.
    pub(super) fn drop_claim(&mut self, md: &mut Md, i: usize) {
        let op = &mut self.ops[i];
        if op.claim == 0 {
            return;
        }
        let key = (self.id, op.claim_lc);
        if let Some(m) = md.claims.get_mut(&key) {
            *m &= !op.claim;
            if *m == 0 {
                md.claims.remove(&key);
            }
        }
        op.claim = 0;
        self.core.claim_gen.fetch_add(1, Ordering::Release);
    }

    /// Give op `i`'s bounce set back (to an op waiting for one).
    pub(super) fn put_set(&mut self, i: usize) {
        if let Some(s) = self.ops[i].set.take() {
            self.free_sets.push(s);
            if let Some(w) = self.set_wait.pop_front() {
                self.ready.push(w);
            }
        }
    }

    /// Park op `i` until a claim is dropped (`space` false; read `claim_gen` under the
    /// metadata lock that saw the claim) or space may have come back (`space`).
    pub(super) fn park(&mut self, i: usize, space: bool, claim_gen: u64) {
        if space {
            self.n_space_wait += 1;
            self.kick = true;
        } else if !self.parked.iter().any(|&p| !self.ops[p as usize].wait_space) {
            self.claim_seen = claim_gen;
        } else {
            self.claim_seen = self.claim_seen.min(claim_gen);
        }
        // It plans its piece again when it retries: the bounce set may serve an op meanwhile
        // (perhaps the one holding the claim it waits for).
        self.put_set(i);
        self.ops[i].wait_space = space;
        self.ops[i].st = St::Parked;
        self.parked.push_back(i as u16);
    }

    /// Retry parked ops: claim waiters once a claim was dropped, space waiters each poll (the
    /// first that finds no space again ends the round). A retried op holds no mapping it
    /// looked up before (it waits between pieces), so it takes the current reuse epoch: the
    /// space it waits for may be in grace behind its own old stamp.
    pub(super) fn retry_parked(&mut self) {
        let g = self.core.claim_gen.load(Ordering::Acquire);
        let claims_moved = g != self.claim_seen;
        if !claims_moved && self.n_space_wait == 0 {
            return;
        }
        self.claim_seen = g;
        let mut space_ok = true;
        let mut take = [0u16; 64];
        let mut n = 0;
        for _ in 0..self.parked.len() {
            let Some(p) = self.parked.pop_front() else { break };
            let space = self.ops[p as usize].wait_space;
            if n < take.len() && ((space && space_ok) || (!space && claims_moved)) {
                if space {
                    self.n_space_wait -= 1;
                    space_ok = false;
                }
                take[n] = p;
                n += 1;
            } else {
                self.parked.push_back(p);
            }
        }
        for &p in &take[..n] {
            self.leave_epoch(p as usize);
            self.join_epoch(p as usize);
        }
        self.publish_oldest();
        for &p in &take[..n] {
            let i = p as usize;
            self.ops[i].st = St::Next;
            self.step(i);
        }
    }
}
