//! Config sections of the stacking modules (multipath now; raid and lvol join here), and where
//! each module's bdevs go when the config is saved.

use crate::config::{invalid, kind, ConfigError, Obj};
use multipath::{MultipathOptions, MultipathParams, PathParams, Policy};
use serde_json::{Map, Value};
use std::time::Duration;

/// Where a bdev of `product` is saved, and the entry that recreates it.
pub(crate) fn section_entry(product: &str, params: Value) -> (&'static str, Value) {
    match product {
        "multipath" => ("multipath_devices", params),
        "raid" => {
            // The array's own description, in the seed's raid_devices terms.
            let level = params.get("level").and_then(Value::as_str).unwrap_or("raid1").to_string();
            let mut p = Map::new();
            p.insert("name".into(), params.get("name").cloned().unwrap_or(Value::Null));
            p.insert("base_bdevs".into(), params.get("members").cloned().unwrap_or(Value::Array(Vec::new())));
            if let Some(c) = params.get("chunk_kib").and_then(Value::as_u64).filter(|&c| c > 0) {
                p.insert("strip_size_kb".into(), Value::from(c));
            }
            if let Some(l) = params.get("layout") {
                p.insert("layout".into(), l.clone());
            }
            let mut m = Map::new();
            m.insert("method".into(), Value::from(level));
            m.insert("params".into(), Value::Object(p));
            ("raid_devices", Value::Object(m))
        }
        _ => {
            let mut m = Map::new();
            m.insert("method".into(), Value::from(product));
            m.insert("params".into(), params);
            ("base_devices", Value::Object(m))
        }
    }
}

fn opt_us(o: &mut Obj, key: &'static str) -> Result<Option<Option<Duration>>, ConfigError> {
    let p = o.field_path(key);
    match o.map_get(key) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(|us| Some(Some(Duration::from_micros(us))))
            .ok_or_else(|| invalid(&p, format!("expected microseconds as a non-negative integer, found {n}"))),
        Some(other) => Err(invalid(&p, format!("expected microseconds or null, found {}", kind(other)))),
    }
}

fn parse_path(path: &str, v: &Value) -> Result<PathParams, ConfigError> {
    if let Value::String(s) = v {
        return Ok(PathParams::new(s));
    }
    let mut o = Obj::new(path, v)?;
    let mut p = PathParams::new(&o.string("bdev")?);
    let gp = o.field_path("group");
    if let Some(g) = o.opt_u64("group")? {
        p.group = u8::try_from(g).map_err(|_| invalid(&gp, format!("{g} is not in 0..=255")))?;
    }
    let wp = o.field_path("weight");
    if let Some(w) = o.opt_u64("weight")? {
        p.weight = u32::try_from(w).map_err(|_| invalid(&wp, format!("{w} is too large")))?;
    }
    o.finish()?;
    Ok(p)
}

fn parse_one(path: &str, v: &Value) -> Result<MultipathParams, ConfigError> {
    let mut o = Obj::new(path, v)?;
    let name = match o.get("name") {
        None => None,
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(other) => {
            return Err(invalid(&o.field_path("name"), format!("expected a non-empty string, found {}", kind(other))))
        }
    };
    let paths_path = o.field_path("paths");
    let paths = match o.req("paths")? {
        Value::Array(a) if !a.is_empty() => a
            .iter()
            .enumerate()
            .map(|(i, p)| parse_path(&format!("{paths_path}[{i}]"), p))
            .collect::<Result<Vec<_>, _>>()?,
        Value::Array(_) => return Err(invalid(&paths_path, "expected at least one path")),
        other => return Err(invalid(&paths_path, format!("expected an array, found {}", kind(other)))),
    };
    let mut opts = MultipathOptions::default();
    let pol_path = o.field_path("policy");
    if let Some(v) = o.get("policy") {
        let n = v.as_str().ok_or_else(|| invalid(&pol_path, format!("expected a policy name, found {}", kind(v))))?;
        opts.policy = Policy::from_name(n).map_err(|e| invalid(&pol_path, e.to_string()))?;
    }
    let ipp = o.field_path("ios_per_path");
    if let Some(n) = o.opt_u64("ios_per_path")? {
        match &mut opts.policy {
            Policy::RoundRobin { ios_per_path } => *ios_per_path = n.min(u32::MAX as u64) as u32,
            _ => return Err(invalid(&ipp, "only applies to the round_robin policy")),
        }
    }
    let rbp = o.field_path("region_blocks");
    if let Some(n) = o.opt_u64("region_blocks")? {
        match &mut opts.policy {
            Policy::Hash { region_blocks } => *region_blocks = n,
            _ => return Err(invalid(&rbp, "only applies to the hash policy")),
        }
    }
    if let Some(n) = o.opt_u64("window_ios")? {
        opts.window_ios = n.min(u32::MAX as u64) as u32;
    }
    if let Some(n) = o.opt_u64("queue_depth")? {
        opts.queue_depth = n.min(u32::MAX as u64) as u32;
    }
    let required = |p: &str, v: Option<Duration>| v.ok_or_else(|| invalid(p, "must not be null"));
    let sp = o.field_path("stats_reset_interval_us");
    if let Some(v) = opt_us(&mut o, "stats_reset_interval_us")? {
        opts.stats_reset_interval = required(&sp, v)?;
    }
    let pp = o.field_path("probe_interval_us");
    if let Some(v) = opt_us(&mut o, "probe_interval_us")? {
        opts.probe_interval = required(&pp, v)?;
    }
    let ap = o.field_path("ana_check_interval_us");
    if let Some(v) = opt_us(&mut o, "ana_check_interval_us")? {
        opts.ana_check_interval = required(&ap, v)?;
    }
    if let Some(v) = opt_us(&mut o, "no_path_timeout_us")? {
        opts.no_path_timeout = v;
    }
    if let Some(v) = opt_us(&mut o, "stall_timeout_us")? {
        opts.stall_timeout = v;
    }
    let op = o.path.clone();
    o.finish()?;
    let params = MultipathParams { name, paths, options: opts };
    params.validate().map_err(|e| invalid(&op, e.to_string()))?;
    Ok(params)
}

