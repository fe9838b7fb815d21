//! Mirrored writes (raid1, raid10) of a RAID channel: one group per piece
//! with a child per writable copy (and per replacement being rebuilt),
//! under the locks of the mirror regions the piece covers, so recovery and
//! resync (which copy region by region under the same locks) never copy
//! data a write is changing.

use bdev::{IoStatus, IoType, IoVecs};

use super::channel::{Group, Owner, RaidChannel};

impl RaidChannel {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start_mirror_write(
        &mut self,
        p: u32,
        io_type: IoType,
        lba: u64,
        n: u64,
        iovs: IoVecs,
        io_offset: u64,
        lock: Option<(u64, u32)>,
    ) -> bool {
        let Some(g) = self.groups.alloc() else {
            if let Some((key, count)) = lock {
                self.unlock_regions(key, count);
            }
            return false;
        };
        if let Some(grp) = self.groups.get_mut(g) {
            *grp = Group { parent: p, pending: 0, ok: 0, status: IoStatus::Success, lock };
        }
        self.add_outstanding(p);
        // The targets first (every writable copy and the replacements being
        // rebuilt), in a reused list rather than through a clone of the
        // shared state (an atomic increment and decrement per write).
        let mut targets = std::mem::take(&mut self.plan_buf);
        targets.clear();
        for c in self.sh.geometry.copies(lba) {
            if !self.writable(c.member) {
                continue;
            }
            targets.push((c.member, c.sector, 0));
            if let Some(r) = self.replacement(c.member) {
                targets.push((r, c.sector, 0));
            }
        }
        if let Some(grp) = self.groups.get_mut(g) {
            grp.pending = targets.len() as u32;
        }
        for &(m, sector, _) in &targets {
            self.issue_write(Owner::Group(g), m, io_type, sector, n, iovs, lba, io_offset);
        }
        let any = !targets.is_empty();
        self.plan_buf = targets;
        if !any {
            self.finish_group(g);
        }
        true
    }

    /// Locks the mirror regions of `[lba, lba + n)` from the first on, as
    /// many as are free in a row: returns the first key, how many were
    /// taken and the sectors they cover; `None` when the first is busy.
    pub(super) fn lock_regions(&self, lba: u64, n: u64) -> Option<(u64, u32, u64)> {
        let w = self.sh.window_sectors;
        let first = self.sh.region_key(lba);
        if !self.sh.locks.try_lock(first) {
            return None;
        }
        let last = self.sh.region_key(lba + n.max(1) - 1);
        let mut count = 1u32;
        while first + u64::from(count) <= last && self.sh.locks.try_lock(first + u64::from(count)) {
            count += 1;
        }
        let end = ((first + u64::from(count)) * w).min(lba + n);
        Some((first, count, end - lba))
    }

    pub(super) fn unlock_regions(&self, key: u64, count: u32) {
        for k in key..key + u64::from(count) {
            self.sh.locks.unlock(k);
        }
    }

    pub(super) fn finish_group(&mut self, g: u32) {
        let Some(grp) = self.groups.get(g) else {
            return;
        };
        let (parent, lock) = (grp.parent, grp.lock);
        let status = if !grp.status.is_ok() {
            grp.status
        } else if grp.ok > 0 {
            IoStatus::Success
        } else {
            IoStatus::MediaError
        };
        if let Some((key, count)) = lock {
            self.unlock_regions(key, count);
        }
        self.groups.release(g);
        self.finish_parent_part(parent, status);
    }

    /// A copy of mirrored write `g` finished.
    pub(super) fn group_child_done(&mut self, g: u32, st: IoStatus, member_out: bool) {
        let done = match self.groups.get_mut(g) {
            Some(grp) => {
                if st.is_ok() {
                    grp.ok += 1;
                } else if !member_out && grp.status.is_ok() {
                    // A copy that failed and left the array does not
                    // fail the write while other copies hold it.
                    grp.status = st;
                }
                grp.pending = grp.pending.saturating_sub(1);
                grp.pending == 0
            }
            None => false,
        };
        if done {
            self.finish_group(g);
        }
    }
}
