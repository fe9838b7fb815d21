//! Grouping paths by namespace identity: examine-driven assembly, masking, refusal of paths
//! that do not fit, configuration output, deletion.

mod common;

use bdev::backends::malloc::{MallocBdev, MallocParams};
use bdev::backends::port::PortBdev;
use bdev::*;
use common::{read1, run};
use multipath::*;
use std::sync::Arc;

fn malloc(reg: &Registry, name: &str, blocks: u64, bs: u32) {
    let m = MallocBdev::new(MallocParams { name: name.into(), num_blocks: blocks, block_size: bs }).unwrap();
    reg.register(Arc::new(m)).unwrap();
}

fn ports(reg: &Registry, base: &str, names: &[&str]) -> Vec<Arc<PortBdev>> {
    let ports = PortBdev::create(reg.open(base, true).unwrap(), names).unwrap();
    for p in &ports {
        reg.register(p.clone()).unwrap();
    }
    ports
}

/// A bdev over another that reports a chosen description (another path's identity, a wrong
/// size...), as a misconfigured or foreign path would.
struct Relabeled {
    inner: Arc<dyn Bdev>,
    info: BdevInfo,
}

impl Bdev for Relabeled {
    fn info(&self) -> &BdevInfo {
        &self.info
    }
    fn open_channel(&self) -> Result<Box<dyn IoChannel>, BdevError> {
        self.inner.open_channel()
    }
}

fn relabeled(reg: &Registry, name: &str, base: &str, f: impl FnOnce(&mut BdevInfo)) {
    let inner = reg.lookup(base).unwrap();
    let mut info = inner.info().clone();
    info.name = name.into();
    f(&mut info);
    reg.register(Arc::new(Relabeled { inner, info })).unwrap();
}

#[test]
fn examine_assembles_paths_to_one_namespace_and_hides_them() {
    let reg = Registry::new();
    let module = MultipathModule::new(AutoAssemble::default());
    reg.add_examiner(module.clone());
    malloc(&reg, "m", 2048, 512);
    malloc(&reg, "other", 2048, 512);
    let ns = reg.lookup("m").unwrap().info().ns_id;
    let ps = ports(&reg, "m", &["p0", "p1"]);
    let devs = module.devices();
    assert_eq!(devs.len(), 1, "one device for the two ports");
    let dev = &devs[0];
    let uuid = ns.uuid.unwrap();
    assert_eq!(dev.name(), format!("mp-{uuid}"));
    assert_eq!(dev.info().uuid, uuid);
    assert_eq!(dev.info().product, PRODUCT);
    assert_eq!(dev.config_params(), None, "auto-assembled devices are not saved");
    // A third port appearing later joins.
    reg.register(Arc::new(ps[0].sibling("p2").unwrap())).unwrap();
    let names: Vec<String> = dev.paths().iter().map(|p| p.name.clone()).collect();
    assert_eq!(names, ["p0", "p1", "p2"]);
    assert!(dev.paths().iter().all(|p| p.state == PathState::Active));
    let mut listed: Vec<String> = reg.list().into_iter().map(|i| i.name).collect();
    listed.sort();
    assert_eq!(listed, vec!["m".to_string(), dev.name().to_string(), "other".into()], "paths are hidden");
    let all = reg.list_all();
    let claim = |n: &str| all.iter().find(|(i, _)| i.name == n).and_then(|(_, c)| c.clone());
    assert_eq!(claim("p1"), Some(format!("multipath:{}", dev.name())));
    assert_eq!(claim("m"), Some("port:m".to_string()));
    // IO through the device.
    let d = reg.open(dev.name(), true).unwrap();
    let mut ch = d.channel().unwrap();
    let mut b = DmaBuf::alloc(512).unwrap();
    for i in 0..30 {
        assert_eq!(read1(&mut ch, &mut b, i), IoStatus::Success);
    }
    assert!(dev.paths().iter().all(|p| p.stats.reads > 0), "queue_length spreads IO over all paths");
    // Hot-removed, then reconnected under a new name: leaves, then joins again.
    reg.unregister("p1").unwrap();
    assert_eq!(dev.paths().len(), 2);
    reg.register(Arc::new(ps[0].sibling("p1-again").unwrap())).unwrap();
    assert_eq!(dev.paths().len(), 3);
    assert_eq!(read1(&mut ch, &mut b, 0), IoStatus::Success);
}

#[test]
fn auto_assembly_honours_products_and_min_paths() {
    let reg = Registry::new();
    let module = MultipathModule::new(AutoAssemble { products: vec!["nvme".into()], ..Default::default() });
    reg.add_examiner(module.clone());
    malloc(&reg, "m", 64, 512);
    ports(&reg, "m", &["p0", "p1"]);
    assert!(module.devices().is_empty(), "ports are not nvme");
    let reg = Registry::new();
    let module =
        MultipathModule::new(AutoAssemble { products: vec!["port".into()], min_paths: 1, ..Default::default() });
    reg.add_examiner(module.clone());
    malloc(&reg, "m", 64, 512);
    ports(&reg, "m", &["p0"]);
    assert_eq!(module.devices().len(), 1, "min_paths 1 wraps a single path");
    assert!(module.set_auto_assemble(AutoAssemble { min_paths: 0, ..Default::default() }).is_err());
    let off = MultipathModule::new(AutoAssemble { enabled: false, ..Default::default() });
    let reg = Registry::new();
    reg.add_examiner(off.clone());
    malloc(&reg, "m", 64, 512);
    ports(&reg, "m", &["p0", "p1"]);
    assert!(off.devices().is_empty());
}

