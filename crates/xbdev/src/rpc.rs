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

/// A management request, parsed and checked, not yet executed.
#[derive(Clone, Debug)]
pub enum Request {
    /// `rpc_get_methods`.
    GetMethods,
    /// `shutdown`.
    Shutdown,
    /// `bdev_get_bdevs`, optionally only the bdev with this name or alias.
    GetBdevs {
        /// `params.name`.
        name: Option<String>,
    },
    /// `bdev_get_iostat` of one bdev.
    GetIostat {
        /// `params.name`.
        name: String,
    },
    /// `bdev_malloc_create`, `bdev_null_create`, `bdev_aio_create`.
    Create(Box<BaseDevice>),
    /// `bdev_delete`.
    Delete {
        /// `params.name`.
        name: String,
    },
    /// `save_config`.
    SaveConfig,
    /// `framework_get_reactors`.
    GetReactors,
}

/// A request that could not be parsed or executed: a JSON-RPC error code and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcError {
    /// JSON-RPC error code (-32600 invalid request, -32601 unknown method, -32602 invalid
    /// params, -32000 server error).
    pub code: i64,
    /// What is wrong.
    pub message: String,
}

fn err(code: i64, msg: impl Into<String>) -> RpcError {
    RpcError { code, message: msg.into() }
}

/// Set by the `shutdown` method; daemons wait on it.
pub static SHUTDOWN: AtomicBool = AtomicBool::new(false);

fn name_param(params: &Value) -> Result<String, RpcError> {
    params
        .get("name")
        .and_then(Value::as_str)
        .map(String::from)
        .ok_or_else(|| err(INVALID_PARAMS, "params.name: missing required string"))
}

/// Parse one request object (without executing it): the method and its parameters, checked
/// like the JSON config's. The request's `id` is not looked at.
pub fn parse_request(req: &Value) -> Result<Request, RpcError> {
    let obj = req.as_object().ok_or_else(|| err(INVALID_REQUEST, "request is not an object"))?;
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(err(INVALID_REQUEST, "jsonrpc must be \"2.0\""));
    }
    let method = obj.get("method").and_then(Value::as_str).ok_or_else(|| err(INVALID_REQUEST, "method missing"))?;
    let params = obj.get("params").cloned().unwrap_or(json!({}));
    Ok(match method {
        "rpc_get_methods" => Request::GetMethods,
        "shutdown" => Request::Shutdown,
        "bdev_get_bdevs" => Request::GetBdevs { name: params.get("name").and_then(Value::as_str).map(String::from) },
        "bdev_get_iostat" => Request::GetIostat { name: name_param(&params)? },
        "bdev_malloc_create" | "bdev_null_create" | "bdev_aio_create" => {
            let m = method.trim_start_matches("bdev_").trim_end_matches("_create");
            // Reuse the config parser: same field names, same path-precise errors.
            let doc = json!({"base_devices": [{"method": m, "params": params}]});
            let cfg = Config::from_value(&doc)
                .map_err(|e| err(INVALID_PARAMS, e.to_string().replace("base_devices[0].", "")))?;
            let dev = cfg.base_devices.into_iter().next().ok_or_else(|| err(INVALID_PARAMS, "no device"))?;
            Request::Create(Box::new(dev))
        }
        "bdev_delete" => Request::Delete { name: name_param(&params)? },
        "save_config" => Request::SaveConfig,
        "framework_get_reactors" => Request::GetReactors,
        m => return Err(err(METHOD_NOT_FOUND, format!("unknown method '{m}'"))),
    })
}

/// Execute a parsed request against `xb`.
pub fn execute(xb: &Xbdev, req: &Request) -> Result<Value, RpcError> {
    match req {
        Request::GetMethods => Ok(json!(METHODS)),
        Request::Shutdown => {
            SHUTDOWN.store(true, Ordering::Release);
            Ok(Value::Bool(true))
        }
        Request::GetBdevs { name } => {
            let filter = name.as_deref();
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
        Request::GetIostat { name } => {
            let s = xb.registry().stats(name).map_err(|e| err(SERVER_ERROR, e.to_string()))?;
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
        Request::Create(dev) => {
            xb.create_base_device(dev).map_err(|e| err(SERVER_ERROR, e.to_string()))?;
            Ok(Value::from(dev.name()))
        }
        Request::Delete { name } => {
            xb.registry().unregister(name).map_err(|e| err(SERVER_ERROR, e.to_string()))?;
            Ok(Value::Bool(true))
        }
        Request::SaveConfig => {
            serde_json::from_str::<Value>(&xb.save_config()).map_err(|e| err(SERVER_ERROR, e.to_string()))
        }
        Request::GetReactors => {
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
    }
}

/// Handle one request object; `None` for notifications (no id).
pub fn handle(xb: &Xbdev, req: &Value) -> Option<Value> {
    let id = req.get("id").cloned();
    let result = parse_request(req).and_then(|r| execute(xb, &r));
    let id = id?;
    Some(match result {
        Ok(v) => json!({"jsonrpc": "2.0", "id": id, "result": v}),
        Err(RpcError { code, message }) => {
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
        }
    })
}

/// Parse one line of input as JSON: a request object or a batch array (not yet checked).
pub fn parse_line(line: &str) -> Result<Value, RpcError> {
    serde_json::from_str(line).map_err(|e| err(PARSE_ERROR, format!("parse error: {e}")))
}

/// Handle one line of input (a request, or a batch array).
pub fn handle_line(xb: &Xbdev, line: &str) -> Option<String> {
    match parse_line(line) {
        Err(RpcError { code, message }) => {
            let r = json!({"jsonrpc": "2.0", "id": null, "error": {"code": code, "message": message}});
            Some(r.to_string())
        }
        Ok(Value::Array(reqs)) => {
            let out: Vec<Value> = reqs.iter().filter_map(|r| handle(xb, r)).collect();
            (!out.is_empty()).then(|| Value::Array(out).to_string())
        }
        Ok(r) => handle(xb, &r).map(|v| v.to_string()),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Request, RpcError> {
        parse_request(&parse_line(line)?)
    }

    #[test]
    fn requests_parse_without_an_instance() {
        let r = parse(r#"{"jsonrpc":"2.0","id":1,"method":"bdev_null_create","params":{"name":"n0","num_blocks":8}}"#);
        match r {
            Ok(Request::Create(d)) => {
                assert!(matches!(*d, BaseDevice::Null(ref p) if p.name == "n0" && p.num_blocks == 8))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(r#"{"jsonrpc":"2.0","method":"bdev_get_bdevs","params":{"name":"x"}}"#),
            Ok(Request::GetBdevs { name: Some(n) }) if n == "x"
        ));
        assert!(matches!(
            parse(r#"{"jsonrpc":"2.0","method":"bdev_delete"}"#),
            Err(RpcError { code: INVALID_PARAMS, .. })
        ));
        assert!(matches!(
            parse(r#"{"jsonrpc":"1.0","method":"save_config"}"#),
            Err(RpcError { code: INVALID_REQUEST, .. })
        ));
        assert!(matches!(parse(r#"{"jsonrpc":"2.0","method":"nope"}"#), Err(RpcError { code: METHOD_NOT_FOUND, .. })));
        assert!(matches!(parse("{"), Err(RpcError { code: PARSE_ERROR, .. })));
        let e = parse(r#"{"jsonrpc":"2.0","method":"bdev_malloc_create","params":{"name":"m","size_mb":"4"}}"#);
        assert!(
            matches!(e, Err(RpcError { code: INVALID_PARAMS, ref message }) if message.starts_with("params.size_mb:")),
            "{e:?}"
        );
    }
}
