//! On-disk format acceptance tests against Linux md and mdadm.
//!
//! Each test boots a QEMU guest (`/work/shared/testbed/vm-run.sh`, or
//! `$XBDEV_VM_RUN`) whose virtio disks are small image files of this host:
//!
//! * `md_to_xbdev_*`: mdadm creates the array in the guest and writes a
//!   deterministic pattern to `/dev/md0`; on the host the members are
//!   examined and assembled with this crate, the array is read back and
//!   compared byte for byte, also with one (raid6: two) member images
//!   zeroed, and the superblock fields are compared with
//!   `mdadm --examine`.
//! * `xbdev_to_md_*`: this crate creates the array and writes the pattern
//!   into the image files; the guest assembles it with mdadm, checks
//!   `mdadm --detail`/`--examine`, compares `/dev/md0` with the pattern
//!   (sha256 and `cmp`), runs md's parity/mirror `check` and requires zero
//!   mismatches.
//!
//! The guest runs under emulation and is slow; run the tests one at a time:
//! `cargo test -p xbdev-raid --release --test md_interop -- --ignored --test-threads=1`

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use bdev::backends::aio::{AioBdev, AioParams};
use bdev::{BdevChannel, DmaBuf, IoRequest, IoStatus, IoVecs, Registry};
use raid::array::{md_assemble, md_create, AssembleOptions, MdArray, MdConfig, MdDetail};
use raid::create::CreateParams;
use raid::geometry::Level;
use raid::offline::{examine, OfflineArray};
use raid::superblock::{format_uuid, Superblock};

const DISK_MIB: u64 = 32;
const SECTOR: usize = 512;

static VM: Mutex<()> = Mutex::new(());

/// One array configuration, in mdadm's words and in ours.
#[derive(Clone, Copy)]
struct Case {
    name: &'static str,
    level: Level,
    /// `--layout=` value for mdadm, if any.
    mdadm_layout: Option<&'static str>,
    /// md layout number.
    layout: u32,
    disks: u32,
    chunk_kib: u32,
    bitmap: bool,
    /// Let md do its initial resync instead of `--assume-clean`.
    resync: bool,
    /// What `mdadm --examine` prints as "Layout".
    layout_text: Option<&'static str>,
}

const fn case(name: &'static str, level: Level, disks: u32) -> Case {
    Case {
        name,
        level,
        mdadm_layout: None,
        layout: 0,
        disks,
        chunk_kib: 64,
        bitmap: false,
        resync: false,
        layout_text: None,
    }
}

const fn with_layout(mut c: Case, mdadm: &'static str, layout: u32, text: &'static str) -> Case {
    c.mdadm_layout = Some(mdadm);
    c.layout = layout;
    c.layout_text = Some(text);
    c
}

const fn bitmap(mut c: Case) -> Case {
    c.bitmap = true;
    c
}

const fn resync(mut c: Case) -> Case {
    c.resync = true;
    c
}

const RAID0: Case = case("raid0", Level::Raid0, 4);
const RAID1: Case = resync(bitmap(case("raid1", Level::Raid1, 2)));
const RAID4: Case = case("raid4", Level::Raid4, 4);
const RAID5_LA: Case = with_layout(case("raid5-la", Level::Raid5, 4), "left-asymmetric", 0, "left-asymmetric");
const RAID5_RA: Case = with_layout(case("raid5-ra", Level::Raid5, 4), "right-asymmetric", 1, "right-asymmetric");
const RAID5_LS: Case =
    resync(bitmap(with_layout(case("raid5-ls", Level::Raid5, 4), "left-symmetric", 2, "left-symmetric")));
const RAID5_RS: Case = with_layout(case("raid5-rs", Level::Raid5, 4), "right-symmetric", 3, "right-symmetric");
const RAID6_LS: Case = resync(with_layout(case("raid6-ls", Level::Raid6, 5), "left-symmetric", 2, "left-symmetric"));
const RAID6_LA: Case = with_layout(case("raid6-la", Level::Raid6, 5), "left-asymmetric", 0, "left-asymmetric");
const RAID10_N2: Case = with_layout(case("raid10-n2", Level::Raid10, 4), "n2", 0x102, "near=2");
const RAID10_N2_ODD: Case = with_layout(case("raid10-n2-3disks", Level::Raid10, 3), "n2", 0x102, "near=2");
const RAID10_F2: Case = with_layout(case("raid10-f2", Level::Raid10, 4), "f2", 0x201, "far=2");
const RAID10_O2: Case = bitmap(with_layout(case("raid10-o2", Level::Raid10, 4), "o2", 0x10201, "offset=2"));

