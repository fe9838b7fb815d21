//! Creating an array's metadata (the on-disk part of md_create): one v1.2
//! superblock per member and spare, plus the write-intent bitmap header,
//! laid out the way mdadm lays them out:
//!
//! | sectors from the start | content |
//! | --- | --- |
//! | 8 | superblock (4 KiB reserved) |
//! | 16 | bitmap header and bits, if any (whole 4 KiB blocks) |
//! | after the bitmap space | bad-block log (8 sectors reserved) |
//! | `data_offset` | data |

use std::hash::{BuildHasher, Hasher};

use thiserror::Error;

use crate::geometry::{ArrayParams, Geometry, GeometryError, Level, Raid10Layout};
use crate::superblock::bitmap::{BitmapLayout, BitmapSuper};
use crate::superblock::{
    DevFlags, DevRole, FeatureMap, MdTime, ReshapeInfo, Superblock, SuperblockError, SuperblockVersion,
    DEFAULT_MAX_DEV, MAX_DEV_LIMIT, MAX_SECTOR,
};

/// Sector of the v1.2 superblock.
pub const SUPER_OFFSET: u64 = 8;
/// Bitmap offset from the superblock, in sectors.
pub const BITMAP_OFFSET: i32 = 8;
/// Sectors reserved for the bad-block log.
pub const BBLOG_SECTORS: u16 = 8;
/// Default data offset: 1 MiB.
pub const DEFAULT_DATA_OFFSET: u64 = 2048;
/// Default chunk: 512 KiB, as mdadm.
pub const DEFAULT_CHUNK_SECTORS: u32 = 1024;
/// Default bitmap chunk: 64 MiB, as mdadm.
pub const DEFAULT_BITMAP_CHUNK: u32 = 64 << 20;

/// What to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateParams {
    /// Level.
    pub level: Level,
    /// Active members.
    pub raid_disks: u32,
    /// Hot spares (devices after the active ones).
    pub spares: u32,
    /// Layout number; `None` picks md's default for the level.
    pub layout: Option<u32>,
    /// Chunk size in sectors (ignored by raid1).
    pub chunk_sectors: u32,
    /// Array name ("homehost:name" by mdadm's convention).
    pub name: String,
    /// Array UUID; `None` = random.
    pub uuid: Option<[u8; 16]>,
    /// Data offset in sectors.
    pub data_offset: u64,
    /// Per-member sectors to use; `None` = as much as the smallest allows.
    pub size: Option<u64>,
    /// Internal bitmap with this many bytes per bit (0 = mdadm's default).
    pub bitmap_chunk: Option<u32>,
    /// Creation time; `None` = now.
    pub ctime: Option<MdTime>,
    /// Role slots in each superblock.
    pub max_dev: u32,
}

impl CreateParams {
    /// md defaults for `level` over `raid_disks` members.
    pub fn new(level: Level, raid_disks: u32) -> CreateParams {
        CreateParams {
            level,
            raid_disks,
            spares: 0,
            layout: None,
            chunk_sectors: match level {
                Level::Raid1 | Level::Linear => 0,
                _ => DEFAULT_CHUNK_SECTORS,
            },
            name: "xbdev:0".to_string(),
            uuid: None,
            data_offset: DEFAULT_DATA_OFFSET,
            size: None,
            bitmap_chunk: None,
            ctime: None,
            max_dev: DEFAULT_MAX_DEV,
        }
    }
}

/// md's default layout number for a level.
pub fn default_layout(level: Level) -> u32 {
    match level {
        Level::Raid5 | Level::Raid6 => 2,
        Level::Raid4 => 5,
        Level::Raid10 => Raid10Layout::NEAR2.to_md(),
        _ => 0,
    }
}

