//! The engine options of one job, and the xbdev configuration they describe.

use crate::error::EngineError;
use reactor::IdlePolicy;
use xbdev::Config;

/// `xbdev_idle`: what an idle reactor does.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Idle {
    /// Poll while busy, then sleep until woken.
    Adaptive,
    /// Always poll.
    Poll,
}

impl Idle {
    /// Parse the option value.
    pub fn parse(s: &str) -> Result<Idle, EngineError> {
        match s.trim() {
            "adaptive" => Ok(Idle::Adaptive),
            "poll" => Ok(Idle::Poll),
            other => Err(EngineError::Idle(other.to_string())),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Idle::Adaptive => "adaptive",
            Idle::Poll => "poll",
        }
    }
}

/// `xbdev_mode`: which thread drives a job's devices.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// fio's job thread owns one channel per device and polls it itself (run to completion).
    #[default]
    Inline,
    /// Requests go through an xbdev IO queue to a reactor core.
    Reactor,
}

impl Mode {
    /// Parse the option value.
    pub fn parse(s: &str) -> Result<Mode, EngineError> {
        match s.trim() {
            "inline" => Ok(Mode::Inline),
            "reactor" => Ok(Mode::Reactor),
            other => Err(EngineError::Mode(other.to_string())),
        }
    }
}

/// What a job asks of xbdev: the config file, the reactor overrides and the IO path.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct JobSpec {
    /// `xbdev_conf`: path of the JSON config.
    pub conf: Option<String>,
    /// `xbdev_cores`: reactor CPU ids, overriding the config's.
    pub cores: Option<Vec<usize>>,
    /// `xbdev_idle`: idle policy, overriding the config's.
    pub idle: Option<Idle>,
    /// `xbdev_mode`: the job's IO path (not part of the instance's identity).
    pub mode: Mode,
}

/// Largest CPU id accepted (sanity bound for ranges like `0-100000`).
const MAX_CPU: usize = 4095;

/// Parse a CPU list: `1`, `0,1`, `0-3`, `0-1,4`, optionally in brackets.
pub fn parse_cores(value: &str) -> Result<Vec<usize>, EngineError> {
    let bad = |reason: &str| EngineError::Cores { value: value.to_string(), reason: reason.to_string() };
    let body = value.trim().trim_start_matches('[').trim_end_matches(']');
    let mut cores = Vec::new();
    for part in body.split(',').map(str::trim) {
        if part.is_empty() {
            return Err(bad("empty entry"));
        }
        let num = |s: &str| -> Result<usize, EngineError> {
            let n: usize = s.trim().parse().map_err(|_| bad(&format!("'{s}' is not a CPU number")))?;
            if n > MAX_CPU {
                return Err(bad(&format!("CPU {n} is above {MAX_CPU}")));
            }
            Ok(n)
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(bad(&format!("range {a}-{b} is reversed")));
                }
                cores.extend(a..=b);
            }
            None => cores.push(num(part)?),
        }
    }
    let mut seen = cores.clone();
    seen.sort_unstable();
    seen.dedup();
    if seen.len() != cores.len() {
        return Err(bad("a CPU is listed twice"));
    }
    Ok(cores)
}

impl JobSpec {
    /// Build from the raw option strings (each `None` when the option was not given).
    pub fn from_options(conf: Option<&str>, cores: Option<&str>, idle: Option<&str>) -> Result<JobSpec, EngineError> {
        let conf = conf.map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
        let cores = cores.map(str::trim).filter(|s| !s.is_empty()).map(parse_cores).transpose()?;
        let idle = idle.map(str::trim).filter(|s| !s.is_empty()).map(Idle::parse).transpose()?;
        Ok(JobSpec { conf, cores, idle, mode: Mode::default() })
    }

    /// The same spec with the IO path given by `xbdev_mode` (default inline when `None`).
    pub fn with_mode(mut self, mode: Option<&str>) -> Result<JobSpec, EngineError> {
        self.mode = mode.map(str::trim).filter(|s| !s.is_empty()).map(Mode::parse).transpose()?.unwrap_or_default();
        Ok(self)
    }