#[test]
fn paths_that_do_not_fit_are_refused_with_a_clear_error() {
    let reg = Registry::new();
    let module = MultipathModule::new(AutoAssemble::default());
    malloc(&reg, "m", 1024, 512);
    ports(&reg, "m", &["a", "b"]);
    let base_ns = reg.lookup("a").unwrap().info().ns_id;
    relabeled(&reg, "bigger", "a", |i| i.num_blocks = 2048);
    relabeled(&reg, "wide", "a", |i| {
        i.block_size = 4096;
        i.num_blocks = 128;
    });
    relabeled(&reg, "anon", "a", |i| i.ns_id = NamespaceId::default());
    relabeled(&reg, "conflict", "a", |i| i.ns_id.uuid = Some(Uuid([9; 16])));
    relabeled(&reg, "extra", "b", |i| i.ns_id.nguid = Some([9; 16]));
    relabeled(&reg, "unrelated", "a", |i| i.ns_id = NamespaceId { nguid: Some([7; 16]), ..Default::default() });
    malloc(&reg, "stranger", 1024, 512);
    let create = |paths: &[&str]| {
        module.create(
            &reg,
            MultipathParams {
                name: Some("mp0".into()),
                paths: paths.iter().map(|p| PathParams::new(p)).collect(),
                options: MultipathOptions::default(),
            },
        )
    };
    let e = create(&["a", "bigger"]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "path 'bigger' refused by multipath bdev 'mp0': size of 2048 blocks differs from 1024 of path 'a'"
    );
    let e = create(&["a", "stranger"]).unwrap_err();
    assert!(matches!(e, MultipathError::Mismatch { .. }), "{e}");
    assert!(e.to_string().contains("namespace uuid differs: path has uuid"), "{e}");
    let e = create(&["a", "unrelated"]).unwrap_err();
    assert!(e.to_string().contains("shares no identifier"), "{e}");
    assert!(matches!(create(&["anon"]), Err(MultipathError::NoIdentity { .. })));
    assert!(create(&["missing"]).unwrap_err().to_string().contains("cannot use bdev 'missing' as a path"));
    // Refusals released everything: the good paths are still free.
    assert!(reg.list().iter().any(|i| i.name == "a"));
    reg.open("a", true).unwrap().claim("test").unwrap();
    let dev = create(&["a", "b"]).unwrap();
    assert_eq!(dev.namespace_id(), base_ns);
    for (path, why) in [("wide", "block size 4096 differs from 512"), ("conflict", "namespace uuid differs")] {
        let e = dev.add_path(&reg, PathParams::new(path)).unwrap_err();
        assert!(e.to_string().contains(why), "{e}");
    }
    // A path that reports one more identifier joins, and the device's identity grows.
    dev.add_path(&reg, PathParams::new("extra")).unwrap();
    assert_eq!(dev.namespace_id(), NamespaceId { nguid: Some([9; 16]), ..base_ns });
    let e = dev.add_path(&reg, PathParams::new("a")).unwrap_err();
    assert!(matches!(e, MultipathError::AlreadyMember { .. }), "{e}");
    let e = dev.add_path(&reg, PathParams::new("mp0")).unwrap_err();
    assert!(e.to_string().contains("cannot be its own path"), "{e}");
    assert!(matches!(dev.remove_path("zz"), Err(MultipathError::NotMember { .. })));
    assert!(matches!(create(&["b"]), Err(MultipathError::Exists(_))));
}

