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
    Ok(crate::config::NvmfParams { name, opts: o })
}