/// Why metadata could not be created.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CreateError {
    /// Device count does not match raid_disks + spares.
    #[error("expected {expected} devices, got {got}")]
    DeviceCount {
        /// raid_disks + spares.
        expected: usize,
        /// Devices given.
        got: usize,
    },
    /// A device cannot hold the metadata and any data.
    #[error("device {index} ({sectors} sectors) is too small")]
    DeviceTooSmall {
        /// Device index.
        index: usize,
        /// Its size.
        sectors: u64,
    },
    /// The metadata area does not fit below the data offset.
    #[error("data offset {data_offset} leaves no room for metadata needing {needed} sectors")]
    DataOffsetTooSmall {
        /// Requested data offset.
        data_offset: u64,
        /// Sectors needed before data.
        needed: u64,
    },
    /// Requested size larger than the members allow.
    #[error("size {requested} exceeds the {available} sectors available per member")]
    SizeTooLarge {
        /// Requested.
        requested: u64,
        /// Available.
        available: u64,
    },
    /// Bad bitmap chunk.
    #[error("bitmap chunk {0} bytes is not a power of two of at least 4096")]
    BadBitmapChunk(u32),
    /// `max_dev` cannot hold every device.
    #[error("max_dev {max_dev} too small for {devices} devices (limit {MAX_DEV_LIMIT})")]
    MaxDev {
        /// Requested.
        max_dev: u32,
        /// Devices.
        devices: usize,
    },
    /// Bitmap requested for a level without redundancy.
    #[error("{0} has no redundancy to track with a bitmap")]
    NoBitmapForLevel(Level),
    /// Invalid geometry.
    #[error("invalid array geometry")]
    Geometry(#[source] GeometryError),
    /// Invalid superblock field.
    #[error("invalid superblock field")]
    Superblock(#[source] SuperblockError),
}

/// The metadata of a new array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedArray {
    /// One superblock per device, active members first, then spares.
    pub superblocks: Vec<Superblock>,
    /// Bitmap header (same for every device), if any.
    pub bitmap: Option<BitmapSuper>,
    /// The mapping.
    pub geometry: Geometry,
}

impl CreatedArray {
    /// The bitmap bytes to write at sector `SUPER_OFFSET + BITMAP_OFFSET`
    /// of every device: header plus clean bits, whole 4 KiB blocks.
    pub fn bitmap_image(&self) -> Option<Vec<u8>> {
        let b = self.bitmap.as_ref()?;
        let len = usize::try_from(b.layout().total_bytes(4096)).ok()?;
        let mut buf = vec![0u8; len];
        b.encode_into(&mut buf).ok()?;
        Some(buf)
    }
}

/// A random UUID (version 4 style).
pub fn random_uuid() -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, half) in out.chunks_mut(8).enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(i as u64);
        h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
        half.copy_from_slice(&h.finish().to_le_bytes());
    }
    out[6] = (out[6] & 0x0f) | 0x40;
    out[8] = (out[8] & 0x3f) | 0x80;
    out
}

/// mdadm's space reserved for a bitmap when none is requested.
fn default_bitmap_space(size: u64) -> u64 {
    if size < 128 {
        0
    } else if size - 128 >= 200 * 1024 * 1024 * 2 {
        256
    } else if size - 8 > 8 * 1024 * 1024 * 2 {
        128
    } else {
        8
    }
}

