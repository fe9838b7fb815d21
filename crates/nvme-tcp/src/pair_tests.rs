//! Host queue against controller queue in memory: bytes pass between the
//! two state machines in random splits.

use crate::ctrl::{CmdData, CtrlBuffers, CtrlConfig, CtrlEvent, CtrlQueue};
use crate::host::{DataDir, HostBuffers, HostConfig, HostQueue};
use nvme_spec::command::{Command, IoCommand, QueueType};
use nvme_spec::status::{GenericStatus, Status, StatusCode};
use nvme_spec::Cqe;
use proptest::prelude::*;
use std::collections::HashMap;

const SEG: usize = 1000;
const BS: usize = 512;
const REGIONS: usize = 6;
const REGION_BLOCKS: usize = 80;

fn seg(v: &[u8], at: u32) -> Option<&[u8]> {
    let at = at as usize;
    let end = (at + SEG - at % SEG).min(v.len());
    v.get(at..end).filter(|s| !s.is_empty())
}

fn seg_mut(v: &mut [u8], at: u32) -> Option<&mut [u8]> {
    let at = at as usize;
    let end = (at + SEG - at % SEG).min(v.len());
    v.get_mut(at..end).filter(|s| !s.is_empty())
}

#[derive(Default)]
struct HostBufs {
    bufs: HashMap<u64, Vec<u8>>,
}

impl HostBuffers for HostBufs {
    fn read_dest(&mut self, tag: u64, at: u32) -> Option<&mut [u8]> {
        seg_mut(self.bufs.get_mut(&tag)?, at)
    }
    fn write_src(&self, tag: u64, at: u32) -> Option<&[u8]> {
        seg(self.bufs.get(&tag)?, at)
    }
}

struct Target {
    disk: Vec<u8>,
    bufs: Vec<Vec<u8>>,
    released: usize,
}

impl CtrlBuffers for Target {
    fn dest(&mut self, slot: u16, len: u32, at: u32) -> Option<&mut [u8]> {
        let b = self.bufs.get_mut(usize::from(slot))?;
        if at == 0 {
            b.resize(len as usize, 0);
        }
        seg_mut(b, at)
    }
    fn src(&self, slot: u16, at: u32) -> Option<&[u8]> {
        seg(self.bufs.get(usize::from(slot))?, at)
    }
}

impl Target {
    fn execute(&mut self, q: &mut CtrlQueue, ev: CtrlEvent, cmds: &mut HashMap<u16, IoCommand>) {
        let ok = Cqe::new(0, Status::SUCCESS);
        match ev {
            CtrlEvent::Command { slot, sqe, data } => {
                let Ok(Command::Io(cmd)) = Command::parse(&sqe, QueueType::Io) else {
                    let st = Status::new(StatusCode::Generic(GenericStatus::InvalidOpcode), true);
                    q.complete(slot, Cqe::new(0, st), 0).unwrap();
                    return;
                };
                match (cmd, data) {
                    (IoCommand::Read { slba, nlb, .. }, CmdData::FromController(len)) => {
                        let off = slba as usize * BS;
                        let n = (usize::from(nlb) + 1) * BS;
                        assert_eq!(n, len as usize);
                        let b = &mut self.bufs[usize::from(slot)];
                        b.clear();
                        b.extend_from_slice(&self.disk[off..off + n]);
                        q.complete(slot, ok, len).unwrap();
                    }
                    (IoCommand::Write { .. }, CmdData::ToController(len)) => {
                        self.bufs[usize::from(slot)].resize(len as usize, 0);
                        cmds.insert(slot, cmd);
                        q.request_data(slot).unwrap();
                    }
                    (IoCommand::Write { .. }, CmdData::InCapsule(_)) => {
                        self.write(slot, cmd);
                        q.complete(slot, ok, 0).unwrap();
                    }
                    (IoCommand::Flush { .. }, CmdData::None) => q.complete(slot, ok, 0).unwrap(),
                    other => panic!("unexpected command {other:?}"),
                }
            }
            CtrlEvent::DataReady { slot } => {
                let cmd = cmds.remove(&slot).expect("write pending");
                self.write(slot, cmd);
                q.complete(slot, ok, 0).unwrap();
            }
        }
    }

