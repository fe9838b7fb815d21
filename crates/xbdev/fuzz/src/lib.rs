//! Helpers shared by the xbdev fuzz targets.

use serde_json::Value;
use xbdev::bdev::backends::malloc::MallocBdev;
use xbdev::bdev::backends::null::NullBdev;
use xbdev::bdev::Bdev;
use xbdev::BaseDevice;

/// Whether parsing `v` could do a name lookup (an `nvmf` device whose `addr` is not an IP
/// literal): the config parser resolves addresses, which a fuzzer must not do.
pub fn resolves_names(v: &Value) -> bool {
    match v {
        Value::Object(m) => {
            let addr = m.get("addr").and_then(Value::as_str);
            addr.is_some_and(|a| a.parse::<std::net::IpAddr>().is_err()) || m.values().any(resolves_names)
        }
        Value::Array(a) => a.iter().any(resolves_names),
        _ => false,
    }
}

/// The `params` a device saves itself with (`Bdev::config_params`, what `save_config` writes),
/// for the devices that are cheap to make: null devices and malloc devices up to 1 MiB.
pub fn saved_params(dev: &BaseDevice) -> Option<String> {
    match dev {
        BaseDevice::Null(p) => NullBdev::new(p.clone()).ok()?.config_params(),
        BaseDevice::Malloc(p) if p.num_blocks.saturating_mul(u64::from(p.block_size)) <= 1 << 20 => {
            MallocBdev::new(p.clone()).ok()?.config_params()
        }
        _ => None,
    }
}

/// The value at a config error's path (`a.b[2].c`), its parent when the path names a missing
/// key; `None` when the path does not lead into `v`.
pub fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = v;
    if path.is_empty() {
        return Some(cur);
    }
    let segs: Vec<&str> = path.split('.').collect();
    for (si, seg) in segs.iter().enumerate() {
        let last = si + 1 == segs.len();
        let (key, idx) = match seg.find('[') {
            Some(i) => (&seg[..i], &seg[i..]),
            None => (*seg, ""),
        };
        if !key.is_empty() {
            match cur.get(key) {
                Some(n) => cur = n,
                // A missing required field: its object is there.
                None if last && idx.is_empty() && cur.is_object() => return Some(cur),
                None => return None,
            }
        }
        for part in idx.split('[').skip(1) {
            let i: usize = part.strip_suffix(']')?.parse().ok()?;
            cur = cur.get(i)?;
        }
    }
    Some(cur)
}

/// Whether every object key in `v` is plain (no `.`, `[` or `]`), so error paths split cleanly.
pub fn plain_keys(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.iter().all(|(k, x)| !k.contains(['.', '[', ']']) && plain_keys(x)),
        Value::Array(a) => a.iter().all(plain_keys),
        _ => true,
    }
}