#[test]
fn explicit_devices_report_their_config_and_delete_cleanly() {
    let reg = Registry::new();
    let module = MultipathModule::new(AutoAssemble { enabled: false, ..Default::default() });
    reg.add_examiner(module.clone());
    malloc(&reg, "m", 1024, 512);
    ports(&reg, "m", &["a", "b"]);
    let options = MultipathOptions {
        policy: Policy::RoundRobin { ios_per_path: 4 },
        no_path_timeout: None,
        ..Default::default()
    };
    let params = MultipathParams {
        name: Some("mp\"0".into()),
        paths: vec![PathParams::new("a"), PathParams { bdev: "b".into(), group: 1, weight: 7 }],
        options,
    };
    let dev = module.create(&reg, params.clone()).unwrap();
    assert_eq!(dev.params(), params);
    let json = dev.config_params().unwrap();
    assert_eq!(
        json,
        r#"{"name":"mp\"0","paths":[{"bdev":"a","group":0,"weight":1},{"bdev":"b","group":1,"weight":7}],"policy":"round_robin","ios_per_path":4,"window_ios":20,"stats_reset_interval_us":1000000,"probe_interval_us":1000000,"no_path_timeout_us":null,"ana_check_interval_us":10000,"stall_timeout_us":null,"queue_depth":1024}"#
    );
    assert!(module.get("mp\"0").is_some());
    assert!(reg.list().iter().all(|i| i.name != "a"));
    let d = reg.open("mp\"0", true).unwrap();
    let mut ch = d.channel().unwrap();
    let mut w = common::pattern(512, 5);
    assert_eq!(run(&mut ch, IoRequest::write(5, 1, IoVecs::single(w.iovec()), 1)), IoStatus::Success);
    drop(ch);
    drop(d);
    module.delete(&reg, "mp\"0").unwrap();
    assert!(module.devices().is_empty());
    assert!(matches!(module.delete(&reg, "mp\"0"), Err(MultipathError::NotFound(_))));
    assert!(reg.list().iter().any(|i| i.name == "a"), "paths shown again");
    let a = reg.open("a", true).unwrap();
    a.claim("test").expect("claim released");
    let mut r = DmaBuf::zeroed(512).unwrap();
    assert_eq!(run(&mut a.channel().unwrap(), IoRequest::read(5, 1, IoVecs::single(r.iovec()), 1)), IoStatus::Success);
    assert_eq!(r.as_slice(), w.as_slice());
}

#[test]
fn module_events_cover_every_device() {
    let reg = Registry::new();
    let module = MultipathModule::new(AutoAssemble::default());
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let id = module.subscribe(Arc::new(move |e: &PathEvent| s2.lock().unwrap().push(e.clone())));
    reg.add_examiner(module.clone());
    malloc(&reg, "m", 64, 512);
    ports(&reg, "m", &["p0", "p1"]);
    let dev = module.devices().pop().unwrap();
    dev.remove_path("p0").unwrap();
    let kinds: Vec<(String, PathEventKind)> = seen.lock().unwrap().iter().map(|e| (e.path.clone(), e.kind)).collect();
    assert_eq!(
        kinds,
        vec![
            ("p0".into(), PathEventKind::Added),
            ("p1".into(), PathEventKind::Added),
            ("p0".into(), PathEventKind::Removed)
        ]
    );
    assert!(module.unsubscribe(id));
    assert!(!module.unsubscribe(id));
}

#[test]
fn configuration_replaces_an_auto_assembled_device_and_rescan_groups_existing_bdevs() {
    let reg = Registry::new();
    let module = MultipathModule::new(AutoAssemble::default());
    reg.add_examiner(module.clone());
    malloc(&reg, "m", 256, 512);
    ports(&reg, "m", &["p0", "p1", "p2"]);
    let auto = module.devices().pop().unwrap();
    assert!(auto.is_auto_assembled());
    assert_eq!(auto.paths().len(), 3);
    // The configuration names two of the paths: it takes them, and the third joins it.
    let dev = module
        .create(
            &reg,
            MultipathParams {
                name: Some("mp0".into()),
                paths: vec![PathParams::new("p0"), PathParams::new("p1")],
                options: MultipathOptions { policy: Policy::Random, ..Default::default() },
            },
        )
        .unwrap();
    assert!(!dev.is_auto_assembled());
    assert!(reg.lookup(auto.name()).is_none(), "auto-assembled device deleted");
    let names: Vec<String> = dev.paths().into_iter().map(|p| p.name).collect();
    assert_eq!(names, ["p0", "p1", "p2"]);
    assert_eq!(module.devices().len(), 1);
    // A device in use is not taken over.
    let reg2 = Registry::new();
    let m2 = MultipathModule::new(AutoAssemble::default());
    reg2.add_examiner(m2.clone());
    malloc(&reg2, "m", 256, 512);
    ports(&reg2, "m", &["p0", "p1"]);
    let busy = m2.devices().pop().unwrap();
    let _user = reg2.open(busy.name(), true).unwrap();
    let e = m2
        .create(
            &reg2,
            MultipathParams {
                name: Some("mp0".into()),
                paths: vec![PathParams::new("p0")],
                options: Default::default(),
            },
        )
        .unwrap_err();
    assert!(e.to_string().contains("cannot use bdev 'p0' as a path"), "{e}");
    assert!(reg2.lookup(busy.name()).is_some());
    // Auto-assembly switched on later: rescan groups what is already registered.
    let reg3 = Registry::new();
    let m3 = MultipathModule::new(AutoAssemble { enabled: false, ..Default::default() });
    reg3.add_examiner(m3.clone());
    malloc(&reg3, "m", 256, 512);
    ports(&reg3, "m", &["p0", "p1"]);
    assert!(m3.devices().is_empty());
    m3.set_auto_assemble(AutoAssemble::default()).unwrap();
    m3.rescan(&reg3);
    assert_eq!(m3.devices().len(), 1);
    assert_eq!(m3.devices()[0].paths().len(), 2);
}
