//! Assembly: from the superblocks found on candidate members to the array
//! they form (md's `md_assemble` decisions, without IO).
//!
//! All members must carry the same array UUID. The member(s) with the
//! highest event count are authoritative: their `dev_roles` decide which
//! member holds which slot, and members with older event counts are stale
//! (left out, as md does without a bitmap to catch them up). Array
//! parameters must agree among the fresh members.
//!
//! With a write-intent bitmap md takes a stale member back into its old
//! slot when the bitmap still covers everything it missed (its events are
//! not older than the bitmap's `events_cleared`) and recovers only the
//! chunks whose bits are set: [`readd_slot`] is that decision, shared by
//! assembly and the hot re-add of a running array.

use thiserror::Error;

use crate::geometry::{ArrayParams, Geometry, GeometryError, Level, MemberContent, MAX_RAID_DISKS};
use crate::superblock::{DevRole, FeatureMap, Superblock, MAX_SECTOR};

/// Features an array may use and still be assembled here.
pub const SUPPORTED_FEATURES: u32 = FeatureMap::BITMAP_OFFSET
    | FeatureMap::RECOVERY_OFFSET
    | FeatureMap::RECOVERY_BITMAP
    | FeatureMap::BAD_BLOCKS
    | FeatureMap::RAID0_LAYOUT;

/// Why a returning member cannot be re-added into its old slot with a
/// bitmap-based recovery (it then needs a full recovery, as a new device).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ReAddRefusal {
    /// The array has no write-intent bitmap to say what the member missed.
    #[error("the array has no write-intent bitmap")]
    NoBitmap,
    /// The device carries no md superblock.
    #[error("the device has no md superblock")]
    NoSuperblock,
    /// The device belongs to another array.
    #[error("the device belongs to array {0}")]
    OtherArray(String),
    /// The device's superblock disagrees on the array parameters.
    #[error("the device disagrees on {0}")]
    ParamMismatch(&'static str),
    /// The device was not an active member (spare, faulty, replacement).
    #[error("the device was not an active member")]
    NotActive,
    /// The device was in a full recovery when it left.
    #[error("the device was being rebuilt in full when it left")]
    WasRecovering,
    /// The device is older than what the bitmap covers.
    #[error("its events {events} are older than the bitmap's events_cleared {events_cleared}")]
    TooOld {
        /// The device's event count.
        events: u64,
        /// The bitmap's `events_cleared`.
        events_cleared: u64,
    },
    /// The device's events are newer than the array's.
    #[error("its events {events} are newer than the array's {array}")]
    Newer {
        /// The device's event count.
        events: u64,
        /// The array's.
        array: u64,
    },
    /// Its old slot has another device.
    #[error("slot {0} is taken")]
    RoleTaken(usize),
    /// Its device number is used by another device.
    #[error("device number {0} is in use")]
    DeviceNumberInUse(u32),
    /// Its data area is smaller than the array needs.
    #[error("its data area of {have} sectors is smaller than the {need} needed")]
    TooSmall {
        /// Sectors the device has.
        have: u64,
        /// Sectors the array needs.
        need: u64,
    },
}

/// The first array parameter (level, layout, chunk size, raid disks, size)
/// in which two superblocks of one array disagree.
fn param_mismatch(a: &Superblock, b: &Superblock) -> Option<&'static str> {
    [
        ("level", a.level == b.level),
        ("layout", a.layout == b.layout),
        ("chunk size", a.chunk_sectors == b.chunk_sectors),
        ("raid disks", a.raid_disks == b.raid_disks),
        ("size", a.size == b.size),
    ]
    .into_iter()
    .find_map(|(field, same)| (!same).then_some(field))
}