struct Scratch {
    dir: PathBuf,
    share: PathBuf,
}

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("xbdev-md-interop-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let share = dir.join("share");
        fs::create_dir_all(&share).expect("scratch dir");
        Scratch { dir, share }
    }

    fn images(&self, n: u32) -> Vec<PathBuf> {
        (0..n)
            .map(|i| {
                let p = self.dir.join(format!("d{i}.img"));
                let f = File::create(&p).expect("image");
                f.set_len(DISK_MIB << 20).expect("image size");
                p
            })
            .collect()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Deterministic pseudo-random bytes (xorshift64*).
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed ^ 0x2545_f491_4f6c_dd1d;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Runs `script` in a guest with `disks`. The kernel's crypto self-tests
/// are skipped (under a loaded host they can stall a TCG guest's boot); a
/// guest that fails before the script starts is retried once.
fn vm_run(share: &Path, disks: &[PathBuf], script: &str) -> String {
    let vm = std::env::var("XBDEV_VM_RUN").unwrap_or_else(|_| "/work/shared/testbed/vm-run.sh".into());
    let script = format!("echo GUEST_STARTED\n{script}");
    let mut last = String::new();
    for attempt in 0..2 {
        let mut cmd = Command::new(&vm);
        cmd.arg("-s").arg(share).arg("-t").arg("900").arg("-m").arg("768").arg("-k").arg("cryptomgr.notests");
        for d in disks {
            cmd.arg("-d").arg(d);
        }
        cmd.arg(&script);
        let out = cmd.output().expect("run vm-run.sh");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if out.status.success() {
            return text;
        }
        let started = text.contains("GUEST_STARTED");
        last = format!("guest failed ({}) on attempt {attempt}:\n{text}", out.status);
        if started {
            break;
        }
    }
    panic!("{last}");
}

fn marker<'a>(out: &'a str, key: &str) -> Option<&'a str> {
    out.lines().find_map(|l| l.trim().strip_prefix(key))
}

/// The `Key : Value` lines of an mdadm report between two markers.
fn section(out: &str, name: &str) -> HashMap<String, String> {
    let start = format!("=={name}==");
    let mut map = HashMap::new();
    let mut on = false;
    for l in out.lines() {
        if l.trim() == start {
            on = true;
            continue;
        }
        if on && l.trim().starts_with("==") {
            break;
        }
        if on {
            if let Some((k, v)) = l.split_once(" : ") {
                map.insert(k.trim().to_string(), v.trim().to_string());
            }
        }
    }
    assert!(on, "no {name} section in:\n{out}");
    map
}

fn first_number(s: &str) -> u64 {
    s.split(|c: char| !c.is_ascii_digit()).find(|t| !t.is_empty()).and_then(|t| t.parse().ok()).unwrap_or(u64::MAX)
}

fn mdadm_level_args(c: &Case) -> String {
    let mut a = format!("--level={} --raid-devices={}", c.level.to_md(), c.disks);
    if c.level != Level::Raid1 {
        a += &format!(" --chunk={}", c.chunk_kib);
    }
    if let Some(l) = c.mdadm_layout {
        a += &format!(" --layout={l}");
    }
    a
}

fn dev_list(n: u32) -> String {
    (0..n).map(|i| format!("/dev/vd{}", (b'a' + i as u8) as char)).collect::<Vec<_>>().join(" ")
}

fn open_images(paths: &[PathBuf]) -> Vec<File> {
    paths.iter().map(|p| OpenOptions::new().read(true).write(true).open(p).expect("open image")).collect()
}

fn read_array(array: &OfflineArray<File>) -> Vec<u8> {
    let mut out = vec![0u8; array.sectors() as usize * SECTOR];
    for (i, piece) in out.chunks_mut(1 << 20).enumerate() {
        array.read((i as u64) << 11, piece).unwrap_or_else(|e| panic!("read array at MiB {i}: {e}"));
    }
    out
}

/// Checks what `mdadm --examine` printed against our decoding.
fn compare_examine(c: &Case, ex: &HashMap<String, String>, sb: &Superblock) {
    for key in [
        "Version",
        "Array UUID",
        "Raid Level",
        "Raid Devices",
        "Data Offset",
        "Super Offset",
        "Avail Dev Size",
        "Events",
        "Name",
        "Device Role",
    ] {
        assert!(ex.contains_key(key), "mdadm --examine has no {key}: {ex:#?}");
    }
    assert_eq!(ex["Version"], "1.2");
    assert_eq!(ex["Array UUID"], format_uuid(&sb.set_uuid));
    assert_eq!(ex["Raid Level"], sb.level.name());
    assert_eq!(first_number(&ex["Raid Devices"]), u64::from(sb.raid_disks));
    assert_eq!(first_number(&ex["Data Offset"]), sb.data_offset);
    assert_eq!(first_number(&ex["Super Offset"]), sb.super_offset);
    assert_eq!(first_number(&ex["Avail Dev Size"]), sb.data_size);
    assert_eq!(first_number(&ex["Events"]), sb.events);
    assert_eq!(ex["Name"].split_whitespace().next().unwrap_or(""), sb.name());
    let role = sb.role().expect("role");
    assert_eq!(
        ex["Device Role"],
        match role {
            raid::superblock::DevRole::Active(r) => format!("Active device {r}"),
            other => panic!("member 0 is {other:?}"),
        }
    );
    if c.level.uses_size_field() {
        // mdadm prints the used size only when it differs from the avail size.
        let used = ex.get("Used Dev Size").map_or(sb.data_size, |v| first_number(v));
        assert_eq!(used, sb.size, "used dev size");
    }
    if sb.level != Level::Raid1 {
        assert_eq!(ex["Chunk Size"], format!("{}K", sb.chunk_sectors / 2));
    }
    if let Some(t) = c.layout_text {
        assert_eq!(ex["Layout"], t);
        assert_eq!(sb.layout, c.layout, "layout number");
    }
    if c.bitmap {
        assert_eq!(ex["Internal Bitmap"], format!("{} sectors from superblock", sb.bitmap_offset));
    } else {
        assert!(!ex.contains_key("Internal Bitmap"));
    }
    if sb.bblog_size > 0 {
        assert_eq!(
            ex["Bad Block Log"],
            format!("{} entries available at offset {} sectors", u32::from(sb.bblog_size) * 64, sb.bblog_offset)
        );
    }
}

