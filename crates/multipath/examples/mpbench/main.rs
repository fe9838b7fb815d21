//! Multipath over real NVMe/TCP paths: a closed-loop random load on a multipath bdev built over
//! one NVMe/TCP connection per target address, one policy after another (switched at run time
//! with `MultipathBdev::set_policy`), with per-path throughput and state sampled every second.
//! `crates/multipath/bench/experiments.sh` drives it for the seed design's experiments.
//!
//! ```text
//! mpbench --targets ADDR:PORT[,ADDR:PORT...] --nqn NQN [options]
//!   --policies LIST   comma-separated policy names, or `all` (default queue_length)
//!   --time S          measured seconds per policy (10)
//!   --warmup S        seconds after each policy switch before measuring (2)
//!   --bs BYTES        IO size, `k` suffix allowed (4k)      --qd N       IOs in flight (128)
//!   --read-pct N      share of reads (50)                   --verify     check every read
//!   --size-mb N       region used (64)                      --nsid N     namespace (1)
//!   --weights W,..    path weights for `weighted` (1 each)
//!   --direct          no multipath: the first path's bdev itself (a single-path baseline)
//!   --probe-ms N      probe interval of failed paths (1000)  --reconnect-ms N (250)
//!   --interval-ms N   sample period (1000)
//!   --idle-polls N    sleep 20 us after N polls in a row without a completion (0: never; 64)
//!   --csv FILE        one row per sample; FILE.events gets the `--at` commands and path events
//!   --at SECS:CMD     run CMD with `sh -c` SECS after the load starts (repeatable)
//!   --label NAME      tag of the CSV rows and RESULT lines
//! ```
//! Prints a row per sample, then one `RESULT` line per policy: `label policy MB/s IOPS errors
//! mismatches` and each path's MB/s. Exits non-zero on IO errors or verify mismatches.

mod load;
mod paths;

use load::{Load, Spec, Totals};
use multipath::{MultipathOptions, PathEvent, PathInfo, Policy};
use paths::{connect, PathSetup};
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Args {
    setup: PathSetup,
    policies: Vec<Policy>,
    time: Duration,
    warmup: Duration,
    spec: Spec,
    weights: Vec<u32>,
    direct: bool,
    probe: Duration,
    interval: Duration,
    csv: Option<String>,
    at: Vec<(f64, String)>,
    label: String,
}

const USAGE: &str = "usage: mpbench --targets ADDR:PORT[,..] --nqn NQN [--policies LIST|all] [--time S] [--warmup S] \
[--bs N] [--qd N] [--read-pct N] [--verify] [--size-mb N] [--nsid N] [--weights W,..] [--direct] [--probe-ms N] \
[--reconnect-ms N] [--interval-ms N] [--idle-polls N] [--csv FILE] [--at SECS:CMD]... [--label NAME]";

