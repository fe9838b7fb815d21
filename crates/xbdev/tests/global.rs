//! The seed-style process-wide API. One test, so that global state is exercised in order.

use xbdev::{global, Config, XbdevError};

#[test]
fn lifecycle_and_misuse() {
    let cfg = Config::from_json_str(
        r#"{"reactor": {"cores": [0], "pin": false},
            "base_devices": [{"method": "malloc", "params": {"name": "m0", "size_mb": 4}}]}"#,
    )
    .unwrap();
    assert!(matches!(global::open("m0"), Err(XbdevError::NotInitialized)));
    assert!(matches!(global::fini(), Err(XbdevError::NotInitialized)));
    global::init(&cfg).unwrap();
    assert!(matches!(global::init(&cfg), Err(XbdevError::AlreadyInitialized)));
    let fd = global::open("m0").unwrap();
    assert!(matches!(global::open("zz"), Err(XbdevError::UnknownDevice(_))));
    global::write(fd, &[9u8; 1024], 512).unwrap();
    let mut b = [0u8; 1024];
    global::read(fd, &mut b, 512).unwrap();
    assert_eq!(b, [9u8; 1024]);
    global::flush(fd).unwrap();
    assert!(matches!(global::read(fd + 5, &mut b, 0), Err(XbdevError::BadHandle(_))));
    assert!(matches!(global::read(-1, &mut b, 0), Err(XbdevError::BadHandle(-1))));
    global::close(fd).unwrap();
    assert!(matches!(global::close(fd), Err(XbdevError::Closed(_))));
    assert!(matches!(global::read(fd, &mut b, 0), Err(XbdevError::Closed(_))));
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("saved.json");
    global::save_config(p.to_str().unwrap()).unwrap();
    assert!(Config::from_file(p.to_str().unwrap()).is_ok());
    global::fini().unwrap();
    assert!(matches!(global::read(fd, &mut b, 0), Err(XbdevError::NotInitialized)));
    global::init(&cfg).expect("init again after fini");
    global::fini().unwrap();
}
