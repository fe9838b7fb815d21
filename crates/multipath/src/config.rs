//! Configuration: load-balancing policies, device options, and the parameters of an explicitly
//! configured multipath bdev (`multipath_devices` in the JSON config). Plain structs, no serde:
//! the config layer fills them.

use crate::MultipathError;
use std::time::Duration;

/// Largest statistics window (IOs) of the dynamic policies.
pub const MAX_WINDOW_IOS: u32 = 256;
/// Largest number of paths one multipath bdev holds.
pub const MAX_PATHS: usize = 32;
/// Largest per-channel queue depth.
pub const MAX_QUEUE_DEPTH: u32 = 1 << 16;

/// How IO is spread over the usable paths of the preferred priority group.
///
/// Every policy can replace another at run time ([`crate::MultipathBdev::set_policy`]); IO in
/// flight is not drained, the next IO simply uses the new policy.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum Policy {
    /// Take the paths in turn, `ios_per_path` IOs on each before switching (per channel).
    RoundRobin {
        /// IOs sent down one path before moving to the next (at least 1).
        ios_per_path: u32,
    },
    /// A uniformly random path for each IO.
    Random,
    /// A random path with probability proportional to its static weight
    /// ([`crate::MultipathBdev::set_path_weight`]); weight 0 paths get IO only when every
    /// candidate has weight 0.
    Weighted,
    /// A path chosen by hashing the LBA region (`offset / region_blocks`), with rendezvous
    /// hashing: a region keeps its path as long as that path is usable, and only the regions of
    /// a failed path move.
    Hash {
        /// Region size in blocks (at least 1).
        region_blocks: u64,
    },
    /// The path with the lowest average latency over its last `window_ios` IOs of the same
    /// direction (reads and writes are kept apart), multiplied by the IOs the new one would
    /// join there (in flight + 1): idle paths compare by latency alone, and a path that just
    /// took a burst stops winning before its window catches up.
    ServiceTime,
    /// The path with the highest recent throughput: bytes per unit of service time over its last
    /// `window_ios` IOs of the same direction, divided by the IOs the new one would join there
    /// (in flight + 1), as for [`Policy::ServiceTime`].
    AverageRate,
    /// The path with the fewest IOs outstanding, counted over every channel (all reactors).
    /// The default: it did best in the seed's experiments.
    #[default]
    QueueLength,
    /// dm-multipath's historical service time: the path whose expected completion time for
    /// this IO is lowest: its recent service time per byte (IOs overlapping on the path count
    /// as served one after the other) times the bytes it has in flight plus this IO's.
    HistoricalServiceTime,
}

impl Policy {
    /// Policy names, as accepted by [`Policy::from_name`].
    pub const NAMES: [&'static str; 8] = [
        "round_robin",
        "random",
        "weighted",
        "hash",
        "service_time",
        "average_rate",
        "queue_length",
        "historical_service_time",
    ];

    /// Default IOs per path of [`Policy::RoundRobin`].
    pub const DEFAULT_IOS_PER_PATH: u32 = 1;
    /// Default region size of [`Policy::Hash`] in blocks.
    pub const DEFAULT_REGION_BLOCKS: u64 = 2048;