fn parse_size(s: &str) -> Result<usize, String> {
    let (n, mul) = match s.strip_suffix(['k', 'K']) {
        Some(n) => (n, 1024),
        None => (s, 1),
    };
    n.parse::<usize>().map(|v| v * mul).map_err(|_| format!("'{s}' is not a size"))
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        setup: PathSetup {
            addrs: Vec::new(),
            nqn: String::new(),
            nsid: 1,
            queue_depth: 129,
            reconnect_delay: Duration::from_millis(250),
        },
        policies: vec![Policy::QueueLength],
        time: Duration::from_secs(10),
        warmup: Duration::from_secs(2),
        spec: Spec { io_bytes: 4096, qd: 128, read_pct: 50, verify: false, region_bytes: 64 << 20, idle_polls: 64 },
        weights: Vec::new(),
        direct: false,
        probe: Duration::from_secs(1),
        interval: Duration::from_secs(1),
        csv: None,
        at: Vec::new(),
        label: "run".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let num = |s: String| s.parse::<f64>().map_err(|_| format!("'{s}' is not a number"));
        match flag.as_str() {
            "--targets" => {
                a.setup.addrs = val()?
                    .split(',')
                    .map(|s| s.parse().map_err(|_| format!("'{s}' is not ADDR:PORT")))
                    .collect::<Result<_, _>>()?
            }
            "--nqn" => a.setup.nqn = val()?,
            "--nsid" => a.setup.nsid = val()?.parse().map_err(|_| "bad --nsid")?,
            "--policies" => {
                let v = val()?;
                let names: Vec<&str> = if v == "all" { Policy::NAMES.to_vec() } else { v.split(',').collect() };
                a.policies =
                    names.iter().map(|n| Policy::from_name(n).map_err(|e| e.to_string())).collect::<Result<_, _>>()?;
            }
            "--time" => a.time = Duration::from_secs_f64(num(val()?)?),
            "--warmup" => a.warmup = Duration::from_secs_f64(num(val()?)?),
            "--bs" => a.spec.io_bytes = parse_size(&val()?)?,
            "--qd" => a.spec.qd = val()?.parse().map_err(|_| "bad --qd")?,
            "--read-pct" => a.spec.read_pct = val()?.parse().map_err(|_| "bad --read-pct")?,
            "--verify" => a.spec.verify = true,
            "--size-mb" => a.spec.region_bytes = val()?.parse::<u64>().map_err(|_| "bad --size-mb")? << 20,
            "--weights" => {
                a.weights = val()?
                    .split(',')
                    .map(|w| w.parse().map_err(|_| format!("bad weight '{w}'")))
                    .collect::<Result<_, _>>()?
            }
            "--direct" => a.direct = true,
            "--probe-ms" => a.probe = Duration::from_millis(val()?.parse().map_err(|_| "bad --probe-ms")?),
            "--reconnect-ms" => {
                a.setup.reconnect_delay = Duration::from_millis(val()?.parse().map_err(|_| "bad --reconnect-ms")?)
            }
            "--idle-polls" => a.spec.idle_polls = val()?.parse().map_err(|_| "bad --idle-polls")?,
            "--interval-ms" => a.interval = Duration::from_millis(val()?.parse().map_err(|_| "bad --interval-ms")?),
            "--csv" => a.csv = Some(val()?),
            "--at" => {
                let v = val()?;
                let (t, cmd) = v.split_once(':').ok_or_else(|| format!("--at '{v}': expected SECS:COMMAND"))?;
                a.at.push((num(t.to_string())?, cmd.to_string()));
            }
            "--label" => a.label = val()?,
            "-h" | "--help" => return Err(USAGE.into()),
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    if a.setup.addrs.is_empty() || a.setup.nqn.is_empty() {
        return Err(USAGE.into());
    }
    a.setup.queue_depth = u16::try_from(a.spec.qd + 1).map_err(|_| "--qd too large")?;
    Ok(a)
}

/// Seconds since `t0`.
fn secs(t0: Instant) -> f64 {
    t0.elapsed().as_secs_f64()
}

/// Log lines shared with the `--at` threads and the path event subscriber.
type Log = Arc<Mutex<Vec<(f64, String)>>>;

fn bytes_of(p: &PathInfo) -> u64 {
    p.stats.read_bytes + p.stats.write_bytes
}

struct Sampler {
    t0: Instant,
    interval: Duration,
    next: Instant,
    last_t: Instant,
    last_totals: Totals,
    last_paths: Vec<u64>,
    csv: Option<std::fs::File>,
    label: String,
    /// Previous call, and the longest time between two calls (one turn of the IO loop) since
    /// the last sample: a turn that takes long means the loop itself was held up.
    prev_call: Instant,
    max_turn: Duration,
}

impl Sampler {
    /// Print (and write) a row if a sample is due.
    fn tick(&mut self, policy: &str, totals: &Totals, paths: &dyn Fn() -> Vec<PathInfo>, log: &Log) {
        let now = Instant::now();
        self.max_turn = self.max_turn.max(now.duration_since(self.prev_call));
        self.prev_call = now;
        if now < self.next {
            return;
        }
        self.next += self.interval;
        let turn = std::mem::take(&mut self.max_turn);
        let dt = now.duration_since(self.last_t).as_secs_f64().max(1e-9);
        let p = paths();
        let mbs = (totals.bytes - self.last_totals.bytes) as f64 / dt / 1e6;
        let iops = (totals.ios() - self.last_totals.ios()) as f64 / dt;
        let errs = totals.errors - self.last_totals.errors;
        let t = now.duration_since(self.t0).as_secs_f64();
        let mut row = format!("{},{policy},{t:.2},{mbs:.3},{iops:.0},{errs}", self.label);
        let mut human = format!("t={t:6.1}s {policy:<24} {mbs:8.2} MB/s {iops:8.0} IOPS err {errs} |");
        if turn > Duration::from_millis(50) {
            let _ = write!(human, " (loop held up {:.0} ms)", turn.as_secs_f64() * 1e3);
        }
        for (i, pi) in p.iter().enumerate() {
            let b = bytes_of(pi);
            let last = self.last_paths.get(i).copied().unwrap_or(b);
            let pm = b.saturating_sub(last) as f64 / dt / 1e6;
            let _ = write!(row, ",{pm:.3},{}", pi.state.name());
            let _ = write!(human, " {pm:7.2} {:<8}", pi.state.name());
        }
        if p.is_empty() {
            let _ = write!(row, ",{mbs:.3},direct");
        }
        println!("{human}");
        for (t, what) in log.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            println!("  @{t:6.2}s {what}");
            if let Some(f) = self.csv.as_mut() {
                let _ = writeln!(f, "#event,{t:.2},{what}");
            }
        }
        if let Some(f) = self.csv.as_mut() {
            let _ = writeln!(f, "{row}");
        }
        self.last_paths = p.iter().map(bytes_of).collect();
        self.last_totals = *totals;
        self.last_t = now;
    }
}

