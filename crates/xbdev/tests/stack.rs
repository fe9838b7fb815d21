//! Stacking modules configured from JSON: multipath over base devices.

use xbdev::{Config, Xbdev};

const BASE: &str = r#""reactor": {"cores": [0], "pin": false},
  "base_devices": [{"method": "malloc", "params": {"name": "m0", "size_mb": 4}},
                   {"method": "malloc", "params": {"name": "m1", "size_mb": 4}}]"#;

#[test]
fn multipath_device_from_config_serves_io_and_saves() {
    let cfg = format!(
        r#"{{{BASE}, "multipath_devices": [{{"name": "mp0", "paths": ["m0"], "policy": "round_robin",
            "ios_per_path": 4, "no_path_timeout_us": 1000000}}]}}"#
    );
    let xb = Xbdev::start(&Config::from_json_str(&cfg).unwrap()).unwrap();
    let names: Vec<String> = xb.devices().into_iter().map(|d| d.name).collect();
    assert!(names.contains(&"mp0".to_string()), "{names:?}");
    assert!(!names.contains(&"m0".to_string()), "claimed path is hidden: {names:?}");
    let h = xb.open("mp0", true).unwrap();
    h.write(&[3u8; 4096], 8192).unwrap();
    let mut b = [0u8; 4096];
    h.read(&mut b, 8192).unwrap();
    assert_eq!(b, [3u8; 4096]);
    let saved = xb.save_config();
    assert!(saved.contains("\"multipath_devices\""), "{saved}");
    h.close().unwrap();
    xb.stop();
    let again = Xbdev::start(&Config::from_json_str(&saved).unwrap()).unwrap();
    assert!(again.devices().iter().any(|d| d.name == "mp0"));
}

#[test]
fn multipath_config_errors_are_precise() {
    for (section, want) in [
        (r#"[{"name": "mp0", "paths": []}]"#, "multipath_devices[0].paths: expected at least one path"),
        (r#"[{"name": "mp0", "paths": ["m0"], "policy": "fastest"}]"#, "multipath_devices[0].policy:"),
        (
            r#"[{"name": "mp0", "paths": ["m0"], "ios_per_path": 3}]"#,
            "multipath_devices[0].ios_per_path: only applies to the round_robin policy",
        ),
        (
            r#"[{"name": "mp0", "paths": [{"bdev": "m0", "group": 300}]}]"#,
            "multipath_devices[0].paths[0].group: 300 is not in 0..=255",
        ),
        (
            r#"[{"name": "mp0", "paths": ["m0"], "probe_interval_us": null}]"#,
            "multipath_devices[0].probe_interval_us: must not be null",
        ),
    ] {
        let e =
            Config::from_json_str(&format!(r#"{{{BASE}, "multipath_devices": {section}}}"#)).unwrap_err().to_string();
        assert!(e.starts_with(want), "got {e}\nwant {want}");
    }
    // Two RAM disks are not paths to one namespace: refused when the device is built.
    let cfg = format!(r#"{{{BASE}, "multipath_devices": [{{"name": "mp0", "paths": ["m0", "m1"]}}]}}"#);
    let e = Xbdev::start(&Config::from_json_str(&cfg).unwrap()).err().unwrap().to_string();
    assert!(e.contains("m1"), "{e}");
    let cfg = format!(r#"{{{BASE}, "multipath_devices": [{{"name": "mp0", "paths": ["nope"]}}]}}"#);
    let e = Xbdev::start(&Config::from_json_str(&cfg).unwrap()).err().unwrap().to_string();
    assert!(e.contains("nope"), "{e}");
}

#[test]
fn nvmf_paths_from_config_assemble_into_a_multipath_device() {
    use bdev::backends::malloc::{MallocBdev, MallocParams};
    use nvme_tcp::target::{SubsystemConfig, Target, TargetConfig};
    let ns: std::sync::Arc<dyn bdev::Bdev> = std::sync::Arc::new(
        MallocBdev::new(MallocParams { name: "exp".into(), num_blocks: 8192, block_size: 512 }).unwrap(),
    );
    let nqn = "nqn.2024-01.io.xbdev:stack";
    let target = Target::start(TargetConfig::new(
        vec!["127.0.0.1:0".parse().unwrap(), "127.0.0.1:0".parse().unwrap()],
        vec![SubsystemConfig::new(nqn, vec![ns])],
    ))
    .unwrap();
    let ports: Vec<u16> = target.addrs().iter().map(|a| a.port()).collect();
    let cfg = format!(
        r#"{{"reactor": {{"cores": [0], "pin": false}}, "base_devices": [
        {{"method": "nvmf", "params": {{"name": "tcpA", "addr": "127.0.0.1", "port": {}, "nqn": "{nqn}", "queue_depth": 32, "io_queues": 2}}}},
        {{"method": "nvmf", "params": {{"name": "tcpB", "addr": "127.0.0.1", "port": {}, "nqn": "{nqn}", "hdgst": true, "ddgst": true}}}}]}}"#,
        ports[0], ports[1]
    );
    let xb = Xbdev::start(&Config::from_json_str(&cfg).unwrap()).unwrap();
    let devs: Vec<String> = xb.devices().into_iter().map(|d| d.name).collect();
    let mp =
        devs.iter().find(|n| n.starts_with("mp-")).unwrap_or_else(|| panic!("no multipath device in {devs:?}")).clone();
    assert!(!devs.iter().any(|n| n == "tcpAn1" || n == "tcpBn1"), "paths hidden: {devs:?}");
    let h = xb.open(&mp, true).unwrap();
    let data: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
    h.write(&data, 1 << 20).unwrap();
    let mut back = vec![0u8; 65536];
    h.read(&mut back, 1 << 20).unwrap();
    assert_eq!(back, data);
    let paths = xb.multipath().get(&mp).unwrap().paths();
    assert_eq!(paths.len(), 2);
    let saved = xb.save_config();
    assert!(saved.contains("\"method\": \"nvmf\"") && saved.contains(&format!("\"port\": {}", ports[1])), "{saved}");
    h.close().unwrap();
    xb.stop();
    drop(target);
    let bad = Config::from_json_str(
        r#"{"base_devices": [{"method": "nvmf", "params": {"name": "x", "addr": "127.0.0.1", "port": 70000, "nqn": "n"}}]}"#,
    )
    .unwrap_err();
    assert_eq!(bad.to_string(), "base_devices[0].params.port: 70000 is not a TCP port");
}