    /// The policy's name.
    pub fn name(&self) -> &'static str {
        match self {
            Policy::RoundRobin { .. } => "round_robin",
            Policy::Random => "random",
            Policy::Weighted => "weighted",
            Policy::Hash { .. } => "hash",
            Policy::ServiceTime => "service_time",
            Policy::AverageRate => "average_rate",
            Policy::QueueLength => "queue_length",
            Policy::HistoricalServiceTime => "historical_service_time",
        }
    }

    /// The policy of that name with default parameters. The seed's short names (`robin`,
    /// `weight`, `time`, `avg_rate`, `queue`) and dm-multipath's (`queue-length`,
    /// `service-time`, `historical-service-time`, `round-robin`) are accepted too.
    pub fn from_name(name: &str) -> Result<Policy, MultipathError> {
        Ok(match name.replace('-', "_").as_str() {
            "round_robin" | "robin" => Policy::RoundRobin { ios_per_path: Self::DEFAULT_IOS_PER_PATH },
            "random" => Policy::Random,
            "weighted" | "weight" => Policy::Weighted,
            "hash" => Policy::Hash { region_blocks: Self::DEFAULT_REGION_BLOCKS },
            "service_time" | "time" => Policy::ServiceTime,
            "average_rate" | "avg_rate" => Policy::AverageRate,
            "queue_length" | "queue" => Policy::QueueLength,
            "historical_service_time" | "hst" => Policy::HistoricalServiceTime,
            _ => return Err(MultipathError::UnknownPolicy(name.to_string())),
        })
    }

    /// Check the policy's parameters.
    pub fn validate(&self) -> Result<(), MultipathError> {
        match *self {
            Policy::RoundRobin { ios_per_path: 0 } => Err(MultipathError::param("ios_per_path", "must be at least 1")),
            Policy::Hash { region_blocks: 0 } => Err(MultipathError::param("region_blocks", "must be at least 1")),
            _ => Ok(()),
        }
    }

    /// Whether the policy reads the per-path latency windows (they are fed only then).
    pub(crate) fn uses_windows(&self) -> bool {
        matches!(self, Policy::ServiceTime | Policy::AverageRate | Policy::HistoricalServiceTime)
    }
}

/// Options of one multipath bdev; all can change at run time
/// ([`crate::MultipathBdev::set_options`]) except `queue_depth`, which applies to channels
/// opened afterwards.
#[derive(Clone, Debug, PartialEq)]
pub struct MultipathOptions {
    /// Load-balancing policy.
    pub policy: Policy,
    /// IOs per direction in the statistics window of the dynamic policies (1..=256).
    pub window_ios: u32,
    /// The dynamic statistics windows are emptied this often, so a path that got faster is
    /// tried again (zero: never).
    pub stats_reset_interval: Duration,
    /// A failed path is probed with a one-block read this often; it rejoins when one answers.
    pub probe_interval: Duration,
    /// How long IO waits for a usable path before failing with `PathError` (dm-multipath's
    /// `no_path_retry`); `None` queues for ever, zero fails at once.
    pub no_path_timeout: Option<Duration>,
    /// How often the paths' ANA states are read.
    pub ana_check_interval: Duration,
    /// A path whose oldest IO has been outstanding this long gets no new IO (its outstanding
    /// IO keeps waiting for the path's own answer or timeout); `None` disables the check.
    pub stall_timeout: Option<Duration>,
    /// Requests one channel holds at once (IOs beyond get `QueueFull`).
    pub queue_depth: u32,
}

impl Default for MultipathOptions {
    fn default() -> MultipathOptions {
        MultipathOptions {
            policy: Policy::default(),
            window_ios: 20,
            stats_reset_interval: Duration::from_secs(1),
            probe_interval: Duration::from_secs(1),
            no_path_timeout: Some(Duration::from_secs(30)),
            ana_check_interval: Duration::from_millis(10),
            stall_timeout: None,
            queue_depth: 1024,
        }
    }
}

impl MultipathOptions {
    /// Check every option.
    pub fn validate(&self) -> Result<(), MultipathError> {
        self.policy.validate()?;
        if self.window_ios == 0 || self.window_ios > MAX_WINDOW_IOS {
            return Err(MultipathError::param(
                "window_ios",
                format!("{} is not in 1..={MAX_WINDOW_IOS}", self.window_ios),
            ));
        }
        if self.probe_interval < Duration::from_micros(100) {
            return Err(MultipathError::param("probe_interval", "must be at least 100 microseconds"));
        }
        if self.ana_check_interval < Duration::from_micros(100) {
            return Err(MultipathError::param("ana_check_interval", "must be at least 100 microseconds"));
        }
        if matches!(self.stall_timeout, Some(d) if d < Duration::from_millis(1)) {
            return Err(MultipathError::param("stall_timeout", "must be at least 1 millisecond"));
        }
        if self.queue_depth == 0 || self.queue_depth > MAX_QUEUE_DEPTH {
            return Err(MultipathError::param(
                "queue_depth",
                format!("{} is not in 1..={MAX_QUEUE_DEPTH}", self.queue_depth),
            ));
        }
        for (name, d) in [
            ("stats_reset_interval", Some(self.stats_reset_interval)),
            ("probe_interval", Some(self.probe_interval)),
            ("no_path_timeout", self.no_path_timeout),
            ("ana_check_interval", Some(self.ana_check_interval)),
            ("stall_timeout", self.stall_timeout),
        ] {
            if matches!(d, Some(d) if d > Duration::from_secs(365 * 24 * 3600)) {
                return Err(MultipathError::param(name, "must be at most a year"));
            }
        }
        Ok(())
    }
}