/// mdadm creates and writes; we read.
fn md_to_xbdev(c: Case) {
    let _vm = VM.lock().unwrap_or_else(|e| e.into_inner());
    let s = Scratch::new(&format!("md2x-{}", c.name));
    let imgs = s.images(c.disks);
    let pat = pattern((DISK_MIB << 20) as usize * c.disks as usize, 0x5eed ^ u64::from(c.layout));
    fs::write(s.share.join("pattern.bin"), &pat).expect("pattern");
    let script = format!(
        "set -e
mdadm --create /dev/md0 --run --metadata=1.2 {level} {clean} {bitmap} {devs}
{wait}
SZ=$(blockdev --getsize64 /dev/md0)
echo SIZE=$SZ
head -c $SZ /mnt/tb/pattern.bin > /dev/md0
sync
head -c $SZ /mnt/tb/pattern.bin | cmp - /dev/md0 && echo GUEST_CMP_OK
echo ==DETAIL==; mdadm --detail /dev/md0; echo ==END==
mdadm --stop /dev/md0
echo ==EXAMINE==; mdadm --examine /dev/vda; echo ==END==
",
        level = mdadm_level_args(&c),
        clean = if c.resync { "" } else { "--assume-clean" },
        bitmap = if c.bitmap { "--bitmap=internal" } else { "" },
        devs = dev_list(c.disks),
        wait = if c.resync { "mdadm --wait /dev/md0 || true" } else { "" },
    );
    let out = vm_run(&s.share, &imgs, &script);
    // Shown by the test harness only when the test fails.
    println!("{out}");
    assert!(out.contains("GUEST_CMP_OK"), "md did not store the pattern:\n{out}");
    let size: usize = marker(&out, "SIZE=").and_then(|v| v.parse().ok()).expect("size");

    // Assemble from the images with this crate and compare byte for byte.
    let asm = OfflineArray::assemble(open_images(&imgs)).expect("assemble md's array");
    assert_eq!(asm.plan.degraded(), 0);
    assert!(asm.plan.clean(), "md left the array dirty");
    assert_eq!(asm.array.sectors() as usize * SECTOR, size, "array size differs from md's");
    assert!(read_array(&asm.array) == pat[..size], "array contents differ ({})", c.name);
    let detail = section(&out, "DETAIL");
    assert_eq!(first_number(&detail["Array Size"]) * 2, asm.array.sectors());
    let ex = section(&out, "EXAMINE");
    let files = open_images(&imgs);
    let ours = examine(0, &files[0]).expect("examine");
    assert_eq!(ours.bitmap.is_some(), c.bitmap);
    compare_examine(&c, &ex, &ours.superblock);
    if c.bitmap {
        let b = asm.examined[0].as_ref().and_then(|e| e.bitmap.clone()).expect("bitmap");
        assert_eq!(b.sync_size, asm.array.geometry().resync_sectors(), "bitmap sync size");
        assert_eq!(b.uuid, asm.plan.superblock.set_uuid);
    }
    drop(asm);
    // The same through the RAID bdev (md_assemble over aio bdevs).
    read_via_bdev(&imgs, &pat[..size]);

    // Degraded: zero one member (raid6: two) and reconstruct.
    if c.level.redundancy() > 0 {
        let lose = if c.level == Level::Raid6 { 2 } else { 1 };
        for first in 0..c.disks as usize {
            let files = open_images(&imgs);
            let mut copies = Vec::new();
            for (i, f) in files.iter().enumerate() {
                let p = s.dir.join(format!("deg{i}.img"));
                let dst = File::create(&p).expect("copy");
                dst.set_len(DISK_MIB << 20).expect("copy size");
                if (i + c.disks as usize - first) % c.disks as usize >= lose {
                    let mut src = f;
                    std::io::copy(&mut src, &mut &dst).expect("copy image");
                }
                copies.push(p);
            }
            let asm = OfflineArray::assemble(open_images(&copies))
                .unwrap_or_else(|e| panic!("{}: degraded assemble without {first}: {e}", c.name));
            assert_eq!(asm.plan.degraded(), lose);
            assert!(
                read_array(&asm.array) == pat[..size],
                "{}: degraded contents differ without members {first}+{lose}",
                c.name
            );
        }
    }
}