/// Whether the device with superblock `dev` can return to its old slot in
/// the array whose current superblock is `array`, with a recovery driven
/// by the bitmap whose `events_cleared` is `events_cleared` (`None`: no
/// bitmap). Returns the slot. Whether the slot and the device number are
/// free is the caller's to check.
pub fn readd_slot(array: &Superblock, events_cleared: Option<u64>, dev: &Superblock) -> Result<usize, ReAddRefusal> {
    let events_cleared = events_cleared.ok_or(ReAddRefusal::NoBitmap)?;
    if dev.set_uuid != array.set_uuid {
        return Err(ReAddRefusal::OtherArray(dev.uuid_string()));
    }
    if let Some(field) = param_mismatch(dev, array) {
        return Err(ReAddRefusal::ParamMismatch(field));
    }
    let slot = match dev.role() {
        Some(DevRole::Active(s)) if s < u16::try_from(array.raid_disks).unwrap_or(u16::MAX) => usize::from(s),
        _ => return Err(ReAddRefusal::NotActive),
    };
    if dev.feature_map.contains(FeatureMap::REPLACEMENT) {
        return Err(ReAddRefusal::NotActive);
    }
    // md's saved_raid_disk survives only a recovery that was itself
    // bitmap-based (MD_FEATURE_RECOVERY_BITMAP).
    if dev.feature_map.contains(FeatureMap::RECOVERY_OFFSET) && !dev.feature_map.contains(FeatureMap::RECOVERY_BITMAP) {
        return Err(ReAddRefusal::WasRecovering);
    }
    if dev.events > array.events {
        return Err(ReAddRefusal::Newer { events: dev.events, array: array.events });
    }
    if dev.events < events_cleared {
        return Err(ReAddRefusal::TooOld { events: dev.events, events_cleared });
    }
    Ok(slot)
}

impl AssemblyPlan {
    /// The stale candidates a bitmap with `events_cleared` (read from a
    /// fresh member; `None`: no bitmap) brings back into their old slots,
    /// as `(slot, candidate index)`: each slot must be empty, and of two
    /// candidates for one slot the fresher wins.
    pub fn bitmap_readds(&self, candidates: &[Superblock], events_cleared: Option<u64>) -> Vec<(usize, usize)> {
        let mut stale: Vec<usize> = self.stale.clone();
        stale.sort_by_key(|&i| std::cmp::Reverse(candidates.get(i).map_or(0, |s| s.events)));
        let taken_numbers: Vec<u32> = self
            .slots
            .iter()
            .chain(&self.replacements)
            .flatten()
            .map(|m| m.index)
            .chain(self.spares.iter().copied())
            .filter_map(|i| candidates.get(i).map(|s| s.dev_number))
            .collect();
        let mut out: Vec<(usize, usize)> = Vec::new();
        for i in stale {
            let Some(sb) = candidates.get(i) else { continue };
            let Ok(slot) = readd_slot(&self.superblock, events_cleared, sb) else { continue };
            let free = self.slots.get(slot).is_some_and(Option::is_none);
            let need = self.geometry.member_used_sectors(slot);
            if free
                && !out.iter().any(|&(s, _)| s == slot)
                && !taken_numbers.contains(&sb.dev_number)
                && sb.data_size >= need
            {
                out.push((slot, i));
            }
        }
        out
    }
}

/// Why a set of members does not form a usable array.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AssembleError {
    /// No candidate members.
    #[error("no members given")]
    NoMembers,
    /// A member belongs to another array.
    #[error("member {index} belongs to array {found}, not {expected}")]
    UuidMismatch {
        /// Candidate index.
        index: usize,
        /// UUID of the first candidate.
        expected: String,
        /// UUID of this one.
        found: String,
    },
    /// Fresh members disagree on the array parameters.
    #[error("member {index} disagrees on {field}")]
    ParamMismatch {
        /// Candidate index.
        index: usize,
        /// Which parameter.
        field: &'static str,
    },
    /// The array uses a feature not supported here.
    #[error("array uses unsupported features {0:#x}")]
    UnsupportedFeatures(u32),
    /// Two members claim the same slot.
    #[error("members {first} and {second} both claim slot {slot}")]
    DuplicateRole {
        /// Slot.
        slot: usize,
        /// First candidate.
        first: usize,
        /// Second candidate.
        second: usize,
    },
    /// A member's device number has no role in the authoritative superblock.
    #[error("member {index} has device number {dev_number} outside the role table")]
    UnknownDevice {
        /// Candidate index.
        index: usize,
        /// Its device number.
        dev_number: u32,
    },
    /// Too many slots are missing for the level.
    #[error("{level} array with {missing} of {raid_disks} members missing cannot run")]
    NotEnoughMembers {
        /// Level.
        level: Level,
        /// Missing slots.
        missing: usize,
        /// Slots.
        raid_disks: usize,
    },
    /// The parameters do not form a valid geometry.
    #[error("invalid array geometry")]
    Geometry(#[source] GeometryError),
}

