//! The JSON configuration (seed section 8.2) and `save_config`.
//!
//! Every error names the JSON path of the offending value (`base_devices[2].params.filename`)
//! and what was expected. Sections and methods of later layers are recognised and refused
//! with a clear message until their module is built in.

use bdev::backends::aio::AioParams;
use bdev::backends::malloc::MallocParams;
use bdev::backends::null::NullParams;
use reactor::{IdlePolicy, ReactorConfig};
use serde_json::{Map, Value};
use std::time::Duration;

/// A configuration error, with the JSON path it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The text is not JSON.
    #[error("config is not valid JSON: {0}")]
    Syntax(#[source] serde_json::Error),
    /// A value is wrong.
    #[error("{path}: {message}")]
    Invalid {
        /// JSON path, e.g. `base_devices[2].params.filename`.
        path: String,
        /// What is wrong and what was expected.
        message: String,
    },
    /// The config file could not be read or written.
    #[error("cannot access config file '{path}'")]
    File {
        /// File path.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

pub(crate) fn invalid(path: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { path: path.to_string(), message: message.into() }
}

/// Reactor settings (`"reactor": {"cores": [0, 1], "idle": "adaptive"|"poll", "pin": true}`).
#[derive(Clone, Debug)]
pub struct ReactorSettings {
    /// CPU ids.
    pub cores: Vec<usize>,
    /// Idle policy.
    pub idle: IdlePolicy,
    /// Pin reactors to their CPUs.
    pub pin: bool,
}

impl Default for ReactorSettings {
    fn default() -> Self {
        ReactorSettings { cores: vec![0], idle: IdlePolicy::default(), pin: true }
    }
}

impl ReactorSettings {
    /// As a reactor crate configuration.
    pub fn to_reactor_config(&self) -> ReactorConfig {
        ReactorConfig { cores: self.cores.clone(), pin: self.pin, idle: self.idle }
    }
}

/// One entry of `base_devices`.
#[derive(Clone, Debug)]
pub enum BaseDevice {
    /// `malloc`: a RAM disk.
    Malloc(MallocParams),
    /// `null`: a bdev that stores nothing.
    Null(NullParams),
    /// `aio`: a file or block device through io_uring.
    Aio(AioParams),
    /// `nvme`: a local NVMe controller driven from user space (one bdev per namespace).
    Nvme(NvmePciParams),
    /// `nvmf`: a remote NVMe/TCP subsystem (one bdev per namespace).
    Nvmf(NvmfParams),
}

/// Parameters of the `nvmf` method (seed `xbdev_config_nvmf`).
#[derive(Clone, Debug)]
pub struct NvmfParams {
    /// Controller name: its namespaces become `<name>n<nsid>`.
    pub name: String,
    /// Connection options (address, NQNs, digests, queues, timeouts).
    pub opts: nvme_tcp::initiator::ConnectOpts,
}

/// Parameters of the `nvme` method (seed `xbdev_config_nvme`).
#[derive(Clone, Debug)]
pub struct NvmePciParams {
    /// Controller name: its namespaces become `<name>n<nsid>`.
    pub name: String,
    /// PCI address, `dddd:bb:dd.f`.
    pub pci_addr: String,
    /// `vfio` (IOMMU, default) or `uio` (no IOMMU: no DMA isolation).
    pub mode: nvme_pcie::vfio::AccessMode,
    /// Queue depth of each reactor's queue pair.
    pub queue_depth: u16,
    /// IO queue pairs to ask the controller for.
    pub io_queues: u16,
}

impl BaseDevice {
    /// The device's name.
    pub fn name(&self) -> &str {
        match self {
            BaseDevice::Malloc(p) => &p.name,
            BaseDevice::Null(p) => &p.name,
            BaseDevice::Aio(p) => &p.name,
            BaseDevice::Nvme(p) => &p.name,
            BaseDevice::Nvmf(p) => &p.name,
        }
    }
}

/// A whole configuration.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// Reactor cores and idle policy.
    pub reactor: ReactorSettings,
    /// Base devices, created in order.
    pub base_devices: Vec<BaseDevice>,
    /// Multipath devices over base devices (`multipath_devices`).
    pub multipath_devices: Vec<multipath::MultipathParams>,
    /// Logical volume stores, volumes, snapshots and clones.
    pub lvol: lvol::module::LvolConfig,
    /// md-compatible RAID arrays (`raid_devices`).
    pub raid_devices: Vec<crate::config_stack::RaidEntry>,
}

/// Sections of the seed's format that later modules implement.
const LATER_METHODS: &[(&str, &str)] = &[("rbd", "the Ceph RBD backend")];

/// The base-device methods this build knows.
const METHODS: &str = "malloc, null, aio, nvme, nvmf";

/// Typed access to one JSON object, tracking its path and which keys were used.
pub(crate) struct Obj<'a> {
    pub(crate) path: String,
    map: &'a Map<String, Value>,
    used: Vec<&'static str>,
}

