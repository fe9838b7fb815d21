//! Fuzzes the JSON configuration parser (`Config::from_json_str`): any UTF-8 text gives a
//! config or a typed error, never a panic. Beyond that:
//! - an `Invalid` error's path leads into the document (to the bad value, or to the object
//!   missing a required field);
//! - parsing is a function of the JSON value: the value re-serialized parses to the same
//!   config (compared by `Debug`; configs with `nvmf` devices are left out, their host NQN
//!   and id are generated when absent);
//! - every null device and small malloc device saves itself (`Bdev::config_params`, what
//!   `save_config` writes) as params that parse back to the same device.
//!
//! Documents where an `nvmf` address is not an IP literal are skipped: parsing would resolve
//! the name over the network.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use xbdev::{BaseDevice, Config, ConfigError};
use xbdev_fuzz::{lookup, plain_keys, resolves_names, saved_params};

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let value: Option<Value> = serde_json::from_str(text).ok();
    if value.as_ref().is_some_and(resolves_names) {
        return;
    }
    match Config::from_json_str(text) {
        Err(ConfigError::Syntax(_)) => assert!(value.is_none(), "serde_json parsed what the config called bad JSON"),
        Err(ConfigError::Invalid { path, message }) => {
            let v = value.expect("an invalid config is valid JSON");
            assert!(!message.is_empty());
            if plain_keys(&v) {
                assert!(lookup(&v, &path).is_some(), "error path '{path}' ({message}) is not in the document");
            }
        }
        Err(ConfigError::File { .. }) => panic!("parsing text reported a file error"),
        Ok(cfg) => {
            let v = value.expect("a config is valid JSON");
            let again = Config::from_json_str(&v.to_string()).expect("re-serialized config parses");
            let nvmf = cfg.base_devices.iter().any(|d| matches!(d, BaseDevice::Nvmf(_)));
            if !nvmf {
                assert_eq!(format!("{again:?}"), format!("{cfg:?}"));
            }
            for dev in &cfg.base_devices {
                let Some(params) = saved_params(dev) else { continue };
                let method = match dev {
                    BaseDevice::Null(_) => "null",
                    _ => "malloc",
                };
                let doc = format!(r#"{{"base_devices": [{{"method": "{method}", "params": {params}}}]}}"#);
                let back = Config::from_json_str(&doc)
                    .unwrap_or_else(|e| panic!("saved device {dev:?} does not parse: {e} in {doc}"));
                assert_eq!(back.base_devices.len(), 1);
                assert_eq!(format!("{:?}", back.base_devices[0]), format!("{dev:?}"), "saved as {doc}");
            }
        }
    }
});