/// One path of an explicitly configured multipath bdev.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathParams {
    /// Name of the path bdev.
    pub bdev: String,
    /// Priority group: IO goes to the lowest-numbered group with a usable path; group 0 is the
    /// active group, higher groups are passive (used only when no lower group is usable).
    /// A path reporting ANA non-optimized ranks after every optimized one.
    pub group: u8,
    /// Weight for [`Policy::Weighted`].
    pub weight: u32,
}

impl PathParams {
    /// A path in the active group with weight 1.
    pub fn new(bdev: &str) -> PathParams {
        PathParams { bdev: bdev.to_string(), group: 0, weight: 1 }
    }
}

/// An explicitly configured multipath bdev (an entry of `multipath_devices`).
#[derive(Clone, Debug, PartialEq)]
pub struct MultipathParams {
    /// Name; `None` gives `mp-<uuid>` from the namespace identity.
    pub name: Option<String>,
    /// The paths (at least one; all must be to the same namespace).
    pub paths: Vec<PathParams>,
    /// Options.
    pub options: MultipathOptions,
}

impl MultipathParams {
    /// Check names, path count and options.
    pub fn validate(&self) -> Result<(), MultipathError> {
        if matches!(&self.name, Some(n) if n.is_empty()) {
            return Err(MultipathError::param("name", "must not be empty"));
        }
        if self.paths.is_empty() {
            return Err(MultipathError::NoPaths(self.name.clone().unwrap_or_default()));
        }
        if self.paths.len() > MAX_PATHS {
            return Err(MultipathError::param("paths", format!("{} paths, at most {MAX_PATHS}", self.paths.len())));
        }
        for (i, p) in self.paths.iter().enumerate() {
            if p.bdev.is_empty() {
                return Err(MultipathError::param("paths", "a path bdev name is empty"));
            }
            if self.paths[..i].iter().any(|q| q.bdev == p.bdev) {
                return Err(MultipathError::param("paths", format!("bdev '{}' is listed twice", p.bdev)));
            }
        }
        self.options.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_names_round_trip_and_aliases() {
        for n in Policy::NAMES {
            assert_eq!(Policy::from_name(n).unwrap().name(), n);
        }
        assert_eq!(Policy::from_name("queue-length").unwrap(), Policy::QueueLength);
        assert_eq!(Policy::from_name("avg_rate").unwrap(), Policy::AverageRate);
        assert_eq!(Policy::from_name("time").unwrap(), Policy::ServiceTime);
        let e = Policy::from_name("fastest").unwrap_err();
        assert!(e.to_string().starts_with("unknown multipath policy 'fastest'"), "{e}");
    }

    #[test]
    fn options_are_validated() {
        assert!(MultipathOptions::default().validate().is_ok());
        let bad = [
            MultipathOptions { window_ios: 0, ..Default::default() },
            MultipathOptions { window_ios: MAX_WINDOW_IOS + 1, ..Default::default() },
            MultipathOptions { probe_interval: Duration::ZERO, ..Default::default() },
            MultipathOptions { queue_depth: 0, ..Default::default() },
            MultipathOptions { policy: Policy::RoundRobin { ios_per_path: 0 }, ..Default::default() },
            MultipathOptions { policy: Policy::Hash { region_blocks: 0 }, ..Default::default() },
            MultipathOptions { no_path_timeout: Some(Duration::from_secs(u64::MAX)), ..Default::default() },
        ];
        for o in bad {
            assert!(o.validate().is_err(), "{o:?}");
        }
        let p = MultipathParams {
            name: None,
            paths: vec![PathParams::new("a"), PathParams::new("a")],
            options: Default::default(),
        };
        assert!(p.validate().unwrap_err().to_string().contains("listed twice"));
        let p = MultipathParams { name: Some("x".into()), paths: vec![], options: Default::default() };
        assert!(matches!(p.validate(), Err(MultipathError::NoPaths(_))));
    }
}