    /// Identity of the xbdev instance this spec asks for: jobs of one process with equal keys
    /// share one instance.
    pub fn key(&self) -> String {
        let conf = self.conf.as_deref().map(|c| {
            std::fs::canonicalize(c).map(|p| p.to_string_lossy().into_owned()).unwrap_or_else(|_| c.to_string())
        });
        format!("conf={conf:?} cores={:?} idle={:?}", self.cores, self.idle.map(Idle::name))
    }

    /// Load the config file and apply the overrides.
    pub fn config(&self) -> Result<Config, EngineError> {
        let path = self.conf.as_deref().ok_or(EngineError::NoConfig)?;
        let mut cfg =
            Config::from_file(path).map_err(|source| EngineError::Config { path: path.to_string(), source })?;
        self.apply(&mut cfg);
        Ok(cfg)
    }

    /// Apply the reactor overrides to `cfg`.
    pub fn apply(&self, cfg: &mut Config) {
        if let Some(c) = &self.cores {
            cfg.reactor.cores = c.clone();
        }
        match self.idle {
            Some(Idle::Poll) => cfg.reactor.idle = IdlePolicy::AlwaysPoll,
            Some(Idle::Adaptive) if cfg.reactor.idle == IdlePolicy::AlwaysPoll => {
                cfg.reactor.idle = IdlePolicy::default();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cores_lists_and_ranges() {
        assert_eq!(parse_cores("1").unwrap(), vec![1]);
        assert_eq!(parse_cores("0,1").unwrap(), vec![0, 1]);
        assert_eq!(parse_cores("0-3").unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(parse_cores("[2, 0-1]").unwrap(), vec![2, 0, 1]);
    }

    #[test]
    fn bad_cores_are_typed_errors() {
        for v in ["", "a", "1,", "3-1", "0,0", "1-x", "99999", "-1"] {
            match parse_cores(v) {
                Err(EngineError::Cores { value, .. }) => assert_eq!(value, v),
                other => panic!("{v}: {other:?}"),
            }
        }
    }

    #[test]
    fn idle_values() {
        assert_eq!(Idle::parse("poll").unwrap(), Idle::Poll);
        assert_eq!(Idle::parse("adaptive").unwrap(), Idle::Adaptive);
        assert!(matches!(Idle::parse("spin"), Err(EngineError::Idle(_))));
    }

    #[test]
    fn mode_values() {
        let s = JobSpec::default();
        assert_eq!(s.clone().with_mode(None).unwrap().mode, Mode::Inline);
        assert_eq!(s.clone().with_mode(Some("reactor")).unwrap().mode, Mode::Reactor);
        assert!(matches!(s.with_mode(Some("fast")), Err(EngineError::Mode(_))));
        let a = JobSpec::default().with_mode(Some("reactor")).unwrap();
        assert_eq!(a.key(), JobSpec::default().key(), "the mode does not select another instance");
    }

    #[test]
    fn config_needs_a_file() {
        let s = JobSpec::from_options(None, Some("0"), None).unwrap();
        assert!(matches!(s.config(), Err(EngineError::NoConfig)));
        let s = JobSpec::from_options(Some("/nonexistent/xb.json"), None, None).unwrap();
        let e = s.config().unwrap_err();
        assert!(matches!(e, EngineError::Config { .. }), "{e:?}");
        assert!(e.chain().contains("/nonexistent/xb.json"));
    }

    #[test]
    fn overrides_apply_to_the_loaded_config() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.json");
        std::fs::write(
            &p,
            r#"{"reactor": {"cores": [0], "idle": "poll"},
                "base_devices": [{"method": "null", "params": {"name": "n0", "num_blocks": 1024, "block_size": 512}}]}"#,
        )
        .unwrap();
        let path = p.to_str().unwrap();
        let s = JobSpec::from_options(Some(path), Some("1"), Some("adaptive")).unwrap();
        let cfg = s.config().unwrap();
        assert_eq!(cfg.reactor.cores, vec![1]);
        assert_eq!(cfg.reactor.idle, IdlePolicy::default());
        let plain = JobSpec::from_options(Some(path), None, None).unwrap().config().unwrap();
        assert_eq!(plain.reactor.idle, IdlePolicy::AlwaysPoll);
        assert_ne!(s.key(), JobSpec::from_options(Some(path), None, None).unwrap().key());
    }
}
