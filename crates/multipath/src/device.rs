//! [`MultipathBdev`]: the bdev users see, and its control API.

use crate::channel::MpChannel;
use crate::config::{MultipathOptions, MultipathParams, PathParams, Policy};
use crate::event::{EventHub, PathEventCallback};
use crate::group::{check_identity, Group};
use crate::identity::{self, IdMatch};
use crate::path::PathInfo;
use crate::MultipathError;
use bdev::{Bdev, BdevError, BdevInfo, IoChannel, IoTypeSet, NamespaceId, Registry, Uuid};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// A multipath bdev: one namespace reached through several path bdevs.
pub struct MultipathBdev {
    group: Arc<Group>,
}

/// The description of a multipath bdev over the path bdevs `paths` (already checked to be
/// one namespace): the strictest alignment and IO size, the common IO types.
fn combined_info(name: Option<&str>, paths: &[BdevInfo]) -> Result<BdevInfo, MultipathError> {
    let first = paths.first().ok_or_else(|| MultipathError::NoPaths(name.unwrap_or_default().to_string()))?;
    let mut ns = first.ns_id;
    for p in &paths[1..] {
        ns = identity::merge(&ns, &p.ns_id);
    }
    let ns_uuid = identity::namespace_uuid(&ns);
    let name = match name {
        Some(n) => n.to_string(),
        None => format!("mp-{ns_uuid}"),
    };
    let mut supported = IoTypeSet::ALL;
    for p in paths {
        supported = IoTypeSet::ALL
            .iter()
            .filter(|t| supported.contains(*t) && p.supported.contains(*t))
            .fold(IoTypeSet::NONE, |s, t| s.with(t));
    }
    let mut info = BdevInfo::new(&name, "multipath", first.block_size, first.num_blocks, supported);
    info.uuid = if ns_uuid.is_nil() { Uuid::random() } else { ns_uuid };
    info.required_alignment = paths.iter().map(|p| p.required_alignment.max(1)).max().unwrap_or(1);
    info.optimal_io_boundary = first.optimal_io_boundary;
    info.max_io_blocks = paths.iter().map(|p| p.max_io_blocks).filter(|&m| m != 0).min().unwrap_or(0);
    info.unmap_zeroes = paths.iter().all(|p| p.unmap_zeroes);
    info.volatile_cache = paths.iter().any(|p| p.volatile_cache);
    info.ns_id = ns;
    Ok(info)
}

impl MultipathBdev {
    /// Build the device from `params`, claim its paths and register it.
    pub(crate) fn create(
        registry: &Registry,
        params: &MultipathParams,
        configured: bool,
        module_events: Option<Arc<EventHub>>,
    ) -> Result<Arc<MultipathBdev>, MultipathError> {
        params.validate()?;
        let mut infos: Vec<BdevInfo> = Vec::with_capacity(params.paths.len());
        for p in &params.paths {
            let b = registry.lookup(&p.bdev).ok_or_else(|| MultipathError::Open {
                path: p.bdev.clone(),
                source: BdevError::NotFound(p.bdev.clone()),
            })?;
            let info = b.info().clone();
            if !identity::has_identity(&info.ns_id) {
                return Err(MultipathError::NoIdentity { path: info.name });
            }
            if let Some(first) = infos.first() {
                let dev =
                    params.name.clone().unwrap_or_else(|| format!("mp-{}", identity::namespace_uuid(&first.ns_id)));
                let mismatch =
                    |reason: String| MultipathError::Mismatch { device: dev.clone(), path: info.name.clone(), reason };
                let mut ns = first.ns_id;
                for i in &infos[1..] {
                    ns = identity::merge(&ns, &i.ns_id);
                }
                check_identity(&ns, &info).map_err(mismatch)?;
                if info.block_size != first.block_size {
                    return Err(mismatch(format!(
                        "block size {} differs from {} of path '{}'",
                        info.block_size, first.block_size, first.name
                    )));
                }
                if info.num_blocks != first.num_blocks {
                    return Err(mismatch(format!(
                        "size of {} blocks differs from {} of path '{}'",
                        info.num_blocks, first.num_blocks, first.name
                    )));
                }
            }
            infos.push(info);
        }
        let info = combined_info(params.name.as_deref(), &infos)?;
        if registry.lookup(&info.name).is_some() {
            return Err(MultipathError::Exists(info.name));
        }
        let group = Arc::new(Group::new(info, params.options.clone(), configured, module_events));
        for p in &params.paths {
            if let Err(e) = group.add_path(registry, p) {
                group.shutdown();
                return Err(e);
            }
        }
        let dev = Arc::new(MultipathBdev { group });
        if let Err(source) = registry.register(dev.clone()) {
            dev.group.shutdown();
            return Err(match source {
                BdevError::Exists(n) => MultipathError::Exists(n),
                source => MultipathError::Registry { name: dev.group.info.name.clone(), source },
            });
        }
        log::info!(
            "multipath {}: created over {} path(s), policy {}",
            dev.name(),
            params.paths.len(),
            params.options.policy.name()
        );
        Ok(dev)
    }

    /// The device name.
    pub fn name(&self) -> &str {
        self.group.name()
    }

    /// The namespace identity the paths share (grown as paths report more identifiers).
    pub fn namespace_id(&self) -> NamespaceId {
        self.group.identity()
    }

    /// Whether `info` names this device's namespace (used by auto-assembly).
    pub(crate) fn matches(&self, ns: &NamespaceId) -> bool {
        identity::compare(&self.group.identity(), ns) == IdMatch::Same
    }

    /// Whether the device was built by auto-assembly (not from configuration).
    pub fn is_auto_assembled(&self) -> bool {
        !self.group.configured
    }

