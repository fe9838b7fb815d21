//! xbdev-dd: copy between a file and a bdev, or between two bdevs (like spdk_dd).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use xbdev::bdev::DmaBuf;
use xbdev::{Config, Handle, Xbdev};

const USAGE: &str = "usage: xbdev-dd (--if FILE | --ib BDEV) (--of FILE | --ob BDEV) [options]
  --bs SIZE     bytes per copy step (default 4096; a multiple of each bdev's block size)
  --count N     copy N blocks of --bs (default: until the input ends)
  --skip N      skip N blocks of --bs at the start of the input
  --seek N      skip N blocks of --bs at the start of the output
  --json FILE   JSON config that creates the bdevs
  -h, --help    this text";

fn fail(msg: String) -> ! {
    eprintln!("xbdev-dd: {msg}");
    std::process::exit(2);
}

enum End {
    File(File, u64),
    Bdev(Handle),
}

impl End {
    fn len(&self) -> u64 {
        match self {
            End::File(_, len) => *len,
            End::Bdev(h) => h.size_bytes(),
        }
    }
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let mut a = std::env::args().skip(1);
    let (mut inf, mut ib, mut outf, mut ob, mut json) = (None, None, None, None, None);
    let (mut bs, mut count, mut skip, mut seek) = (4096u64, None::<u64>, 0u64, 0u64);
    while let Some(x) = a.next() {
        let mut v = |f: &str| a.next().unwrap_or_else(|| fail(format!("{f} needs a value")));
        let num = |f: &str, s: String| s.parse::<u64>().unwrap_or_else(|_| fail(format!("{f}: '{s}' is not a number")));
        match x.as_str() {
            "--if" => inf = Some(v("--if")),
            "--ib" => ib = Some(v("--ib")),
            "--of" => outf = Some(v("--of")),
            "--ob" => ob = Some(v("--ob")),
            "--json" => json = Some(v("--json")),
            "--bs" => {
                let s = v("--bs");
                bs = xbdev::perf::parse_size(&s)
                    .filter(|&b| b > 0)
                    .unwrap_or_else(|| fail(format!("--bs: bad size '{s}'")));
            }
            "--count" => count = Some(num("--count", v("--count"))),
            "--skip" => skip = num("--skip", v("--skip")),
            "--seek" => seek = num("--seek", v("--seek")),
            "-h" | "--help" => {
                println!("{USAGE}");
                return;
            }
            o => fail(format!("unknown option '{o}'\n{USAGE}")),
        }
    }
    if inf.is_some() == ib.is_some() {
        fail(format!("give exactly one of --if and --ib\n{USAGE}"));
    }
    if outf.is_some() == ob.is_some() {
        fail(format!("give exactly one of --of and --ob\n{USAGE}"));
    }
    let needs_xb = ib.is_some() || ob.is_some();
    let xb = if needs_xb {
        let cfg = match &json {
            Some(p) => Config::from_file(p).unwrap_or_else(|e| fail(e.to_string())),
            None => fail("--ib/--ob need --json with the config that creates the bdevs".into()),
        };
        let mut cfg = cfg;
        cfg.reactor.pin = false;
        Some(Xbdev::start(&cfg).unwrap_or_else(|e| fail(e.to_string())))
    } else {
        None
    };
    let open_bdev = |name: &str, w: bool| -> End {
        let xb = xb.as_ref().unwrap_or_else(|| fail("no xbdev instance".into()));
        let h = xb.open(name, w).unwrap_or_else(|e| fail(e.to_string()));
        if !bs.is_multiple_of(h.block_size() as u64) {
            fail(format!("--bs {bs} is not a multiple of '{name}' block size {}", h.block_size()));
        }
        End::Bdev(h)
    };
    let mut input = match (&inf, &ib) {
        (Some(p), _) => {
            let f = File::open(p).unwrap_or_else(|e| fail(format!("cannot open '{p}': {e}")));
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            End::File(f, len)
        }
        (_, Some(n)) => open_bdev(n, false),
        _ => unreachable!("checked above"),
    };
    let mut output = match (&outf, &ob) {
        (Some(p), _) => {
            let f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(p)
                .unwrap_or_else(|e| fail(format!("cannot open '{p}': {e}")));
            End::File(f, u64::MAX)
        }
        (_, Some(n)) => open_bdev(n, true),
        _ => unreachable!("checked above"),
    };
    let in_off = skip.checked_mul(bs).unwrap_or_else(|| fail("--skip too large".into()));
    let out_off = seek.checked_mul(bs).unwrap_or_else(|| fail("--seek too large".into()));
    let avail = input.len().saturating_sub(in_off);
    let total = match count {
        Some(c) => {
            let want = c.checked_mul(bs).unwrap_or_else(|| fail("--count too large".into()));
            if want > avail {
                fail(format!("--count {c} needs {want} bytes but the input has {avail} after --skip"));
            }
            want
        }
        None => avail,
    };
    if out_off.saturating_add(total) > output.len() {
        fail(format!("output is {} bytes; {} bytes at offset {out_off} do not fit", output.len(), total));
    }
    let mut buf = DmaBuf::zeroed(bs as usize).unwrap_or_else(|e| fail(e.to_string()));
    let t0 = std::time::Instant::now();
    let mut done = 0u64;
    while done < total {
        let n = (total - done).min(bs) as usize;
        let chunk = &mut buf.as_mut_slice()[..n];
        match &mut input {
            End::File(f, _) => {
                f.seek(SeekFrom::Start(in_off + done))
                    .and_then(|_| f.read_exact(chunk))
                    .unwrap_or_else(|e| fail(format!("read: {e}")));
            }
            End::Bdev(h) => {
                h.read(chunk, in_off + done).unwrap_or_else(|e| fail(e.to_string()));
            }
        }
        match &mut output {
            End::File(f, _) => {
                f.seek(SeekFrom::Start(out_off + done))
                    .and_then(|_| f.write_all(chunk))
                    .unwrap_or_else(|e| fail(format!("write: {e}")));
            }
            End::Bdev(h) => {
                let bsz = h.block_size() as usize;
                if !n.is_multiple_of(bsz) {
                    fail(format!("the last {n} bytes of the input do not fill a whole {bsz}-byte block of the output"));
                }
                h.write(chunk, out_off + done).unwrap_or_else(|e| fail(e.to_string()));
            }
        }
        done += n as u64;
    }
    if let End::Bdev(h) = &output {
        h.flush().unwrap_or_else(|e| fail(e.to_string()));
    }
    let secs = t0.elapsed().as_secs_f64().max(1e-9);
    eprintln!("copied {done} bytes in {secs:.3} s ({:.1} MiB/s)", done as f64 / secs / (1 << 20) as f64);
    if let Some(x) = xb {
        x.stop();
    }
}
