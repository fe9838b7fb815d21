//! Multipath over four NVMe/TCP paths to one namespace of the Linux kernel target (nvmet-tcp in a
//! QEMU guest from `../shared/testbed`): verified IO through the multipath bdev while paths go
//! down and come back and while ANA states change. Ignored by default;
//! `tests/stage-guest-nvmet-multipath.sh` starts the target with four listeners, exports
//! NVMET_ADDR, NVMET_PORTS, NVMET_NQN and NVMET_SCRIPT, and runs it with `--ignored`.

#[path = "../examples/mpbench/load.rs"]
mod load;
#[path = "../examples/mpbench/paths.rs"]
mod paths;

use load::{Load, Spec, Totals};
use multipath::{MultipathBdev, MultipathOptions, PathEvent, PathEventKind, PathState, Policy};
use paths::{connect, PathSetup};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

const PROBE: Duration = Duration::from_secs(1);
const RECONNECT: Duration = Duration::from_millis(200);
const WINDOW: Duration = Duration::from_secs(3);
/// Allowance for the probe read itself on the emulated (TCG) target.
const PROBE_READ: Duration = Duration::from_millis(750);

/// Log records kept with their time, so the test knows when a path's connection came back.
struct Recorder {
    start: Instant,
    lines: Mutex<Vec<(Instant, String)>>,
}

impl log::Log for Recorder {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Info
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            let line = format!("{} {}: {}", r.level(), r.target(), r.args());
            eprintln!("  [log {:7.2}s] {line}", self.start.elapsed().as_secs_f64());
            self.lines.lock().unwrap_or_else(|e| e.into_inner()).push((Instant::now(), line));
        }
    }
    fn flush(&self) {}
}

fn recorder() -> &'static Recorder {
    static R: OnceLock<&'static Recorder> = OnceLock::new();
    R.get_or_init(|| {
        let r: &'static Recorder =
            Box::leak(Box::new(Recorder { start: Instant::now(), lines: Mutex::new(Vec::new()) }));
        let _ = log::set_logger(r);
        log::set_max_level(log::LevelFilter::Info);
        r
    })
}

struct Rig {
    dev: Arc<MultipathBdev>,
    load: Load,
    names: Vec<String>,
    events: Arc<Mutex<Vec<(Instant, PathEvent)>>>,
    script: String,
}

fn check(ok: bool, what: String) {
    if ok {
        println!("check: {what}: ok");
    } else {
        panic!("check FAILED: {what}");
    }
}

impl Rig {
    fn at(&self, t: Instant) -> f64 {
        t.duration_since(recorder().start).as_secs_f64()
    }

    /// Run a target control command while the load keeps going; returns when it finished.
    fn nvmet(&mut self, args: &str) -> Instant {
        let script = self.script.clone();
        let a: Vec<String> = args.split_whitespace().map(String::from).collect();
        let start = Instant::now();
        let h = std::thread::spawn(move || std::process::Command::new("bash").arg(&script).args(&a).status());
        self.load.run_while(|_| !h.is_finished());
        let st = h.join().expect("command thread").expect("running nvmet-target.sh");
        assert!(st.success(), "nvmet-target.sh {args}: {st}");
        let end = Instant::now();
        println!("  {:6.2}s nvmet-target.sh {args} ({:.2}s)", self.at(end), end.duration_since(start).as_secs_f64());
        end
    }

    fn states(&self) -> Vec<PathState> {
        self.names.iter().map(|n| self.dev.path(n).expect("path").state).collect()
    }

    /// Keep the load going until the path states are `want` (or fail after `limit`).
    fn wait_states(&mut self, want: &[PathState], limit: Duration) -> Duration {
        let t0 = Instant::now();
        let (dev, names) = (self.dev.clone(), self.names.clone());
        let states = || names.iter().map(|n| dev.path(n).expect("path").state).collect::<Vec<_>>();
        self.load.run_while(|_| states() != want && t0.elapsed() < limit);
        let got = self.states();
        check(
            got == want,
            format!("path states become {want:?} (got {got:?} after {:.2}s)", t0.elapsed().as_secs_f64()),
        );
        t0.elapsed()
    }

