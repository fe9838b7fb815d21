//! Device sizes for fio's `setup` hook.
//!
//! fio calls `setup` (to learn file sizes) in its main process before it forks the jobs, and
//! a process that forks must not have started threads of its own there. So when this process
//! runs no instance for the job's options, a short-lived child process starts one, opens the
//! devices read-only, writes their sizes to a pipe and exits; the answers are cached for the
//! other jobs of the run. When the process already runs the instance (fio's `--thread` mode
//! with `create_serialize=0`), it is asked directly.

use crate::error::EngineError;
use crate::ffi;
use crate::instances;
use crate::spec::JobSpec;
use std::sync::Mutex;
use std::time::Duration;
use xbdev::Xbdev;

/// How long the probe child may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(120);

struct Cached {
    key: String,
    name: String,
    size: u64,
}

static CACHE: Mutex<Vec<Cached>> = Mutex::new(Vec::new());

/// Sizes in bytes of the devices `names`, in order.
pub fn file_sizes(spec: &JobSpec, names: &[String]) -> Result<Vec<u64>, EngineError> {
    if let Some(xb) = instances::running(spec) {
        return sizes_from(&xb, names);
    }
    let key = spec.key();
    {
        let c = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        let hits: Vec<u64> =
            names.iter().filter_map(|n| c.iter().find(|e| e.key == key && &e.name == n).map(|e| e.size)).collect();
        if hits.len() == names.len() {
            return Ok(hits);
        }
    }
    // Fail early, in this process, on option and config errors (clearer messages).
    spec.config()?;
    let report = ffi::run_in_child(PROBE_TIMEOUT, || child_report(spec, names))?;
    let sizes = parse_report(&report, names.len())?;
    let mut c = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    for (n, s) in names.iter().zip(&sizes) {
        c.push(Cached { key: key.clone(), name: n.clone(), size: *s });
    }
    Ok(sizes)
}

/// Open each device read-only on `xb` and read its size.
pub fn sizes_from(xb: &Xbdev, names: &[String]) -> Result<Vec<u64>, EngineError> {
    names
        .iter()
        .map(|n| {
            let h =
                xb.open(n, false).map_err(|source| EngineError::Open { name: n.clone(), source: Box::new(source) })?;
            let size = h.size_bytes();
            if let Err(e) = h.close() {
                log::warn!("closing {n} after reading its size: {e}");
            }
            Ok(size)
        })
        .collect()
}

/// What the probe child writes: one `size <bytes>` line per device, or one
/// `error <errno> <text>`.
pub fn child_report(spec: &JobSpec, names: &[String]) -> String {
    let result = spec.config().and_then(|cfg| {
        let xb = ffi::with_signals_blocked(|| Xbdev::start(&cfg)).map_err(|e| EngineError::Start(Box::new(e)))?;
        let sizes = sizes_from(&xb, names);
        xb.stop();
        sizes
    });
    match result {
        Ok(sizes) => sizes.iter().map(|s| format!("size {s}\n")).collect(),
        Err(e) => format!("error {} {}\n", e.errno(), e.chain().replace('\n', " ")),
    }
}

/// Parse a probe child's report for `n` devices.
pub fn parse_report(text: &str, n: usize) -> Result<Vec<u64>, EngineError> {
    if let Some(rest) = text.lines().find_map(|l| l.strip_prefix("error ")) {
        let (errno, message) = match rest.split_once(' ') {
            Some((n, m)) => (n.parse().unwrap_or(libc::EIO), m),
            None => (libc::EIO, rest),
        };
        return Err(EngineError::ProbeFailed { errno, message: message.to_string() });
    }
    let sizes = text
        .lines()
        .map(|l| {
            l.strip_prefix("size ")
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| EngineError::Probe(format!("unexpected line from the probe process: '{l}'")))
        })
        .collect::<Result<Vec<u64>, _>>()?;
    if sizes.len() != n {
        return Err(EngineError::Probe(format!(
            "the probe process reported {} sizes for {n} devices (did it die?)",
            sizes.len()
        )));
    }
    Ok(sizes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_round_trip_and_errors() {
        assert_eq!(parse_report("size 4096\nsize 0\n", 2).unwrap(), vec![4096, 0]);
        assert!(matches!(parse_report("size 1\n", 2), Err(EngineError::Probe(_))));
        assert!(matches!(parse_report("", 1), Err(EngineError::Probe(_))));
        assert!(matches!(parse_report("size x\n", 1), Err(EngineError::Probe(_))));
        match parse_report("size 1\nerror 2 cannot open device 'q': unknown device 'q'\n", 2) {
            Err(e @ EngineError::ProbeFailed { .. }) => {
                assert_eq!(e.errno(), libc::ENOENT);
                assert_eq!(e.chain(), "cannot open device 'q': unknown device 'q'");
            }
            other => panic!("{other:?}"),
        }
    }

    fn conf(dir: &std::path::Path) -> JobSpec {
        let p = dir.join("c.json");
        std::fs::write(
            &p,
            r#"{"reactor": {"cores": [0], "pin": false},
                "base_devices": [
                  {"method": "null", "params": {"name": "n0", "num_blocks": 1000, "block_size": 512}},
                  {"method": "malloc", "params": {"name": "m0", "num_blocks": 64, "block_size": 4096}}]}"#,
        )
        .unwrap();
        JobSpec::from_options(p.to_str(), None, None).unwrap()
    }

    #[test]
    fn probe_child_reports_sizes_and_unknown_devices() {
        let dir = tempfile::tempdir().unwrap();
        let spec = conf(dir.path());
        let names = vec!["n0".to_string(), "m0".to_string()];
        assert_eq!(file_sizes(&spec, &names).unwrap(), vec![512_000, 262_144]);
        // Answered from the cache the second time (same numbers).
        assert_eq!(file_sizes(&spec, &names).unwrap(), vec![512_000, 262_144]);
        let e = file_sizes(&spec, &["nope".to_string()]).unwrap_err();
        assert!(e.chain().contains("unknown device 'nope'"), "{}", e.chain());
        assert_eq!(e.errno(), libc::ENOENT);
        assert_eq!(instances::count(), 0, "the probe must not start an instance in this process");
    }
}