impl<'a> Obj<'a> {
    pub(crate) fn new(path: &str, v: &'a Value) -> Result<Obj<'a>, ConfigError> {
        match v {
            Value::Object(map) => Ok(Obj { path: path.to_string(), map, used: Vec::new() }),
            other => Err(invalid(path, format!("expected an object, found {}", kind(other)))),
        }
    }

    pub(crate) fn field_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The raw value of `key`, null included (marks the key used).
    pub(crate) fn map_get(&mut self, key: &'static str) -> Option<&'a Value> {
        self.used.push(key);
        self.map.get(key)
    }

    pub(crate) fn get(&mut self, key: &'static str) -> Option<&'a Value> {
        self.used.push(key);
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub(crate) fn req(&mut self, key: &'static str) -> Result<&'a Value, ConfigError> {
        let p = self.field_path(key);
        self.get(key).ok_or_else(|| invalid(&p, "missing required field"))
    }

    pub(crate) fn string(&mut self, key: &'static str) -> Result<String, ConfigError> {
        let p = self.field_path(key);
        match self.req(key)? {
            Value::String(s) if !s.is_empty() => Ok(s.clone()),
            Value::String(_) => Err(invalid(&p, "expected a non-empty string")),
            other => Err(invalid(&p, format!("expected a string, found {}", kind(other)))),
        }
    }

    pub(crate) fn opt_u64(&mut self, key: &'static str) -> Result<Option<u64>, ConfigError> {
        let p = self.field_path(key);
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => {
                n.as_u64().map(Some).ok_or_else(|| invalid(&p, format!("expected a non-negative integer, found {n}")))
            }
            Some(other) => Err(invalid(&p, format!("expected an integer, found {}", kind(other)))),
        }
    }

    pub(crate) fn opt_bool(&mut self, key: &'static str) -> Result<Option<bool>, ConfigError> {
        let p = self.field_path(key);
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(invalid(&p, format!("expected true or false, found {}", kind(other)))),
        }
    }

    /// Refuse keys nobody asked for.
    pub(crate) fn finish(self) -> Result<(), ConfigError> {
        for k in self.map.keys() {
            if !self.used.iter().any(|u| u == k) {
                let mut known: Vec<&str> = self.used.clone();
                known.sort_unstable();
                known.dedup();
                return Err(invalid(
                    &self.field_path(k),
                    format!("unknown field (expected one of: {})", known.join(", ")),
                ));
            }
        }
        Ok(())
    }
}

pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn block_size(o: &mut Obj, default: u32) -> Result<u32, ConfigError> {
    let p = o.field_path("block_size");
    match o.opt_u64("block_size")? {
        None => Ok(default),
        Some(b @ (512 | 4096)) => Ok(b as u32),
        Some(b) => Err(invalid(&p, format!("{b} is not a supported block size (expected 512 or 4096)"))),
    }
}

/// Size in blocks from `num_blocks` or `size_mb` (exactly one of them).
fn num_blocks(o: &mut Obj, bs: u32) -> Result<u64, ConfigError> {
    let nb = o.opt_u64("num_blocks")?;
    let mb = o.opt_u64("size_mb")?;
    match (nb, mb) {
        (Some(_), Some(_)) => Err(invalid(&o.path, "give either num_blocks or size_mb, not both")),
        (None, None) => Err(invalid(&o.path, "missing size: give num_blocks or size_mb")),
        (Some(0), _) => Err(invalid(&o.field_path("num_blocks"), "must be at least 1")),
        (Some(n), None) => Ok(n),
        (None, Some(0)) => Err(invalid(&o.field_path("size_mb"), "must be at least 1")),
        (None, Some(m)) => m
            .checked_mul(1 << 20)
            .map(|b| b / bs as u64)
            .ok_or_else(|| invalid(&o.field_path("size_mb"), format!("{m} MiB is too large"))),
    }
}

fn parse_base_device(path: &str, v: &Value) -> Result<BaseDevice, ConfigError> {
    let mut o = Obj::new(path, v)?;
    let method_path = o.field_path("method");
    let method = o.string("method")?;
    let params_path = o.field_path("params");
    let params = o.req("params")?;
    o.finish()?;
    let mut p = Obj::new(&params_path, params)?;
    let dev = match method.as_str() {
        "malloc" => {
            let name = p.string("name")?;
            let bs = block_size(&mut p, 512)?;
            let nb = num_blocks(&mut p, bs)?;
            BaseDevice::Malloc(MallocParams { name, num_blocks: nb, block_size: bs })
        }
        "null" => {
            let name = p.string("name")?;
            let bs = block_size(&mut p, 512)?;
            let nb = num_blocks(&mut p, bs)?;
            let zero_reads = p.opt_bool("zero_reads")?.unwrap_or(true);
            BaseDevice::Null(NullParams { name, num_blocks: nb, block_size: bs, zero_reads })
        }
        "aio" => {
            let name = p.string("name")?;
            let filename = p.string("filename")?;
            let mut a = AioParams::new(&name, &filename);
            let bsp = p.field_path("block_size");
            a.block_size = match p.opt_u64("block_size")? {
                None => None,
                Some(b) if b.is_power_of_two() && (512..=65536).contains(&b) => Some(b as u32),
                Some(b) => return Err(invalid(&bsp, format!("{b} is not a power of two in 512..=65536"))),
            };
            a.buffered = p.opt_bool("buffered")?.unwrap_or(false);
            a.readonly = p.opt_bool("readonly")?.unwrap_or(false);
            let qp = p.field_path("queue_depth");
            if let Some(q) = p.opt_u64("queue_depth")? {
                if !(1..=32768).contains(&q) {
                    return Err(invalid(&qp, format!("{q} is not in 1..=32768")));
                }
                a.queue_depth = q as u32;
            }
            BaseDevice::Aio(a)
        }
        "nvme" => {
            let name = p.string("name")?;
            let addr_path = p.field_path("pci_addr");
            let pci_addr = p.string("pci_addr")?;
            let ok = pci_addr.len() == 12
                && pci_addr.bytes().enumerate().all(|(i, c)| match i {
                    4 | 7 => c == b':',
                    10 => c == b'.',
                    _ => c.is_ascii_hexdigit(),
                });
            if !ok {
                return Err(invalid(&addr_path, format!("'{pci_addr}' is not a PCI address like 0000:01:00.0")));
            }
            let mode_path = p.field_path("mode");
            let mode = match p.get("mode") {
                None => nvme_pcie::vfio::AccessMode::Vfio,
                Some(Value::String(m)) => nvme_pcie::vfio::AccessMode::parse(m)
                    .ok_or_else(|| invalid(&mode_path, format!("'{m}' is not vfio or uio")))?,
                Some(o) => return Err(invalid(&mode_path, format!("expected \"vfio\" or \"uio\", found {}", kind(o)))),
            };
            let qd_path = p.field_path("queue_depth");
            let queue_depth = match p.opt_u64("queue_depth")? {
                None => 256,
                Some(q @ 2..=65536) => q.min(65535) as u16,
                Some(q) => return Err(invalid(&qd_path, format!("{q} is not in 2..=65536"))),
            };
            let iq_path = p.field_path("io_queues");
            let io_queues = match p.opt_u64("io_queues")? {
                None => 8,
                Some(q @ 1..=65535) => q as u16,
                Some(q) => return Err(invalid(&iq_path, format!("{q} is not in 1..=65535"))),
            };
            BaseDevice::Nvme(NvmePciParams { name, pci_addr, mode, queue_depth, io_queues })
        }
        "nvmf" => BaseDevice::Nvmf(crate::config_stack::parse_nvmf(&mut p)?),
        m => {
            if let Some((_, module)) = LATER_METHODS.iter().find(|(n, _)| *n == m) {
                return Err(invalid(
                    &method_path,
                    format!("method '{m}' needs {module}, which this build does not include yet"),
                ));
            }
            return Err(invalid(&method_path, format!("unknown method '{m}' (expected one of: {METHODS})")));
        }
    };
    p.finish()?;
    Ok(dev)
}

fn parse_reactor(v: &Value) -> Result<ReactorSettings, ConfigError> {
    let mut o = Obj::new("reactor", v)?;
    let mut s = ReactorSettings::default();
    let cores_path = o.field_path("cores");
    let mask_path = o.field_path("core_mask");
    match (o.get("cores"), o.get("core_mask")) {
        (Some(_), Some(_)) => return Err(invalid("reactor", "give either cores or core_mask, not both")),
        (Some(Value::Array(a)), None) => {
            s.cores = a
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    c.as_u64().map(|c| c as usize).ok_or_else(|| {
                        invalid(&format!("{cores_path}[{i}]"), format!("expected a CPU number, found {}", kind(c)))
                    })
                })
                .collect::<Result<_, _>>()?;
            if s.cores.is_empty() {
                return Err(invalid(&cores_path, "expected at least one core"));
            }
        }
        (Some(other), None) => return Err(invalid(&cores_path, format!("expected an array, found {}", kind(other)))),
        (None, Some(m)) => {
            let mask =
                parse_mask(m).ok_or_else(|| invalid(&mask_path, "expected a mask like \"0x3\" or an integer"))?;
            s.cores = ReactorConfig::from_mask(mask).cores;
            if s.cores.is_empty() {
                return Err(invalid(&mask_path, "the mask selects no core"));
            }
        }
        (None, None) => {}
    }
    let idle_path = o.field_path("idle");
    if let Some(v) = o.get("idle") {
        s.idle = match v.as_str() {
            Some("poll") => IdlePolicy::AlwaysPoll,
            Some("adaptive") => IdlePolicy::default(),
            _ => return Err(invalid(&idle_path, format!("expected \"adaptive\" or \"poll\", found {v}"))),
        };
    }
    if let IdlePolicy::Adaptive { spin, max_sleep } = &mut s.idle {
        if let Some(us) = o.opt_u64("spin_us")? {
            *spin = Duration::from_micros(us);
        }
        if let Some(ms) = o.opt_u64("max_sleep_ms")? {
            *max_sleep = Duration::from_millis(ms.max(1));
        }
    }
    if let Some(pin) = o.opt_bool("pin")? {
        s.pin = pin;
    }
    o.finish()?;
    Ok(s)
}

fn parse_mask(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => {
            let s = s.trim();
            match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
                Some(h) => u64::from_str_radix(h, 16).ok(),
                None => s.parse().ok(),
            }
        }
        _ => None,
    }
}