/// A member that fills a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotMember {
    /// Index of the candidate.
    pub index: usize,
    /// Member sectors (from the data offset) known to hold valid data:
    /// `None` when the member is fully in sync, else its recovery offset.
    pub recovered_to: Option<u64>,
}

/// The outcome of assembly planning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssemblyPlan {
    /// The authoritative superblock (a copy of the freshest member's).
    pub superblock: Superblock,
    /// Array parameters.
    pub params: ArrayParams,
    /// The mapping.
    pub geometry: Geometry,
    /// For each slot, the member filling it.
    pub slots: Vec<Option<SlotMember>>,
    /// For each slot, a replacement being rebuilt for the member filling
    /// it (md's want_replacement, interrupted by a stop): the copy resumes
    /// from `recovered_to`.
    pub replacements: Vec<Option<SlotMember>>,
    /// Candidates that are hot spares.
    pub spares: Vec<usize>,
    /// Candidates marked faulty by the freshest superblock.
    pub faulty: Vec<usize>,
    /// Candidates with an older event count.
    pub stale: Vec<usize>,
    /// Highest event count.
    pub events: u64,
}

impl AssemblyPlan {
    /// Slots without a fully in-sync member.
    pub fn degraded(&self) -> usize {
        self.slots.iter().filter(|s| !matches!(s, Some(m) if m.recovered_to.is_none())).count()
    }

    /// Whether the array was shut down cleanly.
    pub fn clean(&self) -> bool {
        self.superblock.resync_offset == MAX_SECTOR
    }
}

/// Whether the array can serve every sector with the slots marked
/// `present`.
pub fn can_run(geometry: &Geometry, present: &[bool]) -> bool {
    let up = |m: usize| present.get(m).copied().unwrap_or(false);
    let n = geometry.raid_disks();
    let missing = (0..n).filter(|&m| !up(m)).count();
    match geometry {
        Geometry::Linear(_) | Geometry::Raid0(_) => missing == 0,
        Geometry::Raid1 { .. } => missing < n,
        Geometry::Striped(_) => missing <= geometry.level().redundancy(),
        Geometry::Raid10(g) => {
            // The copy pattern repeats every raid_disks chunks; check one
            // period of chunks (twice, to cover row wrap-around).
            let chunk = g.chunk_sectors();
            let chunks = g.array_sectors() / chunk;
            let period = (2 * n as u64 * g.copies_per_chunk() as u64).min(chunks);
            (0..period).all(|c| g.copies(c * chunk).any(|ms| up(ms.member)))
        }
    }
}

fn params_of(sb: &Superblock, member_sectors: Vec<u64>) -> ArrayParams {
    ArrayParams {
        level: sb.level,
        layout: sb.layout,
        chunk_sectors: sb.chunk_sectors,
        raid_disks: sb.raid_disks,
        dev_sectors: sb.size,
        member_sectors,
    }
}