/// Builds the metadata for a new array over devices of `device_sectors`
/// sectors each (active members first, then spares).
pub fn create(p: &CreateParams, device_sectors: &[u64]) -> Result<CreatedArray, CreateError> {
    let devices = (p.raid_disks + p.spares) as usize;
    if device_sectors.len() != devices {
        return Err(CreateError::DeviceCount { expected: devices, got: device_sectors.len() });
    }
    if p.max_dev > MAX_DEV_LIMIT || (p.max_dev as usize) < devices {
        return Err(CreateError::MaxDev { max_dev: p.max_dev, devices });
    }
    let layout = p.layout.unwrap_or_else(|| default_layout(p.level));
    let data_sizes: Vec<u64> = device_sectors
        .iter()
        .enumerate()
        .map(|(index, &s)| match s.checked_sub(p.data_offset) {
            Some(d) if d > 0 => Ok(d),
            _ => Err(CreateError::DeviceTooSmall { index, sectors: s }),
        })
        .collect::<Result<_, _>>()?;
    let min_data = data_sizes.iter().copied().min().unwrap_or(0);
    let chunk = u64::from(p.chunk_sectors);
    let round = |s: u64| match p.level {
        Level::Raid1 => s & !7,
        Level::Linear if chunk == 0 => s,
        _ if chunk > 0 => s - s % chunk,
        _ => s,
    };
    let available = round(min_data);
    let size = match p.size {
        Some(s) if s > available => return Err(CreateError::SizeTooLarge { requested: s, available }),
        Some(s) => round(s),
        None => available,
    };
    let active_sizes: Vec<u64> = data_sizes.iter().take(p.raid_disks as usize).copied().collect();
    let params = ArrayParams {
        level: p.level,
        layout,
        chunk_sectors: p.chunk_sectors,
        raid_disks: p.raid_disks,
        dev_sectors: size,
        member_sectors: active_sizes,
    };
    let geometry = Geometry::new(&params).map_err(CreateError::Geometry)?;
    let multi_zone = matches!(&geometry, Geometry::Raid0(g) if g.zones().len() > 1);

    // Bitmap.
    let bitmap = match p.bitmap_chunk {
        None => None,
        Some(_) if p.level.redundancy() == 0 => return Err(CreateError::NoBitmapForLevel(p.level)),
        Some(req) => {
            let sync = geometry.resync_sectors();
            // Room between the bitmap start and the data, less the bad-block
            // log, at most 128 KiB (mdadm's limit).
            let room_sectors =
                p.data_offset.saturating_sub(SUPER_OFFSET + BITMAP_OFFSET as u64 + u64::from(BBLOG_SECTORS)).min(256);
            let max_bits = (room_sectors * 512).saturating_sub(256) * 8;
            let mut chunk_bytes: u64 = 4096;
            while sync.div_ceil(chunk_bytes / 512) > max_bits {
                chunk_bytes *= 2;
            }
            let wanted = if req == 0 { DEFAULT_BITMAP_CHUNK } else { req };
            if wanted < 4096 || !wanted.is_power_of_two() {
                return Err(CreateError::BadBitmapChunk(req));
            }
            let chunk_bytes =
                u32::try_from(chunk_bytes.max(u64::from(wanted))).map_err(|_| CreateError::BadBitmapChunk(req))?;
            Some(BitmapSuper::new(p.uuid.unwrap_or([0; 16]), sync, chunk_bytes, 0))
        }
    };
    let bitmap_sectors =
        bitmap.as_ref().map_or(0, |b| BitmapLayout::new(b.sync_size, b.chunk_bytes).total_bytes(4096) / 512);
    let reserved = bitmap_sectors.max(default_bitmap_space(size));
    let bblog_offset = BITMAP_OFFSET as u64 + reserved;
    let needed = SUPER_OFFSET + bblog_offset + u64::from(BBLOG_SECTORS);
    if p.data_offset < needed {
        return Err(CreateError::DataOffsetTooSmall { data_offset: p.data_offset, needed });
    }

    let uuid = p.uuid.unwrap_or_else(random_uuid);
    let bitmap = bitmap.map(|mut b| {
        b.uuid = uuid;
        b
    });
    let ctime = p.ctime.unwrap_or_else(MdTime::now);
    let mut feature_map = FeatureMap::default();
    if bitmap.is_some() {
        feature_map.insert(FeatureMap::BITMAP_OFFSET);
    }
    if multi_zone {
        feature_map.insert(FeatureMap::RAID0_LAYOUT);
    }
    let mut dev_roles = vec![DevRole::Spare; p.max_dev as usize];
    for (slot, r) in dev_roles.iter_mut().take(p.raid_disks as usize).enumerate() {
        // raid_disks <= MAX_RAID_DISKS < 0xff00, checked by Geometry::new.
        *r = DevRole::Active(u16::try_from(slot).unwrap_or(u16::MAX));
    }
    let mut template = Superblock {
        feature_map,
        set_uuid: uuid,
        set_name: [0; 32],
        ctime,
        level: p.level,
        layout,
        size,
        chunk_sectors: if p.level == Level::Raid1 { 0 } else { p.chunk_sectors },
        raid_disks: p.raid_disks,
        bitmap_offset: if bitmap.is_some() { BITMAP_OFFSET } else { 0 },
        reshape: ReshapeInfo::default(),
        data_offset: p.data_offset,
        data_size: 0,
        super_offset: SUPER_OFFSET,
        recovery_offset: 0,
        dev_number: 0,
        cnt_corrected_read: 0,
        device_uuid: [0; 16],
        devflags: DevFlags::default(),
        bblog_shift: 0,
        bblog_size: BBLOG_SECTORS,
        bblog_offset: i32::try_from(bblog_offset).unwrap_or(i32::MAX),
        utime: ctime,
        events: 0,
        resync_offset: MAX_SECTOR,
        dev_roles,
    };
    template.set_name_str(&p.name).map_err(CreateError::Superblock)?;
    let mut superblocks = Vec::with_capacity(devices);
    for (i, (&data_size, &dev)) in data_sizes.iter().zip(device_sectors).enumerate() {
        let mut sb = template.clone();
        sb.dev_number = i as u32;
        sb.data_size = data_size;
        sb.device_uuid = random_uuid();
        let at = SuperblockVersion::V1_2.super_offset(dev).unwrap_or(SUPER_OFFSET);
        sb.validate_on_member(at, dev).map_err(CreateError::Superblock)?;
        superblocks.push(sb);
    }
    Ok(CreatedArray { superblocks, bitmap, geometry })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mdadm_like_layout() {
        let c = create(&CreateParams::new(Level::Raid5, 3), &[65536; 3]).unwrap();
        assert_eq!(c.superblocks.len(), 3);
        let sb = &c.superblocks[1];
        assert_eq!(sb.dev_number, 1);
        assert_eq!(sb.role(), Some(DevRole::Active(1)));
        assert_eq!(sb.size, 65536 - 2048);
        assert_eq!(sb.data_size, 65536 - 2048);
        assert_eq!(sb.bblog_offset, 16);
        assert_eq!(sb.layout, 2);
        assert_eq!(c.geometry.array_sectors(), sb.size * 2);
        assert!(c.bitmap.is_none());
        // Every superblock round-trips through the on-disk format.
        for sb in &c.superblocks {
            let bytes = sb.encode(4096).unwrap();
            assert_eq!(&Superblock::parse_on_member(&bytes, 8, 65536).unwrap(), sb);
        }
        assert_ne!(c.superblocks[0].device_uuid, c.superblocks[1].device_uuid);
    }

    #[test]
    fn bitmap_placement() {
        let mut p = CreateParams::new(Level::Raid1, 2);
        p.bitmap_chunk = Some(0);
        p.uuid = Some([9; 16]);
        let c = create(&p, &[65536; 2]).unwrap();
        let b = c.bitmap.as_ref().unwrap();
        assert_eq!(b.uuid, [9; 16]);
        assert_eq!(b.sync_size, c.superblocks[0].size);
        assert_eq!(b.chunk_bytes, DEFAULT_BITMAP_CHUNK);
        assert!(c.superblocks[0].feature_map.contains(FeatureMap::BITMAP_OFFSET));
        assert_eq!(c.superblocks[0].bitmap_offset, 8);
        assert_eq!(c.bitmap_image().unwrap().len(), 4096);
        // Small chunks grow until the bits fit in 128 KiB.
        p.bitmap_chunk = Some(4096);
        let c = create(&p, &[1 << 32; 2]).unwrap();
        let b = c.bitmap.unwrap();
        assert!(b.layout().total_bytes(4096) <= 128 * 1024);
        assert!(b.chunk_bytes > 4096);
        p.bitmap_chunk = Some(1000);
        assert_eq!(create(&p, &[65536; 2]), Err(CreateError::BadBitmapChunk(1000)));
        let mut p0 = CreateParams::new(Level::Raid0, 2);
        p0.bitmap_chunk = Some(0);
        assert_eq!(create(&p0, &[65536; 2]), Err(CreateError::NoBitmapForLevel(Level::Raid0)));
    }

    #[test]
    fn parameter_errors() {
        let p = CreateParams::new(Level::Raid5, 3);
        assert!(matches!(create(&p, &[65536; 2]), Err(CreateError::DeviceCount { .. })));
        assert!(matches!(create(&p, &[65536, 65536, 2000]), Err(CreateError::DeviceTooSmall { index: 2, .. })));
        let mut q = p.clone();
        q.data_offset = 20;
        assert!(matches!(create(&q, &[65536; 3]), Err(CreateError::DataOffsetTooSmall { .. })));
        let mut q = p.clone();
        q.size = Some(1 << 40);
        assert!(matches!(create(&q, &[65536; 3]), Err(CreateError::SizeTooLarge { .. })));
        let mut q = p.clone();
        q.name = "x".repeat(40);
        assert!(matches!(create(&q, &[65536; 3]), Err(CreateError::Superblock(_))));
        let mut q = p;
        q.chunk_sectors = 3;
        assert!(matches!(create(&q, &[65536; 3]), Err(CreateError::Geometry(_))));
    }

    #[test]
    fn raid0_zones_get_a_layout() {
        let mut p = CreateParams::new(Level::Raid0, 2);
        let c = create(&p, &[65536, 65536]).unwrap();
        assert!(!c.superblocks[0].feature_map.contains(FeatureMap::RAID0_LAYOUT));
        assert!(create(&p, &[65536, 100000]).is_err());
        p.layout = Some(2);
        let c = create(&p, &[65536, 100000]).unwrap();
        assert!(c.superblocks[0].feature_map.contains(FeatureMap::RAID0_LAYOUT));
    }

    #[test]
    fn uuids_differ() {
        assert_ne!(random_uuid(), random_uuid());
    }
}
