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
        {{"method": "nvmf", "params": {{"name": "tcpA", "addr": "127.0.0.1", "port": {}, "nqn": "{nqn}", "queue_depth": 32, "io_queues": 2, "tcp_congestion": "reno"}}}},
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
    let bad = Config::from_json_str(
        r#"{"base_devices": [{"method": "nvmf", "params": {"name": "x", "addr": "127.0.0.1", "nqn": "n", "tcp_congestion": "re no"}}]}"#,
    )
    .unwrap_err();
    assert_eq!(
        bad.to_string(),
        "base_devices[0].params.tcp_congestion: 're no' is not a congestion control algorithm name"
    );
}

#[test]
fn lvol_sections_create_volumes_that_survive_a_restart_from_the_saved_config() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("lvs.img");
    std::fs::File::create(&img).unwrap().set_len(64 << 20).unwrap();
    let cfg = format!(
        r#"{{"reactor": {{"cores": [0], "pin": false}},
        "base_devices": [{{"method": "aio", "params": {{"name": "aio0", "filename": "{}"}}}}],
        "lvol_stores": [{{"name": "lvs0", "base_bdev": "aio0", "cluster_size": 1048576, "no_space_timeout_ms": 2500}}],
        "lvol_volumes": [{{"name": "data", "lvs_name": "lvs0", "size_mb": 16, "thin_provision": true}}],
        "snapshots": [{{"source_vol": "lvs0/data", "name": "snap1"}}],
        "clones": [{{"source_snap": "lvs0/snap1", "name": "clone1"}}]}}"#,
        img.display()
    );
    let xb = Xbdev::start(&Config::from_json_str(&cfg).unwrap()).unwrap();
    let names: Vec<String> = xb.devices().into_iter().map(|d| d.name).collect();
    for n in ["lvs0/data", "lvs0/snap1", "lvs0/clone1"] {
        assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
    }
    let h = xb.open("lvs0/data", true).unwrap();
    h.write(&[0xabu8; 8192], 4096).unwrap();
    h.flush().unwrap();
    h.close().unwrap();
    let saved = xb.save_config();
    assert!(saved.contains("\"lvol_stores\"") && saved.contains("\"clones\""), "{saved}");
    let timeout = |saved: &str| {
        let v: serde_json::Value = serde_json::from_str(saved).unwrap();
        v["lvol_stores"][0]["no_space_timeout_ms"].as_u64()
    };
    assert_eq!(timeout(&saved), Some(2500), "{saved}");
    xb.stop();
    drop(xb);
    // Same disks, saved config: stores and volumes load from disk, nothing is recreated.
    let xb = Xbdev::start(&Config::from_json_str(&saved).unwrap()).unwrap();
    let h = xb.open("lvs0/data", false).unwrap();
    let mut b = vec![0u8; 8192];
    h.read(&mut b, 4096).unwrap();
    assert!(b.iter().all(|&x| x == 0xab), "data survived the restart");
    let c = xb.open("lvs0/clone1", false).unwrap();
    c.read(&mut b, 4096).unwrap();
    assert!(b.iter().all(|&x| x == 0), "the clone shows the snapshot (taken before the write)");
    // The store loaded from disk took the configured timeout too.
    assert_eq!(timeout(&xb.save_config()), Some(2500));
}

#[test]
fn lvol_config_errors_name_the_path() {
    let base = r#""base_devices": [{"method": "malloc", "params": {"name": "m0", "size_mb": 32}}]"#;
    for (extra, want) in [
        (
            r#""lvol_stores": [{"name": "s", "base_bdev": "m0", "cluster_size": 3000}]"#,
            "lvol_stores[0].cluster_size: 3000 is not a power of two",
        ),
        (r#""lvol_volumes": [{"name": "v", "lvs_name": "s"}]"#, "lvol_volumes[0].size_mb: expected a size in MiB"),
        (
            r#""snapshots": [{"source_vol": "novol", "name": "x"}]"#,
            "snapshots[0].source_vol: 'novol' is not of the form lvs/name",
        ),
        (
            r#""lvol_stores": [{"name": "s", "base_bdev": "m0"}, {"name": "s", "base_bdev": "m0"}]"#,
            "lvol_stores[1].name: duplicate store name 's'",
        ),
    ] {
        let e = Config::from_json_str(&format!("{{{base}, {extra}}}")).unwrap_err().to_string();
        assert!(e.starts_with(want), "got {e}\nwant {want}");
    }
    let cfg = format!(
        r#"{{"reactor": {{"cores": [0], "pin": false}}, {base}, "lvol_volumes": [{{"name": "v", "lvs_name": "ghost", "size_mb": 4}}]}}"#
    );
    let e = Xbdev::start(&Config::from_json_str(&cfg).unwrap()).err().unwrap().to_string();
    assert_eq!(e, "lvol_volumes[0].lvs_name: no lvol store named 'ghost'");
    let cfg = format!(
        r#"{{"reactor": {{"cores": [0], "pin": false}}, {base}, "lvol_stores": [{{"name": "s", "base_bdev": "m0", "cluster_size": 1048576}}],
        "lvol_volumes": [{{"name": "v", "lvs_name": "s", "size_mb": 100}}]}}"#
    );
    let e = Xbdev::start(&Config::from_json_str(&cfg).unwrap()).err().unwrap().to_string();
    assert!(e.starts_with("lvol_volumes[0]:"), "size past the store: {e}");
}