/// Plans the array formed by `candidates` (superblocks read from the
/// members, in any order).
pub fn plan(candidates: &[Superblock]) -> Result<AssemblyPlan, AssembleError> {
    let first = candidates.first().ok_or(AssembleError::NoMembers)?;
    for (index, sb) in candidates.iter().enumerate() {
        if sb.set_uuid != first.set_uuid {
            return Err(AssembleError::UuidMismatch { index, expected: first.uuid_string(), found: sb.uuid_string() });
        }
    }
    let events = candidates.iter().map(|s| s.events).max().unwrap_or(0);
    let fresh_index = candidates.iter().position(|s| s.events == events).unwrap_or(0);
    let auth = candidates.get(fresh_index).unwrap_or(first);
    let unsupported = auth.feature_map.0 & !SUPPORTED_FEATURES;
    if unsupported != 0 {
        return Err(AssembleError::UnsupportedFeatures(unsupported));
    }
    // `raid_disks` comes from disk: bound it before sizing the slot tables.
    if auth.raid_disks > MAX_RAID_DISKS {
        return Err(AssembleError::Geometry(GeometryError::TooManyDisks {
            raid_disks: auth.raid_disks,
            max: MAX_RAID_DISKS,
        }));
    }
    let raid_disks = auth.raid_disks as usize;
    let mut slots: Vec<Option<SlotMember>> = vec![None; raid_disks];
    let mut replacements: Vec<Option<SlotMember>> = vec![None; raid_disks];
    let mut spares = Vec::new();
    let mut faulty = Vec::new();
    let mut stale = Vec::new();
    for (index, sb) in candidates.iter().enumerate() {
        if sb.events < events {
            stale.push(index);
            continue;
        }
        if let Some(field) = param_mismatch(sb, auth) {
            return Err(AssembleError::ParamMismatch { index, field });
        }
        let role = auth
            .dev_roles
            .get(sb.dev_number as usize)
            .copied()
            .ok_or(AssembleError::UnknownDevice { index, dev_number: sb.dev_number })?;
        match role {
            DevRole::Active(r) if (r as usize) < raid_disks => {
                let slot = r as usize;
                let recovered_to = (sb.feature_map.contains(FeatureMap::RECOVERY_OFFSET)
                    && sb.recovery_offset != MAX_SECTOR)
                    .then_some(sb.recovery_offset);
                let table =
                    if sb.feature_map.contains(FeatureMap::REPLACEMENT) { &mut replacements } else { &mut slots };
                if let Some(Some(prev)) = table.get(slot) {
                    return Err(AssembleError::DuplicateRole { slot, first: prev.index, second: index });
                }
                if let Some(s) = table.get_mut(slot) {
                    *s = Some(SlotMember { index, recovered_to });
                }
            }
            // Active roles beyond raid_disks (after a shrink) act as spares.
            DevRole::Active(_) | DevRole::Spare => spares.push(index),
            DevRole::Faulty => faulty.push(index),
            DevRole::Journal => {
                return Err(AssembleError::UnsupportedFeatures(FeatureMap::JOURNAL));
            }
        }
    }
    // A replacement whose slot has no member left is that slot's
    // recovering member (as when the old device fails during the copy).
    for (slot, r) in slots.iter_mut().zip(replacements.iter_mut()) {
        if slot.is_none() {
            *slot = r.take();
        }
    }
    // Linear and raid0 need each member's own data size.
    let member_sectors: Vec<u64> =
        slots.iter().map(|s| s.and_then(|m| candidates.get(m.index)).map_or(0, |sb| sb.data_size)).collect();
    let missing = slots.iter().filter(|s| s.is_none()).count();
    let not_enough = AssembleError::NotEnoughMembers { level: auth.level, missing, raid_disks };
    if matches!(auth.level, Level::Linear | Level::Raid0) && missing > 0 {
        return Err(not_enough);
    }
    let params = params_of(auth, member_sectors);
    let geometry = Geometry::new(&params).map_err(AssembleError::Geometry)?;
    // A member in recovery counts as present only for what it holds; for
    // the run decision md counts it as missing.
    let present: Vec<bool> = slots.iter().map(|s| matches!(s, Some(m) if m.recovered_to.is_none())).collect();
    if !can_run(&geometry, &present) {
        return Err(not_enough);
    }
    Ok(AssemblyPlan { superblock: auth.clone(), params, geometry, slots, replacements, spares, faulty, stale, events })
}

