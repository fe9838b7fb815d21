//! Management RPC over a Unix socket.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use xbdev::rpc::RpcServer;
use xbdev::{Config, Xbdev};

fn call(s: &mut UnixStream, r: &mut BufReader<UnixStream>, req: &str) -> Value {
    writeln!(s, "{req}").unwrap();
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

#[test]
fn rpc_creates_lists_deletes_and_reports_errors() {
    let xb = Arc::new(
        Xbdev::start(&Config::from_json_str(r#"{"reactor": {"cores": [0], "pin": false}}"#).unwrap()).unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("xbdev.sock");
    let _srv = RpcServer::start_unix(xb.clone(), sock.to_str().unwrap()).unwrap();
    let mut s = UnixStream::connect(&sock).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let v = call(
        &mut s,
        &mut r,
        r#"{"jsonrpc":"2.0","id":1,"method":"bdev_malloc_create","params":{"name":"m0","size_mb":4}}"#,
    );
    assert_eq!(v["result"], json!("m0"));
    let v = call(&mut s, &mut r, r#"{"jsonrpc":"2.0","id":2,"method":"bdev_get_bdevs"}"#);
    assert_eq!(v["result"][0]["name"], json!("m0"));
    assert_eq!(v["result"][0]["num_blocks"], json!(8192));
    let v = call(
        &mut s,
        &mut r,
        r#"{"jsonrpc":"2.0","id":3,"method":"bdev_malloc_create","params":{"name":"m1","size_mb":"4"}}"#,
    );
    assert_eq!(v["error"]["code"], json!(-32602));
    assert_eq!(v["error"]["message"], json!("params.size_mb: expected an integer, found a string"));
    let v = call(
        &mut s,
        &mut r,
        r#"{"jsonrpc":"2.0","id":4,"method":"bdev_malloc_create","params":{"name":"m0","size_mb":4}}"#,
    );
    assert_eq!(v["error"]["message"], json!("a bdev named 'm0' already exists"));
    let v = call(&mut s, &mut r, r#"{"jsonrpc":"2.0","id":5,"method":"nope"}"#);
    assert_eq!(v["error"]["code"], json!(-32601));
    let v = call(&mut s, &mut r, r#"{"jsonrpc":"2.0","id":6,"method":"bdev_get_iostat","params":{"name":"m0"}}"#);
    assert_eq!(v["result"]["in_flight"], json!(0));
    let v = call(&mut s, &mut r, "{not json");
    assert_eq!(v["error"]["code"], json!(-32700));
    let v = call(&mut s, &mut r, r#"{"jsonrpc":"2.0","id":7,"method":"save_config"}"#);
    assert_eq!(v["result"]["base_devices"][0]["params"]["name"], json!("m0"));
    let v = call(&mut s, &mut r, r#"{"jsonrpc":"2.0","id":8,"method":"bdev_delete","params":{"name":"m0"}}"#);
    assert_eq!(v["result"], json!(true));
    let v = call(
        &mut s,
        &mut r,
        r#"[{"jsonrpc":"2.0","id":9,"method":"bdev_get_bdevs"},{"jsonrpc":"2.0","id":10,"method":"framework_get_reactors"}]"#,
    );
    assert_eq!(v[0]["result"], json!([]));
    assert_eq!(v[1]["result"][0]["index"], json!(0));
}

#[test]
fn daemon_and_cli_work_together() {
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("d.sock");
    let cfg = dir.path().join("c.json");
    std::fs::write(&cfg, r#"{"reactor": {"cores": [0], "pin": false}}"#).unwrap();
    let mut d = Command::new(env!("CARGO_BIN_EXE_xbdevd")).arg("-c").arg(&cfg).arg("-r").arg(&sock).spawn().unwrap();
    let t0 = std::time::Instant::now();
    while !sock.exists() {
        assert!(t0.elapsed().as_secs() < 10, "daemon did not start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let rpc =
        |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_xbdev-rpc")).arg("-s").arg(&sock).args(args).output().unwrap();
    let o = rpc(&["bdev_null_create", r#"{"name": "n0", "num_blocks": 100}"#]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = rpc(&["bdev_get_bdevs"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("\"n0\""));
    let o = rpc(&["bdev_delete", r#"{"name": "zz"}"#]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no bdev named 'zz'"));
    assert!(rpc(&["shutdown"]).status.success());
    assert!(d.wait().unwrap().success());
}
