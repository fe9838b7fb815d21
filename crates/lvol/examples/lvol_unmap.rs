//! Unmap figures: space a thin volume gives back, and the throughput of 1 MiB unmaps over a
//! filled thin volume (releasing clusters) next to the same unmaps on a thick volume (which
//! writes zeroes), on a malloc base. Each pass refills the volumes; best and median of the
//! passes are printed. Run:
//! `cargo run --release -p xbdev-lvol --example lvol_unmap -- [passes]` (default 3).

use bdev::backends::malloc::{MallocBdev, MallocParams};
use bdev::{Bdev, BdevChannel, DmaBuf, IoRequest, IoStatus, IoType, IoVecs, Registry};
use lvol::Lvol;
use std::sync::Arc;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
const BS: u64 = 512;
const QD: usize = 8;

/// Issue `n` 1 MiB requests from block 0 on, `QD` in flight; returns the elapsed time.
fn drive(ch: &mut BdevChannel, ty: IoType, n: u64, buf: &mut DmaBuf) -> Duration {
    let nb = MIB / BS;
    let (mut issued, mut done) = (0u64, 0u64);
    let t0 = Instant::now();
    while done < n {
        while issued < n && issued - done < QD as u64 {
            let io = match ty {
                IoType::Write => IoRequest::write(issued * nb, nb, IoVecs::single(buf.iovec()), issued),
                _ => IoRequest::no_data(ty, issued * nb, nb, issued),
            };
            if ch.submit(&io).is_err() {
                break;
            }
            issued += 1;
        }
        ch.poll(&mut |_, st| {
            assert_eq!(st, IoStatus::Success);
            done += 1;
        });
    }
    t0.elapsed()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let passes: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    let reg = Registry::new();
    let lvol = Lvol::new(&reg);
    let base: Arc<dyn Bdev> = Arc::new(
        MallocBdev::new(MallocParams { name: "m0".into(), num_blocks: 2048 * MIB / BS, block_size: BS as u32 })
            .unwrap(),
    );
    reg.register(base).unwrap();
    lvol.lvs_create("m0", "lvs", 0).unwrap();
    let vol_mib = 512;
    lvol.lvol_create("lvs", "thin", vol_mib, true).unwrap();
    lvol.lvol_create("lvs", "thick", vol_mib, false).unwrap();
    let store = lvol.store("lvs").unwrap();
    let mut buf = DmaBuf::alloc(MIB as usize).unwrap();
    for (i, x) in buf.as_mut_slice().iter_mut().enumerate() {
        *x = (i * 7 + 3) as u8;
    }
    let open = |name: &str| reg.open(&format!("lvs/{name}"), true).unwrap().channel().unwrap();
    let (mut thin, mut thick) = (open("thin"), open("thick"));
    let (mut r_thin, mut r_thick) = (Vec::new(), Vec::new());
    println!("store: {} clusters of {} MiB", store.info().total_clusters, store.info().cluster_size / MIB);
    for pass in 0..passes {
        drive(&mut thin, IoType::Write, vol_mib, &mut buf);
        drive(&mut thick, IoType::Write, vol_mib, &mut buf);
        let before = store.info().free_clusters;
        let owned = store.volume("thin").unwrap().allocated_clusters;
        let t = drive(&mut thin, IoType::Unmap, vol_mib, &mut buf);
        let after = store.info();
        let left = store.volume("thin").unwrap().allocated_clusters;
        let t2 = drive(&mut thick, IoType::Unmap, vol_mib, &mut buf);
        let (a, b) = (vol_mib as f64 / t.as_secs_f64(), vol_mib as f64 / t2.as_secs_f64());
        println!(
            "pass {pass}: thin unmap {a:.0} MiB/s, clusters owned {owned} -> {left}, store free {before} -> {} \
             ({} releasing); thick unmap (writes zeroes) {b:.0} MiB/s",
            after.free_clusters, after.releasing_clusters
        );
        r_thin.push(a);
        r_thick.push(b);
    }
    let best = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
    println!(
        "1 MiB unmaps, QD {QD}, {vol_mib} MiB filled volume: thin (release) best {:.0} median {:.0} MiB/s; \
         thick (zeroes) best {:.0} median {:.0} MiB/s",
        best(&r_thin),
        median(&mut r_thin.clone()),
        best(&r_thick),
        median(&mut r_thick.clone())
    );
}
