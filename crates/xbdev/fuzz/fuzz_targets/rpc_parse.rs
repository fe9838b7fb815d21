//! Fuzzes the management RPC request parser (`rpc::parse_line` and `rpc::parse_request`; no
//! request is executed): any UTF-8 line gives requests or typed JSON-RPC errors, never a
//! panic. Beyond that:
//! - a bad line is a parse error (-32700), a bad request an invalid request (-32600), unknown
//!   method (-32601) or invalid params (-32602), never a server error;
//! - the parse does not depend on the request's `id`;
//! - a parsed request written back as JSON (method and params, a device as the params it
//!   saves itself with) parses to the same request.
//!
//! Lines where an address is not an IP literal are skipped (parsing would resolve names).

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use xbdev::rpc::{parse_line, parse_request, Request};
use xbdev::BaseDevice;
use xbdev_fuzz::{resolves_names, saved_params};

/// The request as JSON, when it can be written back.
fn to_json(r: &Request) -> Option<Value> {
    let (method, params) = match r {
        Request::GetMethods => ("rpc_get_methods", json!({})),
        Request::Shutdown => ("shutdown", json!({})),
        Request::GetBdevs { name: None } => ("bdev_get_bdevs", json!({})),
        Request::GetBdevs { name: Some(n) } => ("bdev_get_bdevs", json!({ "name": n })),
        Request::GetIostat { name } => ("bdev_get_iostat", json!({ "name": name })),
        Request::Delete { name } => ("bdev_delete", json!({ "name": name })),
        Request::SaveConfig => ("save_config", json!({})),
        Request::GetReactors => ("framework_get_reactors", json!({})),
        Request::Create(dev) => {
            let method = match dev.as_ref() {
                BaseDevice::Null(_) => "bdev_null_create",
                BaseDevice::Malloc(_) => "bdev_malloc_create",
                _ => return None,
            };
            let params: Value = serde_json::from_str(&saved_params(dev)?)
                .unwrap_or_else(|e| panic!("device {dev:?} saves params that are not JSON: {e}"));
            (method, params)
        }
    };
    Some(json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
}

fuzz_target!(|input: &[u8]| {
    let Ok(line) = std::str::from_utf8(input) else {
        return;
    };
    let v = match parse_line(line) {
        Ok(v) => v,
        Err(e) => {
            assert_eq!(e.code, -32700);
            return;
        }
    };
    if resolves_names(&v) {
        return;
    }
    let reqs = match &v {
        Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    };
    for req in &reqs {
        let parsed = parse_request(req);
        // The id plays no part.
        let mut no_id = req.clone();
        if let Some(o) = no_id.as_object_mut() {
            o.remove("id");
        }
        assert_eq!(format!("{:?}", parse_request(&no_id)), format!("{parsed:?}"));
        match parsed {
            Err(e) => {
                assert!(matches!(e.code, -32600 | -32601 | -32602), "code {} for {req}", e.code);
                assert!(!e.message.is_empty());
            }
            Ok(r) => {
                if let Some(j) = to_json(&r) {
                    let back = parse_request(&j).unwrap_or_else(|e| panic!("{r:?} written as {j} fails: {e:?}"));
                    assert_eq!(format!("{back:?}"), format!("{r:?}"), "written as {j}");
                }
            }
        }
    }
});