/// Whether member sector `sector` of slot `member` holds data that the
/// array needs (used to skip slack during rebuilds).
pub fn sector_in_use(geometry: &Geometry, member: usize, sector: u64) -> bool {
    geometry.member_extent(member, sector).is_ok_and(|e| e.content != MemberContent::Unused)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::create::{create, CreateParams};

    fn array(level: Level, disks: u32, spares: u32) -> Vec<Superblock> {
        let mut p = CreateParams::new(level, disks);
        p.spares = spares;
        create(&p, &vec![32 * 2048; (disks + spares) as usize]).unwrap().superblocks
    }

    #[test]
    fn plans_a_complete_array_in_any_order() {
        let mut sbs = array(Level::Raid5, 4, 1);
        sbs.reverse();
        let plan = plan(&sbs).unwrap();
        assert_eq!(plan.slots.len(), 4);
        for (slot, m) in plan.slots.iter().enumerate() {
            let m = m.unwrap();
            assert_eq!(sbs[m.index].role(), Some(DevRole::Active(slot as u16)));
        }
        assert_eq!(plan.spares, vec![0]);
        assert_eq!(plan.degraded(), 0);
        assert!(plan.clean());
    }

    #[test]
    fn degraded_and_failed_arrays() {
        let sbs = array(Level::Raid5, 4, 0);
        let plan1 = plan(&sbs[1..]).unwrap();
        assert_eq!(plan1.degraded(), 1);
        assert!(plan1.slots[0].is_none());
        assert!(matches!(plan(&sbs[2..]), Err(AssembleError::NotEnoughMembers { missing: 2, .. })));
        let sbs = array(Level::Raid6, 5, 0);
        assert_eq!(plan(&sbs[2..]).unwrap().degraded(), 2);
        assert!(plan(&sbs[3..]).is_err());
        let sbs = array(Level::Raid0, 3, 0);
        assert!(plan(&sbs[1..]).is_err());
        let sbs = array(Level::Raid1, 3, 0);
        assert_eq!(plan(&sbs[2..]).unwrap().degraded(), 2);
    }

    #[test]
    fn raid10_needs_one_copy_of_each_chunk() {
        let sbs = array(Level::Raid10, 4, 0);
        // n2 on 4: pairs (0,1) and (2,3).
        assert!(plan(&[sbs[0].clone(), sbs[2].clone()]).is_ok());
        assert!(plan(&[sbs[1].clone(), sbs[3].clone()]).is_ok());
        assert!(plan(&[sbs[2].clone(), sbs[3].clone()]).is_err());
        assert!(plan(&[sbs[0].clone(), sbs[1].clone()]).is_err());
    }

    #[test]
    fn replacements_beside_their_slot_or_in_it() {
        let mut sbs = array(Level::Raid1, 2, 1);
        // Device 2 (the spare) became slot 0's replacement, 100 sectors in.
        for sb in sbs.iter_mut() {
            sb.dev_roles[2] = DevRole::Active(0);
        }
        sbs[2].feature_map.insert(FeatureMap::REPLACEMENT);
        sbs[2].feature_map.insert(FeatureMap::RECOVERY_OFFSET);
        sbs[2].recovery_offset = 100;
        let p = plan(&sbs).unwrap();
        assert_eq!(p.slots[0], Some(SlotMember { index: 0, recovered_to: None }));
        assert_eq!(p.replacements[0], Some(SlotMember { index: 2, recovered_to: Some(100) }));
        assert!(p.replacements[1].is_none() && p.spares.is_empty());
        assert_eq!(p.degraded(), 0);
        // Without the device it replaces it is the slot's recovering member.
        let p = plan(&sbs[1..]).unwrap();
        assert_eq!(p.slots[0], Some(SlotMember { index: 1, recovered_to: Some(100) }));
        assert!(p.replacements.iter().all(Option::is_none));
        assert_eq!(p.degraded(), 1);
        // Two replacements of one slot conflict.
        let mut two = sbs.clone();
        two[1] = two[2].clone();
        two[1].dev_number = 1;
        two[0].dev_roles[1] = DevRole::Active(0);
        assert!(matches!(plan(&two), Err(AssembleError::DuplicateRole { slot: 0, .. })));
    }

    #[test]
    fn huge_raid_disks_is_rejected_before_allocating() {
        let mut sbs = array(Level::Raid5, 3, 0);
        for sb in &mut sbs {
            sb.raid_disks = 0x0500_0000;
        }
        let e = plan(&sbs).unwrap_err();
        assert!(
            matches!(e, AssembleError::Geometry(GeometryError::TooManyDisks { raid_disks: 0x0500_0000, .. })),
            "{e:?}"
        );
    }

    #[test]
    fn stale_members_are_left_out() {
        let mut sbs = array(Level::Raid1, 2, 0);
        sbs[1].events += 3;
        let plan = plan(&sbs).unwrap();
        assert_eq!(plan.stale, vec![0]);
        assert!(plan.slots[0].is_none());
        assert_eq!(plan.events, sbs[1].events);
    }

    #[test]
    fn rejects_mixed_and_conflicting_members() {
        let a = array(Level::Raid5, 3, 0);
        let b = array(Level::Raid5, 3, 0);
        assert!(matches!(plan(&[a[0].clone(), b[1].clone()]), Err(AssembleError::UuidMismatch { index: 1, .. })));
        let mut c = a.clone();
        c[1].chunk_sectors *= 2;
        assert!(matches!(plan(&c), Err(AssembleError::ParamMismatch { field: "chunk size", .. })));
        let mut d = a.clone();
        d[2].dev_number = 0;
        assert!(matches!(plan(&d), Err(AssembleError::DuplicateRole { slot: 0, .. })));
        let mut e = a.clone();
        e[0].feature_map.insert(FeatureMap::RESHAPE_ACTIVE);
        e[1].feature_map.insert(FeatureMap::RESHAPE_ACTIVE);
        e[2].feature_map.insert(FeatureMap::RESHAPE_ACTIVE);
        assert!(matches!(plan(&e), Err(AssembleError::UnsupportedFeatures(4))));
        assert_eq!(plan(&[]), Err(AssembleError::NoMembers));
    }

    #[test]
    fn stale_members_return_while_the_bitmap_covers_them() {
        let mut sbs = array(Level::Raid5, 4, 0);
        // Member 3 left at events 10; the others went on to 15 and record
        // it faulty.
        for sb in sbs.iter_mut() {
            sb.events = 15;
            sb.dev_roles[3] = DevRole::Faulty;
        }
        sbs[3].events = 10;
        sbs[3].dev_roles[3] = DevRole::Active(3);
        let p = plan(&sbs).unwrap();
        assert_eq!(p.stale, vec![3]);
        assert_eq!(p.bitmap_readds(&sbs, Some(10)), vec![(3, 3)]);
        assert_eq!(p.bitmap_readds(&sbs, Some(8)), vec![(3, 3)]);
        // Bits cleared after it left, or no bitmap: it stays out.
        assert!(p.bitmap_readds(&sbs, Some(11)).is_empty());
        assert!(p.bitmap_readds(&sbs, None).is_empty());
        assert_eq!(
            readd_slot(&p.superblock, Some(11), &sbs[3]),
            Err(ReAddRefusal::TooOld { events: 10, events_cleared: 11 })
        );
        // A full recovery in progress when it left: not provable.
        let mut rec = sbs.clone();
        rec[3].feature_map.insert(FeatureMap::RECOVERY_OFFSET);
        assert_eq!(readd_slot(&p.superblock, Some(0), &rec[3]), Err(ReAddRefusal::WasRecovering));
        rec[3].feature_map.insert(FeatureMap::RECOVERY_BITMAP);
        assert_eq!(readd_slot(&p.superblock, Some(0), &rec[3]), Ok(3));
        // Another array, a spare, other parameters.
        let other = array(Level::Raid5, 4, 0);
        assert!(matches!(readd_slot(&p.superblock, Some(0), &other[3]), Err(ReAddRefusal::OtherArray(_))));
        let mut spare = sbs[3].clone();
        spare.dev_roles[3] = DevRole::Spare;
        assert_eq!(readd_slot(&p.superblock, Some(0), &spare), Err(ReAddRefusal::NotActive));
        let mut chunk = sbs[3].clone();
        chunk.chunk_sectors *= 2;
        assert_eq!(readd_slot(&p.superblock, Some(0), &chunk), Err(ReAddRefusal::ParamMismatch("chunk size")));
        // Two stale claimants of one slot: the fresher wins.
        let mut two = array(Level::Raid1, 3, 0);
        for sb in two.iter_mut() {
            sb.events = 15;
            sb.dev_roles[1] = DevRole::Faulty;
            sb.dev_roles[2] = DevRole::Faulty;
        }
        two[1].events = 12;
        two[1].dev_roles[1] = DevRole::Active(2);
        two[2].events = 10;
        two[2].dev_roles[2] = DevRole::Active(2);
        let p2 = plan(&two).unwrap();
        assert_eq!(p2.bitmap_readds(&two, Some(0)), vec![(2, 1)]);
        // A slot a fresh member holds is not given away.
        let mut taken = sbs.clone();
        taken[3].dev_roles[3] = DevRole::Active(0);
        assert!(plan(&taken).unwrap().bitmap_readds(&taken, Some(0)).is_empty());
    }

    #[test]
    fn faulty_and_recovering_members() {
        let mut sbs = array(Level::Raid1, 3, 0);
        for sb in &mut sbs {
            sb.dev_roles[2] = DevRole::Faulty;
        }
        sbs[1].feature_map.insert(FeatureMap::RECOVERY_OFFSET);
        sbs[1].recovery_offset = 1000;
        let plan = plan(&sbs).unwrap();
        assert_eq!(plan.faulty, vec![2]);
        assert_eq!(plan.slots[1].unwrap().recovered_to, Some(1000));
        assert_eq!(plan.degraded(), 2);
    }
}