/// We create and write; md reads and checks.
fn xbdev_to_md(c: Case, via_bdev: bool) {
    let _vm = VM.lock().unwrap_or_else(|e| e.into_inner());
    let s = Scratch::new(&format!("x2md-{}{}", c.name, if via_bdev { "-bdev" } else { "" }));
    let imgs = s.images(c.disks);
    let (size, pat) = if via_bdev { write_via_bdev(&c, &imgs) } else { write_offline(&c, &imgs) };
    // What md should report: the superblock as it is on disk now.
    let sb = examine(0, &open_images(&imgs)[0]).expect("examine our array").superblock;
    fs::write(s.share.join("pattern.bin"), &pat).expect("pattern");
    let sha = Command::new("sha256sum").arg(s.share.join("pattern.bin")).output().expect("sha256sum");
    let sha = String::from_utf8_lossy(&sha.stdout).split_whitespace().next().unwrap_or("").to_string();
    let redundant = c.level.redundancy() > 0;
    let script = format!(
        "set -e
mdadm --assemble /dev/md0 {devs}
cat /proc/mdstat
echo ==DETAIL==; mdadm --detail /dev/md0; echo ==END==
echo ==EXAMINE==; mdadm --examine /dev/vda; echo ==END==
{bitmap}
echo SIZE=$(blockdev --getsize64 /dev/md0)
echo SHA=$(sha256sum /dev/md0 | cut -d' ' -f1)
cmp /dev/md0 /mnt/tb/pattern.bin && echo GUEST_CMP_OK
{check}
mdadm --stop /dev/md0
",
        devs = dev_list(c.disks),
        bitmap = if c.bitmap { "echo ==BITMAP==; mdadm --examine-bitmap /dev/vda; echo ==END==" } else { "" },
        check = if redundant {
            "echo check > /sys/block/md0/md/sync_action
sleep 1
mdadm --wait /dev/md0 || true
echo MISMATCH=$(cat /sys/block/md0/md/mismatch_cnt)
echo ACTION=$(cat /sys/block/md0/md/last_sync_action)"
        } else {
            ""
        },
    );
    let out = vm_run(&s.share, &imgs, &script);
    // Shown by the test harness only when the test fails.
    println!("{out}");
    let detail = section(&out, "DETAIL");
    let sb = &sb;
    assert_eq!(detail["Raid Level"], c.level.name(), "{out}");
    assert_eq!(first_number(&detail["Raid Devices"]), u64::from(c.disks));
    assert_eq!(first_number(&detail["Active Devices"]), u64::from(c.disks));
    assert_eq!(first_number(&detail["Failed Devices"]), 0);
    assert_eq!(detail["UUID"], format_uuid(&sb.set_uuid));
    assert!(detail["State"].starts_with("clean"), "state {}", detail["State"]);
    assert_eq!(first_number(&detail["Array Size"]) * 2, (size / SECTOR) as u64);
    if let Some(t) = c.layout_text {
        assert_eq!(detail["Layout"], t);
    }
    assert!(!out.contains("resync ="), "md started a resync:\n{out}");
    assert!(!out.contains("recovery ="), "md started a recovery:\n{out}");
    assert_eq!(marker(&out, "SIZE=").and_then(|v| v.parse::<usize>().ok()), Some(size));
    assert_eq!(marker(&out, "SHA="), Some(sha.as_str()), "sha256 of /dev/md0 differs");
    assert!(out.contains("GUEST_CMP_OK"), "/dev/md0 differs from the pattern");
    if redundant {
        assert_eq!(marker(&out, "ACTION="), Some("check"));
        assert_eq!(marker(&out, "MISMATCH="), Some("0"), "md found parity/mirror mismatches");
    }
    let files = open_images(&imgs);
    compare_examine(&c, &section(&out, "EXAMINE"), sb);
    if c.bitmap {
        let bm = section(&out, "BITMAP");
        assert_eq!(bm["Magic"], "6d746962");
        assert_eq!(bm["UUID"], format_uuid(&sb.set_uuid));
        assert!(bm["Bitmap"].contains(" 0 dirty"), "bitmap {}", bm["Bitmap"]);
    }
    // md has updated the superblocks (events, utime): they still parse and
    // the data still reads back.
    let asm = OfflineArray::assemble(files).expect("assemble after md");
    // md records its check (and the active/clean transitions of writes)
    // in the superblocks of redundant arrays.
    if redundant {
        assert!(asm.plan.events > sb.events, "md did not update the superblocks");
    }
    assert!(read_array(&asm.array) == pat, "contents after md");
}

