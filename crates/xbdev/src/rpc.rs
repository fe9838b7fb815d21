//! Management RPC (seed 2.9 `xbdev_mgmt_server_init`): JSON-RPC 2.0, one request per line,
//! over a Unix socket or loopback TCP, served by a control-plane thread (never a reactor).
//!
//! Methods: `bdev_get_bdevs`, `bdev_get_iostat`, `bdev_malloc_create`, `bdev_null_create`,
//! `bdev_aio_create`, `bdev_delete`, `save_config`, `framework_get_reactors`, `rpc_get_methods`.
//! Device parameters use the same names and checks as the JSON config's `params`.

use crate::config::{BaseDevice, Config};
use crate::instance::Xbdev;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// JSON-RPC error codes.
const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;
const SERVER_ERROR: i64 = -32000;

const METHODS: &[&str] = &[
    "bdev_get_bdevs",
    "bdev_get_iostat",
    "bdev_malloc_create",
    "bdev_null_create",
    "bdev_aio_create",
    "bdev_delete",
    "save_config",
    "framework_get_reactors",
    "rpc_get_methods",
    "shutdown",
];

fn err(code: i64, msg: impl Into<String>) -> (i64, String) {
    (code, msg.into())
}

fn create(xb: &Xbdev, method: &str, params: &Value) -> Result<Value, (i64, String)> {
    let m = method.trim_start_matches("bdev_").trim_end_matches("_create");
    // Reuse the config parser: same field names, same path-precise errors.
    let doc = json!({"base_devices": [{"method": m, "params": params}]});
    let cfg =
        Config::from_value(&doc).map_err(|e| err(INVALID_PARAMS, e.to_string().replace("base_devices[0].", "")))?;
    let dev: &BaseDevice = cfg.base_devices.first().ok_or_else(|| err(INVALID_PARAMS, "no device"))?;
    xb.create_base_device(dev).map_err(|e| err(SERVER_ERROR, e.to_string()))?;
    Ok(Value::from(dev.name()))
}

/// Set by the `shutdown` method; daemons wait on it.
pub static SHUTDOWN: AtomicBool = AtomicBool::new(false);