/// Parse the `multipath_devices` section.
pub(crate) fn parse_multipath(v: &Value) -> Result<Vec<MultipathParams>, ConfigError> {
    let arr =
        v.as_array().ok_or_else(|| invalid("multipath_devices", format!("expected an array, found {}", kind(v))))?;
    arr.iter().enumerate().map(|(i, d)| parse_one(&format!("multipath_devices[{i}]"), d)).collect()
}

/// The `params` of the `nvmf` method.
pub(crate) fn parse_nvmf(p: &mut Obj) -> Result<crate::config::NvmfParams, ConfigError> {
    use nvme_tcp::initiator::ConnectOpts;
    use std::net::{SocketAddr, ToSocketAddrs};
    let name = p.string("name")?;
    let addr_path = p.field_path("addr");
    let addr = p.string("addr")?;
    let port_path = p.field_path("port");
    let port = match p.opt_u64("port")? {
        None => 4420,
        Some(n @ 1..=65535) => n as u16,
        Some(n) => return Err(invalid(&port_path, format!("{n} is not a TCP port"))),
    };
    let sock: SocketAddr = (addr.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| invalid(&addr_path, format!("cannot resolve '{addr}': {e}")))?
        .next()
        .ok_or_else(|| invalid(&addr_path, format!("'{addr}' has no address")))?;
    let nqn = p.string("nqn")?;
    let mut o = ConnectOpts::new(sock, &nqn);
    if let Some(Value::String(h)) = p.get("hostnqn") {
        o.host.nqn = h.clone();
    }
    let hid_path = p.field_path("hostid");
    if let Some(v) = p.get("hostid") {
        let s = v.as_str().unwrap_or_default();
        let u = bdev::Uuid::parse(s).ok_or_else(|| invalid(&hid_path, format!("{v} is not a UUID")))?;
        o.host.id = u.0;
    }
    o.hdgst = p.opt_bool("hdgst")?.unwrap_or(false);
    o.ddgst = p.opt_bool("ddgst")?.unwrap_or(false);
    let qd = p.field_path("queue_depth");
    if let Some(n) = p.opt_u64("queue_depth")? {
        o.io_queue_depth = u16::try_from(n)
            .ok()
            .filter(|&q| q >= 2)
            .ok_or_else(|| invalid(&qd, format!("{n} is not in 2..=65535")))?;
    }
    let iq = p.field_path("io_queues");
    if let Some(n) = p.opt_u64("io_queues")? {
        o.io_queues = u16::try_from(n)
            .ok()
            .filter(|&q| q >= 1)
            .ok_or_else(|| invalid(&iq, format!("{n} is not in 1..=65535")))?;
    }
    let kp = p.field_path("kato_ms");
    if let Some(n) = p.opt_u64("kato_ms")? {
        o.kato_ms = u32::try_from(n).map_err(|_| invalid(&kp, format!("{n} is too large")))?;
    }
    if let Some(n) = p.opt_u64("reconnect_delay_ms")? {
        o.reconnect_delay = Duration::from_millis(n);
    }
    if let Some(n) = p.opt_u64("ctrl_loss_timeout_ms")? {
        o.ctrl_loss_timeout = Duration::from_millis(n);
    }
    if let Some(n) = p.opt_u64("fast_io_fail_timeout_ms")? {
        o.fast_io_fail_timeout = Duration::from_millis(n);
    }
    if let Some(n) = p.opt_u64("reconnect_delay_max_ms")? {
        o.reconnect_delay_max = Duration::from_millis(n);
    }
    if let Some(n) = p.opt_u64("io_timeout_ms")? {
        o.io_timeout = Duration::from_millis(n);
    }
    // TCP congestion control of the connections (e.g. "reno"; default: the system's).
    let cc_path = p.field_path("tcp_congestion");
    if p.get("tcp_congestion").is_some() {
        let cc = p.string("tcp_congestion")?;
        if cc.len() > 15 || !cc.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            return Err(invalid(&cc_path, format!("'{cc}' is not a congestion control algorithm name")));
        }
        o.tcp_congestion = Some(cc);
    }
    Ok(crate::config::NvmfParams { name, opts: o })
}