fn write_offline(c: &Case, imgs: &[PathBuf]) -> (usize, Vec<u8>) {
    let mut p = CreateParams::new(c.level, c.disks);
    p.layout = Some(c.layout);
    p.chunk_sectors = if c.level == Level::Raid1 { 0 } else { c.chunk_kib * 2 };
    p.name = "xbdev:interop".into();
    if c.bitmap {
        p.bitmap_chunk = Some(0);
    }
    let (mut array, _, _) = OfflineArray::create(&p, open_images(imgs)).expect("create");
    let size = array.sectors() as usize * SECTOR;
    let pat = pattern(size, 0xfeed ^ u64::from(c.layout));
    for (i, piece) in pat.chunks(1 << 20).enumerate() {
        array.write((i as u64) << 11, piece).expect("write array");
    }
    (size, pat)
}

/// The image files as aio bdevs `d0`, `d1`, ...
fn aio_registry(imgs: &[PathBuf]) -> (Arc<Registry>, Vec<String>) {
    let reg = Registry::new();
    let mut names = Vec::new();
    for (i, p) in imgs.iter().enumerate() {
        let name = format!("d{i}");
        let b = AioBdev::new(AioParams::new(&name, &p.to_string_lossy())).expect("aio bdev");
        reg.register(Arc::new(b)).expect("register");
        names.push(name);
    }
    (reg, names)
}

fn run_io(ch: &mut BdevChannel, io: IoRequest) -> IoStatus {
    ch.submit(&io).expect("submit");
    let mut got = None;
    let t0 = std::time::Instant::now();
    while got.is_none() {
        ch.poll(&mut |_, st| got = Some(st));
        assert!(t0.elapsed() < std::time::Duration::from_secs(60), "io timed out");
    }
    got.unwrap_or(IoStatus::Timeout)
}

/// Writes `data` at byte `at` of the array through `buf` (at least as large).
fn write_at(ch: &mut BdevChannel, buf: &mut DmaBuf, at: usize, data: &[u8]) -> IoStatus {
    buf.as_mut_slice()[..data.len()].copy_from_slice(data);
    let iov = IoVecs::single(buf.iovec_range(0, data.len()).expect("iov"));
    run_io(ch, IoRequest::write(at as u64 / 512, data.len() as u64 / 512, iov, 0))
}

/// Writes `pat` over the array from its start, 1 MiB at a time.
fn write_pattern(ch: &mut BdevChannel, pat: &[u8]) {
    let mut buf = DmaBuf::alloc(1 << 20).expect("buffer");
    for (i, piece) in pat.chunks(1 << 20).enumerate() {
        assert_eq!(write_at(ch, &mut buf, i << 20, piece), IoStatus::Success, "write MiB {i}");
    }
}

/// Polls the array's detail until `done` holds; fails naming `what` after `secs`.
fn wait_detail(array: &MdArray, what: &str, secs: u64, done: impl Fn(&MdDetail) -> bool) {
    let t0 = std::time::Instant::now();
    while !done(&array.detail()) {
        assert!(t0.elapsed() < std::time::Duration::from_secs(secs), "{what}: {:?}", array.detail());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Guest script of the hand-over cases: `pre` (reports taken before assembly), `mdadm
/// --assemble {assemble}`, wait for md's own recovery, print mdstat and a DETAIL section,
/// compare /dev/md0 with the pattern, run md's check, print its mismatch count, stop.
fn assemble_and_check_script(pre: &str, assemble: &str) -> String {
    format!(
        "set -e
{pre}
mdadm --assemble {assemble}
sleep 1
mdadm --wait /dev/md0 || true
cat /proc/mdstat
echo ==DETAIL==; mdadm --detail /dev/md0; echo ==END==
cmp /dev/md0 /mnt/tb/pattern.bin && echo GUEST_CMP_OK
echo check > /sys/block/md0/md/sync_action
sleep 1
mdadm --wait /dev/md0 || true
echo MISMATCH=$(cat /sys/block/md0/md/mismatch_cnt)
mdadm --stop /dev/md0
"
    )
}

/// The lines between `==NAME==` and the next `==END==` of the guest's output.
fn section_lines<'a>(out: &'a str, name: &str) -> Vec<&'a str> {
    let start = format!("=={name}==");
    out.lines().skip_while(|l| l.trim() != start).skip(1).take_while(|l| l.trim() != "==END==").collect()
}

/// Creates the array with the RAID bdev (md_create over aio bdevs), writes
/// the pattern through it while the initial resync runs, waits for the
/// resync and stops the array.
fn write_via_bdev(c: &Case, imgs: &[PathBuf]) -> (usize, Vec<u8>) {
    let (reg, names) = aio_registry(imgs);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let cfg = MdConfig {
        chunk_kib: c.chunk_kib,
        layout: Some(c.layout),
        bitmap_chunk_kib: c.bitmap.then_some(0),
        ..MdConfig::default()
    };
    let array = md_create(&reg, "md0", c.level, &refs, &cfg).expect("md_create");
    let mut ch = reg.open("md0", true).expect("open").channel().expect("channel");
    let size = (ch.num_blocks() * u64::from(ch.block_size())) as usize;
    let pat = pattern(size, 0xbdef ^ u64::from(c.layout));
    write_pattern(&mut ch, &pat);
    wait_detail(&array, "resync did not finish", 300, |d| d.resync_status == "idle");
    drop(ch);
    array.stop().expect("md_stop");
    (size, pat)
}