    /// Run for `WINDOW`; successful IOs per path and the load's totals in that window.
    fn window(&mut self) -> (Vec<u64>, Totals) {
        let before: Vec<u64> = self.dev.paths().iter().map(|p| p.stats.ios()).collect();
        let t = self.load.totals;
        self.load.run_for(WINDOW);
        let after: Vec<u64> = self.dev.paths().iter().map(|p| p.stats.ios()).collect();
        let now = self.load.totals;
        let d = Totals {
            reads: now.reads - t.reads,
            writes: now.writes - t.writes,
            bytes: now.bytes - t.bytes,
            errors: now.errors - t.errors,
            mismatches: now.mismatches - t.mismatches,
            verified: now.verified - t.verified,
        };
        (after.iter().zip(&before).map(|(a, b)| a - b).collect(), d)
    }

    /// A window in which exactly the paths in `carrying` get IO, with no error.
    fn expect_io_on(&mut self, carrying: &[usize], why: &str) {
        let (per_path, d) = self.window();
        let ok = (0..per_path.len()).all(|i| (per_path[i] > 0) == carrying.contains(&i));
        check(
            ok && d.errors == 0 && d.mismatches == 0 && d.ios() > 0,
            format!(
                "{why}: IO on paths {carrying:?} only (IOs per path {per_path:?}, {} IOs, {} errors, {} mismatches)",
                d.ios(),
                d.errors,
                d.mismatches
            ),
        );
    }

    /// When path `i` was last restored.
    fn restored_at(&self, i: usize) -> Option<Instant> {
        let name = &self.names[i];
        let ev = self.events.lock().unwrap_or_else(|e| e.into_inner());
        ev.iter().rev().find(|(_, e)| &e.path == name && e.kind == PathEventKind::Restored).map(|(t, _)| *t)
    }

    /// Check that path `i`, brought up at `up`, came back within the probe interval of its
    /// connection coming back.
    fn check_failback(&self, i: usize, up: Instant) {
        let restored = self.restored_at(i).expect("restored event");
        let needle = format!("nvmf path{i} qid 1: reconnected");
        let lines = recorder().lines.lock().unwrap_or_else(|e| e.into_inner());
        let reconnected = lines
            .iter()
            .rev()
            .find(|(t, l)| *t <= restored && l.contains(&needle))
            .map(|(t, _)| *t)
            .expect("reconnected");
        let after_conn = restored.saturating_duration_since(reconnected);
        let after_up = restored.saturating_duration_since(up);
        // The guest runs the command up to half a second before nvmet-target.sh returns.
        let conn = if reconnected >= up {
            format!("{:.2}s after path-up returned", reconnected.duration_since(up).as_secs_f64())
        } else {
            format!("{:.2}s before path-up returned", up.duration_since(reconnected).as_secs_f64())
        };
        println!(
            "  path {i}: connection back {conn}, restored {:.2}s after that ({:.2}s after path-up returned)",
            after_conn.as_secs_f64(),
            after_up.as_secs_f64()
        );
        // The next probe goes out within one interval; it then takes a read's round trip.
        check(
            after_conn <= PROBE + PROBE_READ,
            format!(
                "path {i} fails back within the probe interval ({PROBE:?}) and one probe read (at most {PROBE_READ:?}) \
                 of its connection returning"
            ),
        );
    }
}