    fn write(&mut self, slot: u16, cmd: IoCommand) {
        let (slba, n) = cmd.lba_range().unwrap();
        let off = slba as usize * BS;
        let n = n as usize * BS;
        self.disk[off..off + n].copy_from_slice(&self.bufs[usize::from(slot)][..n]);
    }
}

#[derive(Clone, Debug)]
struct Op {
    write: bool,
    blocks: usize,
    start: usize,
    seed: u8,
}

fn op() -> impl Strategy<Value = Op> {
    (any::<bool>(), 1usize..=REGION_BLOCKS, any::<prop::sample::Index>(), any::<u8>())
        .prop_map(|(write, blocks, i, seed)| Op { write, blocks, start: i.index(REGION_BLOCKS - blocks + 1), seed })
}

#[derive(Clone, Debug)]
struct Setup {
    hdgst: bool,
    ddgst: bool,
    incapsule: u32,
    maxh2cdata: u32,
    max_c2h: u32,
    cpda: u8,
    hpda: u8,
    success_flag: bool,
    maxr2t: u32,
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        any::<bool>(),
        any::<bool>(),
        prop::sample::select(vec![0u32, 4096, 8192]),
        prop::sample::select(vec![4096u32, 8192, 131072]),
        prop::sample::select(vec![4096u32, 12288, 65536]),
        prop::sample::select(vec![0u8, 3, 31]),
        prop::sample::select(vec![0u8, 7]),
        any::<bool>(),
        0u32..2,
    )
        .prop_map(|(hdgst, ddgst, incapsule, maxh2cdata, max_c2h, cpda, hpda, success_flag, maxr2t)| Setup {
            hdgst,
            ddgst,
            incapsule,
            maxh2cdata,
            max_c2h,
            cpda,
            hpda,
            success_flag,
            maxr2t,
        })
}