fn array<'a>(top: &mut Obj<'a>, key: &'static str) -> Result<&'a [Value], ConfigError> {
    match top.get(key) {
        None => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(other) => Err(invalid(key, format!("expected an array, found {}", kind(other)))),
    }
}

fn lvs_path(path: &str, p: &str) -> Result<(), ConfigError> {
    match p.split_once('/') {
        Some((a, b)) if !a.is_empty() && !b.is_empty() && !b.contains('/') => Ok(()),
        _ => Err(invalid(path, format!("'{p}' is not of the form lvs/name"))),
    }
}

/// Parse `lvol_stores`, `lvol_volumes`, `snapshots` and `clones` (seed 8.2).
pub(crate) fn parse_lvol(top: &mut Obj, c: &mut lvol::module::LvolConfig) -> Result<(), ConfigError> {
    use lvol::module::{CloneConfig, SnapshotConfig, StoreConfig, VolumeConfig};
    for (i, v) in array(top, "lvol_stores")?.iter().enumerate() {
        let path = format!("lvol_stores[{i}]");
        let mut o = Obj::new(&path, v)?;
        let name = o.string("name")?;
        let base_bdev = o.string("base_bdev")?;
        let csp = o.field_path("cluster_size");
        let cluster_size = match o.opt_u64("cluster_size")? {
            None => 4 << 20,
            Some(n) if n.is_power_of_two() && n >= 4096 => n,
            Some(n) => return Err(invalid(&csp, format!("{n} is not a power of two of at least 4096"))),
        };
        let no_space_timeout_ms = o.opt_u64("no_space_timeout_ms")?;
        o.finish()?;
        if let Some(j) = c.lvol_stores.iter().position(|s| s.name == name) {
            return Err(invalid(
                &format!("{path}.name"),
                format!("duplicate store name '{name}' (also lvol_stores[{j}])"),
            ));
        }
        c.lvol_stores.push(StoreConfig { name, base_bdev, cluster_size, no_space_timeout_ms });
    }
    for (i, v) in array(top, "lvol_volumes")?.iter().enumerate() {
        let path = format!("lvol_volumes[{i}]");
        let mut o = Obj::new(&path, v)?;
        let name = o.string("name")?;
        let lvs_name = o.string("lvs_name")?;
        let szp = o.field_path("size_mb");
        let size_mb = match o.opt_u64("size_mb")? {
            Some(n) if n > 0 => n,
            _ => return Err(invalid(&szp, "expected a size in MiB of at least 1")),
        };
        let thin_provision = o.opt_bool("thin_provision")?.unwrap_or(false);
        let clp = o.field_path("compression_level");
        let compression_level = match o.opt_u64("compression_level")? {
            None => 0,
            Some(n @ 0..=9) => n as u8,
            Some(n) => return Err(invalid(&clp, format!("{n} is not in 0..=9"))),
        };
        let key_ref = match o.get("key_ref") {
            Some(Value::String(k)) => Some(k.clone()),
            _ => None,
        };
        o.finish()?;
        if let Some(j) = c.lvol_volumes.iter().position(|x| x.name == name && x.lvs_name == lvs_name) {
            return Err(invalid(
                &format!("{path}.name"),
                format!("duplicate volume '{lvs_name}/{name}' (also lvol_volumes[{j}])"),
            ));
        }
        c.lvol_volumes.push(VolumeConfig { name, lvs_name, size_mb, thin_provision, compression_level, key_ref });
    }
    for (i, v) in array(top, "snapshots")?.iter().enumerate() {
        let path = format!("snapshots[{i}]");
        let mut o = Obj::new(&path, v)?;
        let source_vol = o.string("source_vol")?;
        lvs_path(&o.field_path("source_vol"), &source_vol)?;
        let name = o.string("name")?;
        o.finish()?;
        c.snapshots.push(SnapshotConfig { source_vol, name });
    }
    for (i, v) in array(top, "clones")?.iter().enumerate() {
        let path = format!("clones[{i}]");
        let mut o = Obj::new(&path, v)?;
        let source_snap = o.string("source_snap")?;
        lvs_path(&o.field_path("source_snap"), &source_snap)?;
        let name = o.string("name")?;
        o.finish()?;
        c.clones.push(CloneConfig { source_snap, name });
    }
    Ok(())
}