    /// Whether `path` (a bdev name) is one of the device's paths.
    pub fn has_path(&self, path: &str) -> bool {
        self.group.find(path).is_some()
    }

    /// Whether the device was deleted.
    pub(crate) fn is_shut(&self) -> bool {
        self.group.shut.load(Ordering::Acquire)
    }

    /// Add the path bdev `p.bdev` (claimed and hidden). Refused unless it reports this
    /// device's namespace identity, size and block size, and supports what the device offers.
    pub fn add_path(&self, registry: &Registry, p: PathParams) -> Result<(), MultipathError> {
        self.group.add_path(registry, &p)
    }

    /// Remove a path: no new IO goes to it; its outstanding IO completes; its claim goes.
    pub fn remove_path(&self, path: &str) -> Result<(), MultipathError> {
        self.group.remove_path(path)
    }

    /// Every path with its state and statistics.
    pub fn paths(&self) -> Vec<PathInfo> {
        self.group.path_infos()
    }

    /// One path with its state and statistics.
    pub fn path(&self, path: &str) -> Option<PathInfo> {
        self.group.path_infos().into_iter().find(|p| p.name == path)
    }

    /// The current options.
    pub fn options(&self) -> MultipathOptions {
        self.group.options()
    }

    /// Replace the options (validated); channels pick them up at their next IO.
    pub fn set_options(&self, options: MultipathOptions) -> Result<(), MultipathError> {
        self.group.set_options(options)
    }

    /// The current policy.
    pub fn policy(&self) -> Policy {
        self.group.options().policy
    }

    /// Switch the load-balancing policy; IO in flight is not drained.
    pub fn set_policy(&self, policy: Policy) -> Result<(), MultipathError> {
        self.group.update_options(|o| o.policy = policy)
    }

    /// Set a path's weight for the weighted policy.
    pub fn set_path_weight(&self, path: &str, weight: u32) -> Result<(), MultipathError> {
        self.member(path)?.set_weight(weight);
        Ok(())
    }

    /// Move a path to priority group `group` (0 = active, higher = passive).
    pub fn set_path_group(&self, path: &str, group: u8) -> Result<(), MultipathError> {
        self.member(path)?.set_group(group);
        Ok(())
    }

    /// Empty every path's latency windows now (as the periodic reset does).
    pub fn reset_path_statistics(&self) {
        for p in self.group.paths() {
            p.reset_windows();
        }
    }

    /// Call `cb` for every event of this device's paths; returns an id for
    /// [`MultipathBdev::unsubscribe`].
    pub fn subscribe(&self, cb: PathEventCallback) -> u64 {
        self.group.subscribe(cb)
    }

    /// Stop calling a subscriber; false when the id is unknown.
    pub fn unsubscribe(&self, id: u64) -> bool {
        self.group.unsubscribe(id)
    }

    fn member(&self, path: &str) -> Result<Arc<crate::path::Path>, MultipathError> {
        self.group
            .find(path)
            .ok_or_else(|| MultipathError::NotMember { device: self.name().to_string(), path: path.to_string() })
    }

    /// The device's configuration as `multipath_devices` entry parameters.
    pub fn params(&self) -> MultipathParams {
        MultipathParams {
            name: Some(self.name().to_string()),
            paths: self
                .group
                .paths()
                .iter()
                .map(|p| PathParams { bdev: p.name.clone(), group: p.group(), weight: p.weight() })
                .collect(),
            options: self.group.options(),
        }
    }
}

fn json_us(d: Option<Duration>) -> String {
    match d {
        Some(d) => d.as_micros().to_string(),
        None => "null".into(),
    }
}

/// `params` as the JSON object of a `multipath_devices` entry (see [`MultipathParams`]).
pub fn params_to_json(params: &MultipathParams) -> String {
    let o = &params.options;
    let paths: Vec<String> = params
        .paths
        .iter()
        .map(|p| format!(r#"{{"bdev":{},"group":{},"weight":{}}}"#, bdev::json_str(&p.bdev), p.group, p.weight))
        .collect();
    let policy_params = match o.policy {
        Policy::RoundRobin { ios_per_path } => format!(r#","ios_per_path":{ios_per_path}"#),
        Policy::Hash { region_blocks } => format!(r#","region_blocks":{region_blocks}"#),
        _ => String::new(),
    };
    let name = params.name.as_deref().map(bdev::json_str).unwrap_or_else(|| "null".into());
    format!(
        r#"{{"name":{name},"paths":[{}],"policy":{}{policy_params},"window_ios":{},"stats_reset_interval_us":{},"probe_interval_us":{},"no_path_timeout_us":{},"ana_check_interval_us":{},"stall_timeout_us":{},"queue_depth":{}}}"#,
        paths.join(","),
        bdev::json_str(o.policy.name()),
        o.window_ios,
        json_us(Some(o.stats_reset_interval)),
        json_us(Some(o.probe_interval)),
        json_us(o.no_path_timeout),
        json_us(Some(o.ana_check_interval)),
        json_us(o.stall_timeout),
        o.queue_depth,
    )
}

impl Bdev for MultipathBdev {
    fn info(&self) -> &BdevInfo {
        &self.group.info
    }

    fn open_channel(&self) -> Result<Box<dyn IoChannel>, BdevError> {
        Ok(Box::new(MpChannel::new(self.group.clone())?))
    }

    fn shutdown(&self) {
        self.group.shutdown();
        log::info!("multipath {}: deleted", self.name());
    }

    /// Explicitly configured devices report their `multipath_devices` entry; auto-assembled
    /// ones report `None` (examine builds them again).
    fn config_params(&self) -> Option<String> {
        self.group.configured.then(|| params_to_json(&self.params()))
    }
}

impl std::fmt::Debug for MultipathBdev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MultipathBdev({})", self.name())
    }
}
