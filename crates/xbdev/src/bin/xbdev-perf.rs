//! xbdev-perf: measure bdevs like SPDK's bdevperf, with its flags.

use std::time::Duration;
use xbdev::perf::{self, PerfParams, Workload};
use xbdev::reactor::IdlePolicy;
use xbdev::{Config, Xbdev};

const USAGE: &str = "usage: xbdev-perf [options]
  -c FILE       JSON config (default: embedded 1 GiB malloc bdev Malloc0, 4 KiB blocks)
  -b NAME       bdev to test (repeat or comma-separate; default: every bdev)
  -w WORKLOAD   read|write|randread|randwrite|rw|randrw|verify|unmap|write_zeroes|flush (default randread)
  -o SIZE       IO size, e.g. 4096, 4k, 128k (default 4k)
  -q DEPTH      queue depth per job (default 128)
  -t SECONDS    run time (default 5)
  -m MASK       reactor core mask, e.g. 0x3 (default: the config's cores)
  -M PERCENT    read percentage for rw/randrw (default 50)
  --idle MODE   poll|adaptive reactor idle policy (default poll)
  --no-latency  do not time each IO (saves two clock reads per IO)
  --json        print results as JSON
  -h, --help    this text";

fn parse_mask(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

fn fail(msg: String) -> ! {
    eprintln!("xbdev-perf: {msg}");
    std::process::exit(2);
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let mut args = std::env::args().skip(1);
    let mut config: Option<String> = None;
    let mut bdevs: Vec<String> = Vec::new();
    let mut p = PerfParams {
        bdevs: Vec::new(),
        workload: Workload::RandRead,
        io_size: 4096,
        queue_depth: 128,
        time: Duration::from_secs(5),
        read_pct: 50,
        latency: true,
    };
    let mut mask: Option<u64> = None;
    let mut idle = IdlePolicy::AlwaysPoll;
    let mut json = false;
    while let Some(a) = args.next() {
        let mut val = |flag: &str| args.next().unwrap_or_else(|| fail(format!("{flag} needs a value")));
        match a.as_str() {
            "-c" => config = Some(val("-c")),
            "-b" => bdevs.extend(val("-b").split(',').filter(|s| !s.is_empty()).map(String::from)),
            "-w" => {
                let v = val("-w");
                p.workload = Workload::parse(&v).unwrap_or_else(|| fail(format!("unknown workload '{v}'")));
            }
            "-o" => {
                let v = val("-o");
                p.io_size = xbdev::perf::parse_size(&v).unwrap_or_else(|| fail(format!("bad IO size '{v}'")));
            }
            "-q" => {
                let v = val("-q");
                p.queue_depth =
                    v.parse().ok().filter(|&q| q > 0).unwrap_or_else(|| fail(format!("bad queue depth '{v}'")));
            }
            "-t" => {
                let v = val("-t");
                let secs: f64 =
                    v.parse().ok().filter(|&t: &f64| t > 0.0).unwrap_or_else(|| fail(format!("bad time '{v}'")));
                p.time = Duration::from_secs_f64(secs);
            }
            "-m" => {
                let v = val("-m");
                mask = Some(parse_mask(&v).filter(|&m| m != 0).unwrap_or_else(|| fail(format!("bad core mask '{v}'"))));
            }
            "-M" => {
                let v = val("-M");
                p.read_pct =
                    v.parse().ok().filter(|&m| m <= 100).unwrap_or_else(|| fail(format!("bad read percentage '{v}'")));
            }
            "--idle" => {
                idle = match val("--idle").as_str() {
                    "poll" => IdlePolicy::AlwaysPoll,
                    "adaptive" => IdlePolicy::default(),
                    v => fail(format!("bad idle policy '{v}' (poll or adaptive)")),
                }
            }
            "--no-latency" => p.latency = false,
            "--json" => json = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return;
            }
            other => fail(format!("unknown option '{other}'\n{USAGE}")),
        }
    }
    let mut cfg = match &config {
        Some(path) => Config::from_file(path).unwrap_or_else(|e| fail(e.to_string())),
        None => Config::default_perf(),
    };
    if let Some(m) = mask {
        cfg.reactor.cores = (0..64).filter(|i| m & (1 << i) != 0).collect();
    }
    cfg.reactor.idle = idle;
    let xb = Xbdev::start(&cfg).unwrap_or_else(|e| fail(e.to_string()));
    p.bdevs = if bdevs.is_empty() { xb.devices().into_iter().map(|d| d.name).collect() } else { bdevs };
    if p.bdevs.is_empty() {
        fail("no bdevs to test".into());
    }
    if !json {
        println!(
            "xbdev-perf: {} on {} | {:?} {} B qd {} for {:.1} s on {} core(s)",
            if config.is_some() { "config" } else { "embedded default config" },
            p.bdevs.join(","),
            p.workload,
            p.io_size,
            p.queue_depth,
            p.time.as_secs_f64(),
            xb.reactors().len()
        );
    }
    let r = perf::run(&xb, &p).unwrap_or_else(|e| fail(e.to_string()));
    if json {
        println!("{}", r.json());
    } else {
        print!("{}", r.table());
    }
    xb.stop();
    if r.total_errors() > 0 {
        eprintln!("xbdev-perf: {} IO errors or verify mismatches", r.total_errors());
        std::process::exit(1);
    }
}