/// Assembles md's array with the RAID bdev and reads it all through it.
fn read_via_bdev(imgs: &[PathBuf], expect: &[u8]) {
    let (reg, names) = aio_registry(imgs);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let array = md_assemble(&reg, "md0", &refs, &AssembleOptions::default()).expect("md_assemble");
    assert!(array.is_running());
    let mut ch = reg.open("md0", false).expect("open").channel().expect("channel");
    assert_eq!((ch.num_blocks() * u64::from(ch.block_size())) as usize, expect.len());
    let mut buf = DmaBuf::alloc(1 << 20).expect("buffer");
    for (i, want) in expect.chunks(1 << 20).enumerate() {
        let iov = IoVecs::single(buf.iovec_range(0, want.len()).expect("iov"));
        let io = IoRequest::read((i as u64) << 11, want.len() as u64 / 512, iov, i as u64);
        assert_eq!(run_io(&mut ch, io), IoStatus::Success, "read MiB {i}");
        assert!(&buf.as_slice()[..want.len()] == want, "RAID bdev read differs at MiB {i}");
    }
    drop(ch);
    array.stop().expect("md_stop");
}

macro_rules! interop {
    ($($md2x:ident, $x2md:ident, $bdev2md:ident => $case:expr;)*) => {$(
        #[test]
        #[ignore = "boots a QEMU guest with mdadm (slow)"]
        fn $md2x() {
            md_to_xbdev($case);
        }

        #[test]
        #[ignore = "boots a QEMU guest with mdadm (slow)"]
        fn $x2md() {
            xbdev_to_md($case, false);
        }

        #[test]
        #[ignore = "boots a QEMU guest with mdadm (slow)"]
        fn $bdev2md() {
            xbdev_to_md($case, true);
        }
    )*};
}

interop! {
    md_to_xbdev_raid0, xbdev_to_md_raid0, bdev_to_md_raid0 => RAID0;
    md_to_xbdev_raid1_bitmap, xbdev_to_md_raid1_bitmap, bdev_to_md_raid1_bitmap => RAID1;
    md_to_xbdev_raid4, xbdev_to_md_raid4, bdev_to_md_raid4 => RAID4;
    md_to_xbdev_raid5_left_asymmetric, xbdev_to_md_raid5_left_asymmetric, bdev_to_md_raid5_left_asymmetric => RAID5_LA;
    md_to_xbdev_raid5_right_asymmetric, xbdev_to_md_raid5_right_asymmetric, bdev_to_md_raid5_right_asymmetric => RAID5_RA;
    md_to_xbdev_raid5_left_symmetric_bitmap, xbdev_to_md_raid5_left_symmetric_bitmap,
        bdev_to_md_raid5_left_symmetric_bitmap => RAID5_LS;
    md_to_xbdev_raid5_right_symmetric, xbdev_to_md_raid5_right_symmetric, bdev_to_md_raid5_right_symmetric => RAID5_RS;
    md_to_xbdev_raid6_left_symmetric, xbdev_to_md_raid6_left_symmetric, bdev_to_md_raid6_left_symmetric => RAID6_LS;
    md_to_xbdev_raid6_left_asymmetric, xbdev_to_md_raid6_left_asymmetric, bdev_to_md_raid6_left_asymmetric => RAID6_LA;
    md_to_xbdev_raid10_near2, xbdev_to_md_raid10_near2, bdev_to_md_raid10_near2 => RAID10_N2;
    md_to_xbdev_raid10_near2_3disks, xbdev_to_md_raid10_near2_3disks, bdev_to_md_raid10_near2_3disks => RAID10_N2_ODD;
    md_to_xbdev_raid10_far2, xbdev_to_md_raid10_far2, bdev_to_md_raid10_far2 => RAID10_F2;
    md_to_xbdev_raid10_offset2_bitmap, xbdev_to_md_raid10_offset2_bitmap, bdev_to_md_raid10_offset2_bitmap => RAID10_O2;
}