#[test]
fn raid_devices_from_config_serve_io_and_reassemble_from_superblocks() {
    let dir = tempfile::tempdir().unwrap();
    let mut base = Vec::new();
    for i in 0..4 {
        let p = dir.path().join(format!("d{i}.img"));
        std::fs::File::create(&p).unwrap().set_len(32 << 20).unwrap();
        base.push(format!(r#"{{"method": "aio", "params": {{"name": "d{i}", "filename": "{}"}}}}"#, p.display()));
    }
    let cfg = format!(
        r#"{{"reactor": {{"cores": [0], "pin": false}}, "base_devices": [{}],
        "raid_devices": [{{"method": "raid5", "params": {{"name": "md0", "base_bdevs": ["d0", "d1", "d2"], "spares": ["d3"],
                           "strip_size_kb": 64, "assume_clean": true}}}}],
        "lvol_stores": [{{"name": "lvs_md", "base_bdev": "md0", "cluster_size": 1048576}}],
        "lvol_volumes": [{{"name": "v", "lvs_name": "lvs_md", "size_mb": 8}}]}}"#,
        base.join(",")
    );
    let xb = Xbdev::start(&Config::from_json_str(&cfg).unwrap()).unwrap();
    let h = xb.open("lvs_md/v", true).unwrap();
    let data: Vec<u8> = (0..131072u32).map(|i| (i * 13 % 256) as u8).collect();
    h.write(&data, 65536).unwrap();
    h.flush().unwrap();
    h.close().unwrap();
    let saved = xb.save_config();
    assert!(saved.contains("\"raid_devices\""), "{saved}");
    xb.stop();
    drop(xb);
    let xb = Xbdev::start(&Config::from_json_str(&saved).unwrap()).unwrap();
    let h = xb.open("lvs_md/v", false).unwrap();
    let mut back = vec![0u8; data.len()];
    h.read(&mut back, 65536).unwrap();
    assert_eq!(back, data, "array reassembled, volume store reloaded, data intact");
    for (json, want) in [
        (r#"[{"method": "raid7", "params": {}}]"#, "raid_devices[0].method: unknown method 'raid7'"),
        (
            r#"[{"method": "raid5", "params": {"name": "x", "base_bdevs": ["a", "b"]}}]"#,
            "raid_devices[0].params.base_bdevs: raid5 needs at least 3 members, 2 given",
        ),
        (
            r#"[{"method": "raid0", "params": {"name": "x", "base_bdevs": ["a", "b"], "strip_size_kb": 48}}]"#,
            "raid_devices[0].params.strip_size_kb: 48 KiB is not a power of two",
        ),
        (
            r#"[{"method": "raid1", "params": {"name": "x", "base_bdevs": ["a", "a"]}}]"#,
            "raid_devices[0].params.base_bdevs: bdev 'a' is listed twice",
        ),
        (
            r#"[{"method": "raid1", "params": {"name": "x", "base_bdevs": ["a", "b"], "faulty": ["c"]}}]"#,
            "raid_devices[0].params.faulty: 'c' is not one of the base_bdevs",
        ),
    ] {
        let e = Config::from_json_str(&format!(r#"{{"raid_devices": {json}}}"#)).unwrap_err().to_string();
        assert!(e.starts_with(want), "got {e}\nwant {want}");
    }
}

#[test]
fn raid_devices_with_faulty_members_run_degraded() {
    let cfg = r#"{"reactor": {"cores": [0], "pin": false},
        "base_devices": [{"method": "malloc", "params": {"name": "a", "size_mb": 8, "block_size": 512}},
                         {"method": "malloc", "params": {"name": "b", "size_mb": 8, "block_size": 512}},
                         {"method": "malloc", "params": {"name": "c", "size_mb": 8, "block_size": 512}}],
        "raid_devices": [{"method": "raid5", "params": {"name": "md0", "base_bdevs": ["a", "b", "c"],
                           "assume_clean": true, "faulty": ["b"]}}]}"#;
    let xb = Xbdev::start(&Config::from_json_str(cfg).unwrap()).unwrap();
    let d = xb.arrays()[0].detail();
    assert!(d.degraded && d.active_disks == 2, "{d:?}");
    let h = xb.open("md0", true).unwrap();
    let data: Vec<u8> = (0..65536u32).map(|i| (i * 7 % 251) as u8).collect();
    h.write(&data, 4096).unwrap();
    let mut back = vec![0u8; data.len()];
    h.read(&mut back, 4096).unwrap();
    assert_eq!(back, data);
}
