//! xbdevd: run xbdev as a service with the management RPC (until the `shutdown` RPC).
//!
//! `xbdevd [-c config.json] [-r /var/tmp/xbdev.sock]`

use std::sync::atomic::Ordering;
use std::sync::Arc;
use xbdev::rpc::{RpcServer, SHUTDOWN};
use xbdev::{Config, Xbdev};

fn fail(m: String) -> ! {
    eprintln!("xbdevd: {m}");
    std::process::exit(2)
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let mut a = std::env::args().skip(1);
    let mut cfg = Config::default();
    let mut sock = "/var/tmp/xbdev.sock".to_string();
    while let Some(x) = a.next() {
        match x.as_str() {
            "-c" => {
                cfg = Config::from_file(&a.next().unwrap_or_else(|| fail("-c needs a file".into())))
                    .unwrap_or_else(|e| fail(e.to_string()))
            }
            "-r" => sock = a.next().unwrap_or_else(|| fail("-r needs a socket path".into())),
            "-h" | "--help" => {
                println!("usage: xbdevd [-c config.json] [-r socket]");
                return;
            }
            o => fail(format!("unknown option '{o}'")),
        }
    }
    let xb = Arc::new(Xbdev::start(&cfg).unwrap_or_else(|e| fail(e.to_string())));
    let srv =
        RpcServer::start_unix(xb.clone(), &sock).unwrap_or_else(|e| fail(format!("cannot listen on {sock}: {e}")));
    log::info!("xbdevd: {} device(s), RPC on {sock}", xb.devices().len());
    while !SHUTDOWN.load(Ordering::Acquire) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    drop(srv);
    xb.stop();
}