/// An array of this crate with a write-intent bitmap is left dirty (as by
/// a crash: the process keeps the array, nothing is stopped) after writes
/// to three regions. mdadm must show exactly those three bits dirty, md
/// must assemble it, resync it and read the data back, find no mismatch,
/// and leave a clean bitmap.
#[test]
#[ignore = "boots a QEMU guest with mdadm (slow)"]
fn bdev_to_md_raid5_dirty_bitmap() {
    let _vm = VM.lock().unwrap_or_else(|e| e.into_inner());
    let s = Scratch::new("x2md-raid5-dirty-bitmap");
    let imgs = s.images(4);
    let (reg, names) = aio_registry(&imgs);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    // 64 KiB chunks and 64 KiB per bit: one bit per stripe.
    let cfg = MdConfig { chunk_kib: 64, bitmap_chunk_kib: Some(64), assume_clean: true, ..MdConfig::default() };
    let array = md_create(&reg, "md0", Level::Raid5, &refs, &cfg).expect("md_create");
    array.set_bitmap_daemon_sleep(std::time::Duration::from_secs(3600));
    let mut ch = reg.open("md0", true).expect("open").channel().expect("channel");
    let size = (ch.num_blocks() * u64::from(ch.block_size())) as usize;
    let mut pat = vec![0u8; size];
    let mut buf = DmaBuf::alloc(4096).expect("buffer");
    // Stripes 0, 53 and 106 (192 KiB of data each).
    for (i, at) in [0usize, 10 << 20, 20 << 20].into_iter().enumerate() {
        let piece = pattern(4096, i as u64 + 1);
        pat[at..at + 4096].copy_from_slice(&piece);
        assert_eq!(write_at(&mut ch, &mut buf, at, &piece), IoStatus::Success);
    }
    assert_eq!(array.detail().bitmap.map(|b| b.dirty), Some(3));
    drop(ch);
    // The crash: the array is never stopped; its superblocks say dirty.
    std::mem::forget(array);
    let sb = examine(0, &open_images(&imgs)[0]).expect("examine").superblock;
    assert!(!sb.is_clean());
    fs::write(s.share.join("pattern.bin"), &pat).expect("pattern");
    let script = assemble_and_check_script(
        "echo ==BITMAP==; mdadm --examine-bitmap /dev/vda; echo ==END==",
        &format!("/dev/md0 {}", dev_list(4)),
    ) + "echo ==BITMAP2==; mdadm --examine-bitmap /dev/vda; echo ==END==\n";
    let out = vm_run(&s.share, &imgs, &script);
    println!("{out}");
    let bm = section(&out, "BITMAP");
    assert_eq!(bm["Magic"], "6d746962");
    assert_eq!(bm["UUID"], format_uuid(&sb.set_uuid));
    assert!(bm["Bitmap"].contains(" 3 dirty"), "bitmap {}", bm["Bitmap"]);
    assert!(out.contains("GUEST_CMP_OK"), "/dev/md0 differs from the pattern");
    assert_eq!(marker(&out, "MISMATCH="), Some("0"), "md found parity mismatches");
    let bm = section(&out, "BITMAP2");
    assert!(bm["Bitmap"].contains(" 0 dirty"), "bitmap after md {}", bm["Bitmap"]);
}

/// xbdev stops a raid1 in the middle of a hot replace (md's want_replacement): the new device
/// is recorded as slot 0's replacement with how far the copy got. md must read it the same
/// way (`mdadm --examine`: "Replacement device 0" and the recovery offset), assemble the array,
/// finish the copy, fail the old device, and hold our data with no mirror mismatch.
#[test]
#[ignore = "boots a QEMU guest with mdadm (slow)"]
fn bdev_to_md_raid1_replace_resumed() {
    use raid::array::ManageCmd;
    use raid::superblock::FeatureMap;
    let _vm = VM.lock().unwrap_or_else(|e| e.into_inner());
    let s = Scratch::new("x2md-raid1-replace");
    let imgs = s.images(3);
    let (reg, _names) = aio_registry(&imgs);
    let cfg = MdConfig { assume_clean: true, ..MdConfig::default() };
    let array = md_create(&reg, "md0", Level::Raid1, &["d0", "d1"], &cfg).expect("md_create");
    let mut ch = reg.open("md0", true).expect("open").channel().expect("channel");
    let size = (ch.num_blocks() * u64::from(ch.block_size())) as usize;
    let pat = pattern(size, 21);
    write_pattern(&mut ch, &pat);
    drop(ch);
    // Slowly, so that the stop lands in the middle of the copy.
    array.manage(ManageCmd::SetSyncSpeed(2048)).expect("sync speed");
    array.manage(ManageCmd::ReplaceDisk { old: "d0".into(), new: "d2".into() }).expect("replace");
    wait_detail(&array, "replace did not progress", 60, |d| d.resync_progress >= 10.0);
    array.stop().expect("stop");
    drop(array);
    let sb = examine(2, &open_images(&imgs)[2]).expect("examine").superblock;
    assert!(sb.feature_map.contains(FeatureMap::REPLACEMENT), "not recorded as a replacement");
    assert!(sb.feature_map.contains(FeatureMap::RECOVERY_OFFSET));
    let offset = sb.recovery_offset;
    assert!(offset > 0 && offset < (DISK_MIB << 11), "recovery offset {offset}");
    fs::write(s.share.join("pattern.bin"), &pat).expect("pattern");
    let script = assemble_and_check_script(
        "echo ==EXAMINE==; mdadm --examine /dev/vdc; echo ==END==",
        "/dev/md0 /dev/vda /dev/vdb /dev/vdc",
    );
    let out = vm_run(&s.share, &imgs, &script);
    println!("{out}");
    let ex = section(&out, "EXAMINE");
    assert_eq!(ex.get("Device Role").map(String::as_str), Some("Replacement device 0"), "{ex:?}");
    let md_offset = ex.get("Recovery Offset").map(|v| first_number(v));
    assert_eq!(md_offset, Some(offset), "md reads another recovery offset");
    let detail_lines = section_lines(&out, "DETAIL");
    assert!(
        detail_lines.iter().any(|l| l.contains("/dev/vdc") && l.contains("active sync")),
        "md did not finish the replacement: {detail_lines:?}"
    );
    assert!(
        detail_lines.iter().any(|l| l.contains("/dev/vda") && l.contains("faulty")),
        "md did not fail the replaced device: {detail_lines:?}"
    );
    assert!(out.contains("GUEST_CMP_OK"), "/dev/md0 differs from the pattern");
    assert_eq!(marker(&out, "MISMATCH="), Some("0"), "md found mirror mismatches");
}