impl Config {
    /// Parse a configuration from JSON text.
    pub fn from_json_str(text: &str) -> Result<Config, ConfigError> {
        let v: Value = serde_json::from_str(text).map_err(ConfigError::Syntax)?;
        Config::from_value(&v)
    }

    /// Read and parse a configuration file.
    pub fn from_file(path: &str) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::File { path: path.to_string(), source })?;
        Config::from_json_str(&text)
    }

    /// Parse a configuration from a JSON value.
    pub fn from_value(v: &Value) -> Result<Config, ConfigError> {
        let mut top = Obj::new("", v)?;
        let mut cfg = Config::default();
        if let Some(r) = top.get("reactor") {
            cfg.reactor = parse_reactor(r)?;
        }
        if let Some(b) = top.get("base_devices") {
            let arr =
                b.as_array().ok_or_else(|| invalid("base_devices", format!("expected an array, found {}", kind(b))))?;
            for (i, d) in arr.iter().enumerate() {
                let dev = parse_base_device(&format!("base_devices[{i}]"), d)?;
                if let Some(j) = cfg.base_devices.iter().position(|x| x.name() == dev.name()) {
                    return Err(invalid(
                        &format!("base_devices[{i}].params.name"),
                        format!("duplicate device name '{}' (also base_devices[{j}])", dev.name()),
                    ));
                }
                cfg.base_devices.push(dev);
            }
        }
        if let Some(r) = top.get("raid_devices") {
            cfg.raid_devices = crate::config_stack::parse_raid(r)?;
        }
        crate::config_stack::parse_lvol(&mut top, &mut cfg.lvol)?;
        if let Some(m) = top.get("multipath_devices") {
            cfg.multipath_devices = crate::config_stack::parse_multipath(m)?;
        }
        top.finish()?;
        Ok(cfg)
    }

    /// The embedded default: one reactor and a 1 GiB malloc bdev `Malloc0` with 4 KiB blocks.
    pub fn default_perf() -> Config {
        Config {
            reactor: ReactorSettings { cores: vec![0], pin: false, idle: IdlePolicy::default() },
            base_devices: vec![BaseDevice::Malloc(MallocParams {
                name: "Malloc0".into(),
                num_blocks: (1 << 30) / 4096,
                block_size: 4096,
            })],
            ..Default::default()
        }
    }
}

