//! xbdev-rpc: call a management RPC method of a running xbdevd (like SPDK's rpc.py).
//!
//! `xbdev-rpc [-s socket] METHOD [JSON-PARAMS]`, e.g.
//! `xbdev-rpc bdev_malloc_create '{"name": "m0", "size_mb": 64}'`

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

fn fail(m: String) -> ! {
    eprintln!("xbdev-rpc: {m}");
    std::process::exit(2)
}

fn main() {
    let mut a: Vec<String> = std::env::args().skip(1).collect();
    let mut sock = "/var/tmp/xbdev.sock".to_string();
    if a.first().map(String::as_str) == Some("-s") {
        if a.len() < 2 {
            fail("-s needs a socket path".into());
        }
        sock = a.remove(1);
        a.remove(0);
    }
    let Some(method) = a.first() else { fail("usage: xbdev-rpc [-s socket] METHOD [JSON-PARAMS]".into()) };
    let params: serde_json::Value = match a.get(1) {
        Some(p) => serde_json::from_str(p).unwrap_or_else(|e| fail(format!("params are not JSON: {e}"))),
        None => serde_json::json!({}),
    };
    let req = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let mut s = UnixStream::connect(&sock).unwrap_or_else(|e| fail(format!("cannot connect to {sock}: {e}")));
    writeln!(s, "{req}").unwrap_or_else(|e| fail(e.to_string()));
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap_or_else(|e| fail(e.to_string()));
    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| fail(format!("bad reply: {e}")));
    if let Some(e) = v.get("error") {
        eprintln!("{}", e.get("message").and_then(|m| m.as_str()).unwrap_or("error"));
        std::process::exit(1);
    }
    println!("{}", serde_json::to_string_pretty(&v["result"]).unwrap_or_default());
}