fn volume_exists(lv: &lvol::Lvol, lvs: &str, name: &str) -> bool {
    lv.store(lvs).map(|s| s.volumes().iter().any(|v| v.name == name)).unwrap_or(false)
}

/// Create what the lvol sections describe. Stores and volumes already loaded from disk (by the
/// examine hook) are kept as they are, so a saved config loads again over the same disks.
pub(crate) fn apply_lvol(lv: &lvol::Lvol, c: &lvol::module::LvolConfig) -> Result<(), ConfigError> {
    let at = |path: String, e: lvol::LvolError| invalid(&path, e.to_string());
    for (i, s) in c.lvol_stores.iter().enumerate() {
        if lv.store(&s.name).is_err() {
            lv.lvs_create(&s.base_bdev, &s.name, s.cluster_size).map_err(|e| at(format!("lvol_stores[{i}]"), e))?;
        }
        if let Some(ms) = s.no_space_timeout_ms {
            let store = lv.store(&s.name).map_err(|e| at(format!("lvol_stores[{i}]"), e))?;
            store.set_no_space_timeout(std::time::Duration::from_millis(ms));
        }
    }
    for (i, v) in c.lvol_volumes.iter().enumerate() {
        let path = format!("lvol_volumes[{i}]");
        if lv.store(&v.lvs_name).is_err() {
            return Err(invalid(&format!("{path}.lvs_name"), format!("no lvol store named '{}'", v.lvs_name)));
        }
        if !volume_exists(lv, &v.lvs_name, &v.name) {
            lv.lvol_create(&v.lvs_name, &v.name, v.size_mb, v.thin_provision).map_err(|e| at(path.clone(), e))?;
            if v.compression_level > 0 {
                lv.compression_enable(&format!("{}/{}", v.lvs_name, v.name), v.compression_level)
                    .map_err(|e| at(path.clone(), e))?;
            }
        }
    }
    for (i, s) in c.snapshots.iter().enumerate() {
        let lvs = s.source_vol.split('/').next().unwrap_or_default();
        if !volume_exists(lv, lvs, &s.name) {
            lv.snapshot_create(&s.source_vol, &s.name).map_err(|e| at(format!("snapshots[{i}]"), e))?;
        }
    }
    for (i, cl) in c.clones.iter().enumerate() {
        let lvs = cl.source_snap.split('/').next().unwrap_or_default();
        if !volume_exists(lv, lvs, &cl.name) {
            lv.clone_create(&cl.source_snap, &cl.name).map_err(|e| at(format!("clones[{i}]"), e))?;
        }
    }
    Ok(())
}

/// One `raid_devices` entry.
#[derive(Clone, Debug)]
pub struct RaidEntry {
    /// Array (bdev) name.
    pub name: String,
    /// RAID level.
    pub level: raid::Level,
    /// Active members, in role order.
    pub base_bdevs: Vec<String>,
    /// Hot spares.
    pub spares: Vec<String>,
    /// Members failed right after creation (mdadm `--fail`), to run the
    /// array degraded.
    pub faulty: Vec<String>,
    /// md creation options.
    pub cfg: raid::array::MdConfig,
}

fn names(path: &str, v: &Value) -> Result<Vec<String>, ConfigError> {
    let a = v.as_array().ok_or_else(|| invalid(path, format!("expected an array of bdev names, found {}", kind(v))))?;
    a.iter()
        .enumerate()
        .map(|(i, x)| {
            x.as_str()
                .filter(|s| !s.is_empty())
                .map(String::from)
                .ok_or_else(|| invalid(&format!("{path}[{i}]"), format!("expected a bdev name, found {}", kind(x))))
        })
        .collect()
}

