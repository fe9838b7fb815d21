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
