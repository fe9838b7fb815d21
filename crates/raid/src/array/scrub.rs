//! md's `check` and `repair` sync actions (scrub): every stripe (or every
//! mirrored region) is read and compared. Mismatches are counted like md's
//! `mismatch_cnt`, in 512-byte sectors at 4 KiB page granularity (a page
//! of a stripe row, or of a mirrored region, that disagrees anywhere
//! counts 8 sectors). `repair` then rewrites parity and syndrome from the
//! data (raid4/5/6), or copies the first readable copy over the others
//! (raid1/10). It runs in the background window by window under the same
//! locks as writes and recovery, paced by the sync speed limit, while
//! application IO continues. A degraded array is not scrubbed.

use bdev::IoStatus;

use crate::geometry::StripeRole;
use crate::offline::regenerate_parity;

use super::control::{SyncWindow, Worker};

/// Sectors counted per mismatching page.
const PAGE_SECTORS: u64 = 8;
const PAGE: usize = 4096;

/// Pages (of `PAGE` bytes, the last maybe shorter) where `a` and `b`
/// differ, as a bit per page in `out`.
fn mark_diff(a: &[u8], b: &[u8], out: &mut [bool]) {
    for (i, (x, y)) in a.chunks(PAGE).zip(b.chunks(PAGE)).enumerate() {
        if x != y {
            if let Some(o) = out.get_mut(i) {
                *o = true;
            }
        }
    }
}

fn counted(pages: &[bool]) -> u64 {
    pages.iter().filter(|&&d| d).count() as u64 * PAGE_SECTORS
}

impl Worker {
    /// Checks (and with `repair` fixes) sync-range sectors from `cursor`
    /// (member sectors for parity levels, array sectors for mirrors), at
    /// most `n`. Returns the sectors handled and the mismatched sectors.
    pub(super) fn scrub_range(&mut self, cursor: u64, n: u64, repair: bool) -> Result<(u64, u64), IoStatus> {
        let sh = self.shared();
        let done = self.in_sync_window(cursor, n, |me, window, n| {
            let bytes = (n * 512) as usize;
            match window {
                SyncWindow::Stripe(layout) => {
                    let members = layout.raid_disks();
                    if (0..members).any(|m| !me.readable(m, cursor, n)) {
                        return Ok(0);
                    }
                    let mut blocks: Vec<Vec<u8>> = Vec::with_capacity(members);
                    for m in 0..members {
                        let mut b = vec![0u8; bytes];
                        me.read(m, cursor, &mut b)?;
                        blocks.push(b);
                    }
                    let mut want: Vec<Vec<u8>> = blocks
                        .iter()
                        .enumerate()
                        .map(|(m, b)| match layout.role_of(m) {
                            Some(StripeRole::Data(_)) => b.clone(),
                            _ => Vec::new(),
                        })
                        .collect();
                    regenerate_parity(&sh.parity, layout, &mut want).map_err(|_| IoStatus::Invalid)?;
                    let mut pages = vec![false; bytes.div_ceil(PAGE)];
                    let pq = [Some(layout.p_member()), layout.q_member()];
                    for m in pq.into_iter().flatten() {
                        if let (Some(have), Some(good)) = (blocks.get(m), want.get(m)) {
                            mark_diff(have, good, &mut pages);
                        }
                    }
                    let bad = counted(&pages);
                    if repair && bad > 0 {
                        for m in pq.into_iter().flatten() {
                            if let Some(good) = want.get(m) {
                                me.write(m, cursor, good)?;
                            }
                        }
                    }
                    Ok(bad)
                }
                SyncWindow::Mirrored => {
                    let copies: Vec<_> = sh.geometry.copies(cursor).collect();
                    if copies.iter().any(|c| !me.readable(c.member, c.sector, n)) {
                        return Ok(0);
                    }
                    let mut first = vec![0u8; bytes];
                    let mut other = vec![0u8; bytes];
                    let mut pages = vec![false; bytes.div_ceil(PAGE)];
                    let mut differs = Vec::new();
                    for (i, c) in copies.iter().enumerate() {
                        if i == 0 {
                            me.read(c.member, c.sector, &mut first)?;
                            continue;
                        }
                        me.read(c.member, c.sector, &mut other)?;
                        if other != first {
                            mark_diff(&first, &other, &mut pages);
                            differs.push(*c);
                        }
                    }
                    if repair {
                        for c in differs {
                            me.write(c.member, c.sector, &first)?;
                        }
                    }
                    Ok(counted(&pages))
                }
            }
        });
        done.unwrap_or(Ok((n, 0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_that_differ() {
        let a = vec![0u8; 3 * PAGE];
        let mut b = a.clone();
        b[5] = 1;
        b[PAGE * 2 + 7] = 1;
        let mut pages = vec![false; 3];
        mark_diff(&a, &b, &mut pages);
        assert_eq!(pages, vec![true, false, true]);
        assert_eq!(counted(&pages), 16);
    }
}