#[test]
#[ignore = "needs the kernel NVMe/TCP target: run tests/stage-guest-nvmet-multipath.sh"]
fn four_paths_to_the_kernel_target_fail_over_fail_back_and_follow_ana() {
    recorder();
    let ip = std::env::var("NVMET_ADDR").expect("NVMET_ADDR (run tests/stage-guest-nvmet-multipath.sh)");
    let ports = std::env::var("NVMET_PORTS").expect("NVMET_PORTS");
    let addrs: Vec<_> = ports.split_whitespace().map(|p| format!("{ip}:{p}").parse().expect("address")).collect();
    assert_eq!(addrs.len(), 4, "four listeners expected, got {ports}");
    let setup = PathSetup {
        addrs,
        nqn: std::env::var("NVMET_NQN").expect("NVMET_NQN"),
        nsid: 1,
        queue_depth: 17,
        reconnect_delay: RECONNECT,
    };
    let script = std::env::var("NVMET_SCRIPT").expect("NVMET_SCRIPT");
    let paths = connect(&setup).expect("connecting four paths");
    let options = MultipathOptions {
        policy: Policy::QueueLength,
        probe_interval: PROBE,
        no_path_timeout: Some(Duration::from_secs(60)),
        ..Default::default()
    };
    let (module, dev) = paths.multipath("mp0", options, &[]).expect("multipath over four paths");
    check(dev.paths().len() == 4, "four NVMe/TCP paths grouped into one multipath bdev".into());
    let events = Arc::new(Mutex::new(Vec::new()));
    let ev = events.clone();
    dev.subscribe(Arc::new(move |e: &PathEvent| {
        println!("  event: {} {:?}", e.path, e.kind);
        ev.lock().unwrap_or_else(|e| e.into_inner()).push((Instant::now(), e.clone()));
    }));
    let desc = paths.reg.open("mp0", true).expect("open mp0");
    let spec = Spec { io_bytes: 4096, qd: 16, read_pct: 50, verify: true, region_bytes: 16 << 20, idle_polls: 64 };
    let load = Load::new(&desc, spec).expect("load");
    let mut rig = Rig { dev, load, names: paths.names.clone(), events, script };
    use PathState::{Active as A, Failed as F, Inaccessible as I, Passive as P};

    println!("== all four paths up");
    rig.expect_io_on(&[0, 1, 2, 3], "queue_length spreads IO over the four paths");

    println!("== paths go down one by one");
    rig.nvmet("path-down 1");
    rig.wait_states(&[A, F, A, A], Duration::from_secs(20));
    rig.expect_io_on(&[0, 2, 3], "path 1 down");
    rig.nvmet("path-down 2");
    rig.nvmet("path-down 3");
    rig.wait_states(&[A, F, F, F], Duration::from_secs(20));
    rig.expect_io_on(&[0], "paths 1, 2 and 3 down");

    println!("== paths come back");
    let mut ups = Vec::new();
    for i in 1..4 {
        ups.push((i, rig.nvmet(&format!("path-up {i}"))));
    }
    rig.wait_states(&[A, A, A, A], Duration::from_secs(30));
    for (i, up) in ups {
        rig.check_failback(i, up);
    }
    rig.expect_io_on(&[0, 1, 2, 3], "every path back");

    println!("== the first path goes down and comes back");
    rig.nvmet("path-down 0");
    rig.wait_states(&[F, A, A, A], Duration::from_secs(20));
    rig.expect_io_on(&[1, 2, 3], "path 0 down");
    let up = rig.nvmet("path-up 0");
    rig.wait_states(&[A, A, A, A], Duration::from_secs(30));
    rig.check_failback(0, up);

    println!("== ANA: paths 2 and 3 non-optimized");
    rig.nvmet("ana 2 non-optimized");
    rig.nvmet("ana 3 non-optimized");
    rig.wait_states(&[A, A, P, P], Duration::from_secs(20));
    rig.expect_io_on(&[0, 1], "optimized paths carry the IO, non-optimized ones stand by");

    println!("== ANA: paths 0 and 1 inaccessible");
    rig.nvmet("ana 0 inaccessible");
    rig.nvmet("ana 1 inaccessible");
    rig.wait_states(&[I, I, A, A], Duration::from_secs(20));
    rig.expect_io_on(&[2, 3], "IO moves to the non-optimized group");

    println!("== ANA: every path optimized again");
    for i in 0..4 {
        rig.nvmet(&format!("ana {i} optimized"));
    }
    let took = rig.wait_states(&[A, A, A, A], Duration::from_secs(20));
    println!("  every path active {:.2}s after the last ANA change returned", took.as_secs_f64());
    rig.expect_io_on(&[0, 1, 2, 3], "IO spreads over the four paths again");

    println!("== read back everything written");
    let checked = rig.load.read_back_all(Duration::from_secs(120)).expect("read-back");
    let t = rig.load.totals;
    println!("  {} IOs, {} reads verified during the run, {checked} chunks read back", t.ios(), t.verified);
    if let Some(p) = &rig.load.first_problem {
        println!("  first problem: {p}");
    }
    check(
        checked > 0 && t.errors == 0 && t.mismatches == 0,
        format!("{} IO errors, {} mismatches", t.errors, t.mismatches),
    );
    let failures: u64 = rig.dev.paths().iter().map(|p| p.stats.failures).sum();
    let redriven: u64 = rig.dev.paths().iter().map(|p| p.stats.path_errors).sum();
    println!("  path failures {failures}, IOs re-driven after a path error {redriven}");
    drop(rig);
    drop(desc);
    module.delete(&paths.reg, "mp0").expect("delete mp0");
    paths.detach();
}