/// Build the JSON of a running instance's devices, in a form [`Config::from_json_str`] accepts:
/// `devices` holds `(product, params JSON)` of every bdev that came from the config.
pub(crate) fn save_value(reactor: &ReactorSettings, devices: &[(String, String)]) -> Value {
    let mut top = Map::new();
    let mut r = Map::new();
    r.insert("cores".into(), Value::from(reactor.cores.clone()));
    r.insert(
        "idle".into(),
        Value::from(match reactor.idle {
            IdlePolicy::AlwaysPoll => "poll",
            IdlePolicy::Adaptive { .. } => "adaptive",
        }),
    );
    r.insert("pin".into(), Value::from(reactor.pin));
    top.insert("reactor".into(), Value::Object(r));
    let mut seen: Vec<&(String, String)> = Vec::new();
    let mut sections: Vec<(&'static str, Vec<Value>)> = vec![("base_devices", Vec::new())];
    for d in devices {
        // A controller with several namespaces appears once.
        if seen.contains(&d) {
            continue;
        }
        seen.push(d);
        let (product, params) = d;
        let Ok(params) = serde_json::from_str::<Value>(params) else { continue };
        let (section, entry) = crate::config_stack::section_entry(product, params);
        match sections.iter_mut().find(|(n, _)| *n == section) {
            Some((_, v)) => v.push(entry),
            None => sections.push((section, vec![entry])),
        }
    }
    for (name, entries) in sections {
        top.insert(name.into(), Value::Array(entries));
    }
    Value::Object(top)
}

/// Add the lvol sections to a saved configuration.
pub(crate) fn save_lvol(top: &mut Value, c: &lvol::module::LvolConfig) {
    let Some(top) = top.as_object_mut() else { return };
    let stores: Vec<Value> = c
        .lvol_stores
        .iter()
        .map(|s| {
            let mut v = serde_json::json!({"name": s.name, "base_bdev": s.base_bdev, "cluster_size": s.cluster_size});
            if let (Some(ms), Some(o)) = (s.no_space_timeout_ms, v.as_object_mut()) {
                o.insert("no_space_timeout_ms".into(), ms.into());
            }
            v
        })
        .collect();
    let vols: Vec<Value> = c
        .lvol_volumes
        .iter()
        .map(|v| {
            let mut o = serde_json::json!({"name": v.name, "lvs_name": v.lvs_name, "size_mb": v.size_mb,
                                           "thin_provision": v.thin_provision});
            if v.compression_level > 0 {
                o["compression_level"] = Value::from(v.compression_level);
            }
            if let Some(k) = &v.key_ref {
                o["key_ref"] = Value::from(k.as_str());
            }
            o
        })
        .collect();
    let snaps: Vec<Value> =
        c.snapshots.iter().map(|s| serde_json::json!({"source_vol": s.source_vol, "name": s.name})).collect();
    let clones: Vec<Value> =
        c.clones.iter().map(|s| serde_json::json!({"source_snap": s.source_snap, "name": s.name})).collect();
    top.insert("lvol_stores".into(), Value::Array(stores));
    top.insert("lvol_volumes".into(), Value::Array(vols));
    top.insert("snapshots".into(), Value::Array(snaps));
    top.insert("clones".into(), Value::Array(clones));
}