/// Parse `raid_devices` (seed 8.2: `method` raid0/raid1/raid4/raid5/raid6/raid10/linear,
/// `params` name, base_bdevs, strip_size_kb, spares; also layout,
/// assume_clean, bitmap_chunk_kb and faulty: members to fail at once).
pub(crate) fn parse_raid(v: &Value) -> Result<Vec<RaidEntry>, ConfigError> {
    use raid::Level;
    let arr = v.as_array().ok_or_else(|| invalid("raid_devices", format!("expected an array, found {}", kind(v))))?;
    let mut out: Vec<RaidEntry> = Vec::new();
    for (i, d) in arr.iter().enumerate() {
        let path = format!("raid_devices[{i}]");
        let mut o = Obj::new(&path, d)?;
        let mp = o.field_path("method");
        let method = o.string("method")?;
        let level = match method.as_str() {
            "linear" => Level::Linear,
            "raid0" => Level::Raid0,
            "raid1" => Level::Raid1,
            "raid4" => Level::Raid4,
            "raid5" => Level::Raid5,
            "raid6" => Level::Raid6,
            "raid10" => Level::Raid10,
            m => {
                return Err(invalid(
                    &mp,
                    format!(
                        "unknown method '{m}' (expected one of: linear, raid0, raid1, raid4, raid5, raid6, raid10)"
                    ),
                ))
            }
        };
        let pp = o.field_path("params");
        let params = o.req("params")?;
        o.finish()?;
        let mut p = Obj::new(&pp, params)?;
        let name = p.string("name")?;
        let bp = p.field_path("base_bdevs");
        let base_bdevs = names(&bp, p.req("base_bdevs")?)?;
        let min = match level {
            Level::Linear | Level::Raid0 | Level::Raid1 => 1,
            Level::Raid4 | Level::Raid5 => 3,
            Level::Raid6 => 4,
            Level::Raid10 => 2,
        };
        if base_bdevs.len() < min {
            return Err(invalid(&bp, format!("{method} needs at least {min} members, {} given", base_bdevs.len())));
        }
        let sp = p.field_path("spares");
        let spares = match p.get("spares") {
            None => Vec::new(),
            Some(v) => names(&sp, v)?,
        };
        let mut cfg = raid::array::MdConfig::default();
        let cp = p.field_path("strip_size_kb");
        if let Some(k) = p.opt_u64("strip_size_kb")? {
            if !k.is_power_of_two() || !(4..=1 << 20).contains(&k) {
                return Err(invalid(&cp, format!("{k} KiB is not a power of two of at least 4")));
            }
            cfg.chunk_kib = k as u32;
        }
        let lp = p.field_path("layout");
        if let Some(l) = p.opt_u64("layout")? {
            cfg.layout = Some(u32::try_from(l).map_err(|_| invalid(&lp, format!("{l} is too large")))?);
        }
        cfg.assume_clean = p.opt_bool("assume_clean")?.unwrap_or(false);
        let bcp = p.field_path("bitmap_chunk_kb");
        if let Some(k) = p.opt_u64("bitmap_chunk_kb")? {
            cfg.bitmap_chunk_kib = Some(u32::try_from(k).map_err(|_| invalid(&bcp, format!("{k} is too large")))?);
        }
        let fp = p.field_path("faulty");
        let faulty = match p.get("faulty") {
            None => Vec::new(),
            Some(v) => names(&fp, v)?,
        };
        if let Some(f) = faulty.iter().find(|f| !base_bdevs.contains(f)) {
            return Err(invalid(&fp, format!("'{f}' is not one of the base_bdevs")));
        }
        p.finish()?;
        let mut all = base_bdevs.clone();
        all.extend(spares.iter().cloned());
        for (j, m) in all.iter().enumerate() {
            if all[..j].contains(m) {
                return Err(invalid(&bp, format!("bdev '{m}' is listed twice")));
            }
        }
        if let Some(j) = out.iter().position(|e| e.name == name) {
            return Err(invalid(
                &format!("{pp}.name"),
                format!("duplicate array name '{name}' (also raid_devices[{j}])"),
            ));
        }
        cfg.spares = spares.len();
        out.push(RaidEntry { name, level, base_bdevs, spares, faulty, cfg });
    }
    Ok(out)
}