/// xbdev re-adds a returning raid5 member through the write-intent bitmap and stops before the
/// recovery starts: the member is back in its old slot, its superblock says "recovering,
/// guided by the bitmap" (feature map 0x83, recovery offset 0), and the bitmap holds the three
/// chunks written while it was out. md must accept that hand-over: assemble all four members,
/// finish the recovery, and hold our data with no parity mismatch.
#[test]
#[ignore = "boots a QEMU guest with mdadm (slow)"]
fn bdev_to_md_raid5_bitmap_readd_handover() {
    use raid::array::ManageCmd;
    use raid::superblock::FeatureMap;
    let _vm = VM.lock().unwrap_or_else(|e| e.into_inner());
    let s = Scratch::new("x2md-raid5-readd");
    let imgs = s.images(4);
    let (reg, names) = aio_registry(&imgs);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    // 64 KiB chunks and 64 KiB per bit: one bit per stripe.
    let cfg = MdConfig { chunk_kib: 64, bitmap_chunk_kib: Some(64), assume_clean: true, ..MdConfig::default() };
    let array = md_create(&reg, "md0", Level::Raid5, &refs, &cfg).expect("md_create");
    array.set_bitmap_daemon_sleep(std::time::Duration::from_millis(50));
    let mut ch = reg.open("md0", true).expect("open").channel().expect("channel");
    let size = (ch.num_blocks() * u64::from(ch.block_size())) as usize;
    let mut pat = pattern(size, 31);
    write_pattern(&mut ch, &pat);
    wait_detail(&array, "bitmap never clean", 30, |d| d.bitmap.map(|b| b.dirty) == Some(0));
    array.manage(ManageCmd::SetFaulty("d3".into())).expect("fail d3");
    array.manage(ManageCmd::RemoveDisk("d3".into())).expect("remove d3");
    // Stripes 0, 53 and 106 change while d3 is out.
    let mut buf = DmaBuf::alloc(4096).expect("buffer");
    for (i, at) in [0usize, 10 << 20, 20 << 20].into_iter().enumerate() {
        let piece = pattern(4096, i as u64 + 40);
        pat[at..at + 4096].copy_from_slice(&piece);
        assert_eq!(write_at(&mut ch, &mut buf, at, &piece), IoStatus::Success);
    }
    drop(ch);
    array.manage(ManageCmd::StopRebuild).expect("pause recovery");
    array.manage(ManageCmd::ReAdd("d3".into())).expect("re-add d3");
    array.stop().expect("stop");
    drop(array);
    let sb = examine(3, &open_images(&imgs)[3]).expect("examine").superblock;
    assert!(sb.feature_map.contains(FeatureMap::RECOVERY_OFFSET | FeatureMap::RECOVERY_BITMAP));
    assert_eq!(sb.recovery_offset, 0);
    fs::write(s.share.join("pattern.bin"), &pat).expect("pattern");
    let script = assemble_and_check_script(
        "echo ==EXAMINE==; mdadm --examine /dev/vdd; echo ==END==
echo ==BITMAP==; mdadm --examine-bitmap /dev/vda; echo ==END==",
        &format!("--run /dev/md0 {}", dev_list(4)),
    );
    let out = vm_run(&s.share, &imgs, &script);
    println!("{out}");
    let ex = section(&out, "EXAMINE");
    assert_eq!(ex.get("Feature Map").map(String::as_str), Some("0x83"), "{ex:?}");
    assert_eq!(ex.get("Recovery Offset").map(|v| first_number(v)), Some(0), "{ex:?}");
    assert_eq!(ex.get("Device Role").map(String::as_str), Some("Active device 3"), "{ex:?}");
    let bm = section(&out, "BITMAP");
    assert!(bm["Bitmap"].contains(" 3 dirty"), "bitmap {}", bm["Bitmap"]);
    let detail_lines = section_lines(&out, "DETAIL");
    let active = detail_lines.iter().filter(|l| l.contains("active sync")).count();
    assert_eq!(active, 4, "md did not finish the recovery: {detail_lines:?}");
    assert!(out.contains("GUEST_CMP_OK"), "/dev/md0 differs from the pattern");
    assert_eq!(marker(&out, "MISMATCH="), Some("0"), "md found parity mismatches");
}