/// Runs batches of IO (one op per disjoint region per batch) through a host
/// and a controller queue joined by in-memory pipes delivering `splits`
/// bytes at a time; checks results against a model disk.
fn run(s: &Setup, batches: &[Vec<Op>], splits: &[usize]) {
    let mut host = HostQueue::new(HostConfig {
        depth: 16,
        hdgst: s.hdgst,
        ddgst: s.ddgst,
        hpda: s.hpda,
        maxr2t: s.maxr2t,
        max_c2h_data: 1 << 20,
        incapsule_max: s.incapsule,
        stage_len: 4096,
    });
    let mut ctrl = CtrlQueue::new(CtrlConfig {
        depth: 16,
        allow_hdgst: true,
        allow_ddgst: true,
        cpda: s.cpda,
        maxh2cdata: s.maxh2cdata,
        incapsule_max: s.incapsule,
        max_c2h_pdu: s.max_c2h,
        stage_len: 4096,
    });
    ctrl.set_success_flag(s.success_flag);
    let disk_len = REGIONS * REGION_BLOCKS * BS;
    let mut target = Target { disk: vec![0; disk_len], bufs: vec![Vec::new(); 16], released: 0 };
    let mut model = vec![0u8; disk_len];
    let mut hbufs = HostBufs::default();
    let mut h2c: Vec<u8> = Vec::new();
    let mut c2h: Vec<u8> = Vec::new();
    let mut split_i = 0usize;
    let mut next_split = || {
        split_i += 1;
        splits[split_i % splits.len()].max(1)
    };
    let mut writes_pending: HashMap<u16, IoCommand> = HashMap::new();
    let mut done: Vec<(u64, Cqe)> = Vec::new();

    // Pumps bytes until `until` holds.
    macro_rules! pump {
        ($until:expr) => {{
            let mut rounds = 0;
            while !$until {
                rounds += 1;
                assert!(rounds < 1_000_000, "no progress");
                host.transmit(&mut h2c, &hbufs).unwrap();
                let n = next_split().min(h2c.len());
                let chunk: Vec<u8> = h2c.drain(..n).collect();
                let mut evs = Vec::new();
                ctrl.receive(&chunk, &mut target, &mut |e| evs.push(e)).unwrap();
                for e in evs {
                    target.execute(&mut ctrl, e, &mut writes_pending);
                }
                let mut rel = 0;
                ctrl.transmit(&mut c2h, &target, &mut |_| rel += 1).unwrap();
                target.released += rel;
                let n = next_split().min(c2h.len());
                let chunk: Vec<u8> = c2h.drain(..n).collect();
                host.receive(&chunk, &mut hbufs, &mut |t, c| done.push((t, c))).unwrap();
            }
        }};
    }

    pump!(host.is_ready());
    let mut tag = 0u64;
    let mut submitted = 0usize;
    for batch in batches {
        let mut expect: HashMap<u64, (Op, usize)> = HashMap::new();
        for (region, o) in batch.iter().enumerate().take(REGIONS) {
            tag += 1;
            let slba = (region * REGION_BLOCKS + o.start) as u64;
            let len = o.blocks * BS;
            let nlb = (o.blocks - 1) as u16;
            let (cmd, dir) = if o.write {
                let data: Vec<u8> = (0..len).map(|i| (i as u8) ^ o.seed ^ (tag as u8)).collect();
                let off = slba as usize * BS;
                model[off..off + len].copy_from_slice(&data);
                hbufs.bufs.insert(tag, data);
                (IoCommand::Write { nsid: 1, slba, nlb, fua: false, lr: false }, DataDir::ToController(len as u32))
            } else {
                hbufs.bufs.insert(tag, vec![0xee; len]);
                (IoCommand::Read { nsid: 1, slba, nlb, fua: false, lr: false }, DataDir::FromController(len as u32))
            };
            host.submit(Command::Io(cmd).to_sqe(0), dir, tag).unwrap();
            expect.insert(tag, (o.clone(), slba as usize * BS));
            submitted += 1;
        }
        // A flush with no data in every batch.
        tag += 1;
        host.submit(Command::Io(IoCommand::Flush { nsid: 1 }).to_sqe(0), DataDir::None, tag).unwrap();
        submitted += 1;
        pump!(host.outstanding() == 0 && !host.wants_transmit() && !ctrl.wants_transmit());
        // Reads in this batch saw the model as of before the batch's writes;
        // regions are disjoint, so the final model region is what they read.
        for (t, cqe) in done.drain(..) {
            assert!(cqe.status().is_success(), "{:?}", cqe.status());
            if let Some((o, off)) = expect.remove(&t) {
                let buf = hbufs.bufs.remove(&t).unwrap();
                if !o.write {
                    assert_eq!(&buf[..], &model[off..off + o.blocks * BS], "read tag {t}");
                }
            }
        }
        assert!(expect.is_empty());
    }
    assert_eq!(target.disk, model);
    assert_eq!(target.released, submitted);
    assert_eq!(ctrl.outstanding(), 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn host_and_controller_exchange_io(
        s in setup(),
        batches in prop::collection::vec(prop::collection::vec(op(), 1..=REGIONS), 1..5),
        splits in prop::collection::vec(1usize..20000, 1..8),
    ) {
        run(&s, &batches, &splits);
    }
}

#[test]
fn byte_at_a_time_with_all_digests() {
    let s = Setup {
        hdgst: true,
        ddgst: true,
        incapsule: 4096,
        maxh2cdata: 4096,
        max_c2h: 4096,
        cpda: 3,
        hpda: 7,
        success_flag: true,
        maxr2t: 0,
    };
    let batch: Vec<Op> =
        (0..REGIONS).map(|i| Op { write: i % 2 == 0, blocks: 10 + i * 7, start: i, seed: i as u8 }).collect();
    let reads: Vec<Op> = batch.iter().map(|o| Op { write: false, ..o.clone() }).collect();
    run(&s, &[batch, reads], &[1]);
}