fn run() -> Result<bool, String> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp_millis()
        .init();
    let a = parse_args()?;
    let mut setup = a.setup.clone();
    if a.direct {
        setup.addrs.truncate(1);
    }
    let paths = connect(&setup)?;
    let options = MultipathOptions {
        policy: a.policies.first().copied().unwrap_or_default(),
        probe_interval: a.probe,
        ..Default::default()
    };
    let mp = if a.direct { None } else { Some(paths.multipath("mp0", options, &a.weights)?) };
    let name = if mp.is_some() { "mp0".to_string() } else { paths.names.first().cloned().unwrap_or_default() };
    let desc = paths.reg.open(&name, true).map_err(|e| format!("opening {name}: {e}"))?;
    let mut load = Load::new(&desc, a.spec.clone())?;

    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let t0 = Instant::now();
    if let Some((_, dev)) = &mp {
        let (log, t0) = (log.clone(), t0);
        dev.subscribe(Arc::new(move |e: &PathEvent| {
            log.lock().unwrap_or_else(|e| e.into_inner()).push((secs(t0), format!("{}: {:?}", e.path, e.kind)));
        }));
    }
    for (at, cmd) in a.at.clone() {
        let log = log.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs_f64(at).saturating_sub(t0.elapsed()));
            let start = secs(t0);
            let st = std::process::Command::new("sh").arg("-c").arg(&cmd).status();
            let end = secs(t0);
            let how = match st {
                Ok(s) if s.success() => "ok".to_string(),
                Ok(s) => format!("exit {s}"),
                Err(e) => format!("not run: {e}"),
            };
            log.lock().unwrap_or_else(|e| e.into_inner()).push((end, format!("ran `{cmd}` from {start:.2}s: {how}")));
        });
    }
    let path_infos = || mp.as_ref().map(|(_, d)| d.paths()).unwrap_or_default();
    let csv = match &a.csv {
        Some(f) => {
            let mut f = std::fs::File::create(f).map_err(|e| format!("{f}: {e}"))?;
            let mut head = "label,policy,t_s,mbps,iops,errors".to_string();
            for i in 0..setup.addrs.len() {
                let _ = write!(head, ",path{i}_mbps,path{i}_state");
            }
            writeln!(f, "{head}").map_err(|e| e.to_string())?;
            Some(f)
        }
        None => None,
    };
    let mut sampler = Sampler {
        t0,
        interval: a.interval,
        next: t0 + a.interval,
        last_t: t0,
        last_totals: Totals::default(),
        last_paths: path_infos().iter().map(bytes_of).collect(),
        csv,
        label: a.label.clone(),
        prev_call: t0,
        max_turn: Duration::ZERO,
    };
    let mut results = Vec::new();
    for policy in &a.policies {
        if let Some((_, dev)) = &mp {
            dev.set_policy(*policy).map_err(|e| e.to_string())?;
        }
        let pname = if a.direct { "direct" } else { policy.name() };
        let until = Instant::now() + a.warmup;
        load.run_while(|l| {
            sampler.tick(pname, &l.totals, &path_infos, &log);
            Instant::now() < until
        });
        let (m0, p0, s0) = (Instant::now(), load.totals, path_infos());
        let until = m0 + a.time;
        load.run_while(|l| {
            sampler.tick(pname, &l.totals, &path_infos, &log);
            Instant::now() < until
        });
        let (dt, tot, p1) = (m0.elapsed().as_secs_f64(), load.totals, path_infos());
        let per_path: Vec<f64> =
            p1.iter().zip(s0.iter()).map(|(b, a)| bytes_of(b).saturating_sub(bytes_of(a)) as f64 / dt / 1e6).collect();
        let r = (
            pname,
            (tot.bytes - p0.bytes) as f64 / dt / 1e6,
            (tot.ios() - p0.ios()) as f64 / dt,
            tot.errors - p0.errors,
            tot.mismatches - p0.mismatches,
            per_path,
        );
        results.push(r);
    }
    let drained = load.drain(Duration::from_secs(60));
    let mut checked = 0;
    if a.spec.verify {
        checked = load.read_back_all(Duration::from_secs(120))?;
    }
    for (t, what) in log.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
        println!("  @{t:6.2}s {what}");
    }
    println!();
    for (pname, mbs, iops, errs, mism, per_path) in &results {
        let pp: Vec<String> = per_path.iter().map(|m| format!("{m:.2}")).collect();
        println!(
            "RESULT {} {pname} {mbs:.2} MB/s {iops:.0} IOPS errors {errs} mismatches {mism} paths {}",
            a.label,
            if pp.is_empty() { format!("{mbs:.2}") } else { pp.join(" ") }
        );
    }
    let t = load.totals;
    println!(
        "TOTAL {} ios {} errors {} verified {} mismatches {} read-back {checked} drained {drained}",
        a.label,
        t.ios(),
        t.errors,
        t.verified,
        t.mismatches
    );
    if let Some(p) = &load.first_problem {
        println!("first problem: {p}");
    }
    drop(load);
    drop(desc);
    if let Some((module, _)) = &mp {
        let _ = module.delete(&paths.reg, "mp0");
    }
    paths.detach();
    Ok(t.errors == 0 && t.mismatches == 0 && drained)
}

fn main() {
    match run() {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("mpbench: {e}");
            std::process::exit(2);
        }
    }
}