/// Handle one request object; `None` for notifications (no id).
pub fn handle(xb: &Xbdev, req: &Value) -> Option<Value> {
    let id = req.get("id").cloned();
    let result = (|| {
        let obj = req.as_object().ok_or_else(|| err(INVALID_REQUEST, "request is not an object"))?;
        if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return Err(err(INVALID_REQUEST, "jsonrpc must be \"2.0\""));
        }
        let method = obj.get("method").and_then(Value::as_str).ok_or_else(|| err(INVALID_REQUEST, "method missing"))?;
        let params = obj.get("params").cloned().unwrap_or(json!({}));
        let name_param = || {
            params
                .get("name")
                .and_then(Value::as_str)
                .map(String::from)
                .ok_or_else(|| err(INVALID_PARAMS, "params.name: missing required string"))
        };
        match method {
            "rpc_get_methods" => Ok(json!(METHODS)),
            "shutdown" => {
                SHUTDOWN.store(true, Ordering::Release);
                Ok(Value::Bool(true))
            }
            "bdev_get_bdevs" => {
                let filter = params.get("name").and_then(Value::as_str);
                let list: Vec<Value> = xb
                    .registry()
                    .list_all()
                    .into_iter()
                    .filter(|(i, _)| filter.is_none_or(|f| i.name == f || i.aliases.iter().any(|a| a == f)))
                    .map(|(i, claim)| {
                        json!({
                            "name": i.name, "aliases": i.aliases, "product_name": i.product,
                            "uuid": i.uuid.to_string(), "block_size": i.block_size, "num_blocks": i.num_blocks,
                            "required_alignment": i.required_alignment, "optimal_io_boundary": i.optimal_io_boundary,
                            "supported_io_types": i.supported.iter().map(|t| t.name()).collect::<Vec<_>>(),
                            "claimed_by": claim,
                        })
                    })
                    .collect();
                if let (Some(f), true) = (filter, list.is_empty()) {
                    return Err(err(SERVER_ERROR, format!("no bdev named '{f}'")));
                }
                Ok(Value::Array(list))
            }
            "bdev_get_iostat" => {
                let name = name_param()?;
                let s = xb.registry().stats(&name).map_err(|e| err(SERVER_ERROR, e.to_string()))?;
                let by_type: serde_json::Map<String, Value> = bdev::IoType::ALL
                    .iter()
                    .map(|t| (t.name().to_string(), json!({"ops": s.ops_of(*t), "bytes": s.bytes_of(*t)})))
                    .collect();
                let errors: serde_json::Map<String, Value> = bdev::IoStatus::ALL
                    .iter()
                    .skip(1)
                    .map(|st| (st.name().to_string(), json!(s.errors[*st as usize])))
                    .collect();
                Ok(json!({
                    "name": name, "io": by_type, "errors": errors, "in_flight": s.in_flight,
                    "latency_ns": {"avg": s.mean_latency_ns(), "p50": s.percentile_ns(50.0),
                                   "p99": s.percentile_ns(99.0), "p99_9": s.percentile_ns(99.9)}
                }))
            }
            "bdev_malloc_create" | "bdev_null_create" | "bdev_aio_create" => create(xb, method, &params),
            "bdev_delete" => {
                let name = name_param()?;
                xb.registry().unregister(&name).map_err(|e| err(SERVER_ERROR, e.to_string()))?;
                Ok(Value::Bool(true))
            }
            "save_config" => {
                serde_json::from_str::<Value>(&xb.save_config()).map_err(|e| err(SERVER_ERROR, e.to_string()))
            }
            "framework_get_reactors" => {
                let r: Vec<Value> = xb
                    .reactors()
                    .iter()
                    .map(|h| {
                        let (loops, parks) = h.counters();
                        json!({"index": h.index(), "loops": loops, "parks": parks})
                    })
                    .collect();
                Ok(Value::Array(r))
            }
            m => Err(err(METHOD_NOT_FOUND, format!("unknown method '{m}'"))),
        }
    })();
    let id = id?;
    Some(match result {
        Ok(v) => json!({"jsonrpc": "2.0", "id": id, "result": v}),
        Err((code, message)) => json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}),
    })
}

/// Handle one line of input (a request, or a batch array).
pub fn handle_line(xb: &Xbdev, line: &str) -> Option<String> {
    let v: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => {
            let r = json!({"jsonrpc": "2.0", "id": null, "error": {"code": PARSE_ERROR, "message": format!("parse error: {e}")}});
            return Some(r.to_string());
        }
    };
    match v {
        Value::Array(reqs) => {
            let out: Vec<Value> = reqs.iter().filter_map(|r| handle(xb, r)).collect();
            (!out.is_empty()).then(|| Value::Array(out).to_string())
        }
        r => handle(xb, &r).map(|v| v.to_string()),
    }
}

/// A running RPC server; stops when dropped.
pub struct RpcServer {
    stop: Arc<AtomicBool>,
    path: String,
    thread: Option<JoinHandle<()>>,
}

impl RpcServer {
    /// Serve `xb` on the Unix socket at `path` (replacing a stale socket file).
    pub fn start_unix(xb: Arc<Xbdev>, path: &str) -> std::io::Result<RpcServer> {
        let _ = std::fs::remove_file(path);
        let l = UnixListener::bind(path)?;
        l.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let thread = std::thread::Builder::new().name("xbdev-rpc".into()).spawn(move || {
            while !s2.load(Ordering::Acquire) {
                match l.accept() {
                    Ok((conn, _)) => {
                        let _ = conn.set_nonblocking(false);
                        let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(30)));
                        let mut w = match conn.try_clone() {
                            Ok(w) => w,
                            Err(_) => continue,
                        };
                        for line in BufReader::new(conn).lines() {
                            let Ok(line) = line else { break };
                            if line.trim().is_empty() {
                                continue;
                            }
                            if let Some(resp) = handle_line(&xb, &line) {
                                if writeln!(w, "{resp}").is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
                }
            }
        })?;
        Ok(RpcServer { stop, path: path.to_string(), thread: Some(thread) })
    }
}

impl Drop for RpcServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}
