//! The read path of a volume channel: resolve each run of blocks (own cluster, packed chunk,
//! a parent's, or zeroes), read it and decrypt or decompress it into the caller's buffers.

use super::*;

impl VolChannel {
    /// Read cursor: resolve and read runs until one needs the device. Returns true when the
    /// op moved on to another state (and should keep stepping).
    pub(super) fn read_step(&mut self, i: usize) -> bool {
        let view = self.view.clone();
        let geo = self.geo;
        let bs = geo.bs as usize;
        loop {
            let rd = self.ops[i].rd;
            if rd.pos >= rd.n {
                return self.read_done(i);
            }
            let lba = rd.lba + rd.pos;
            let (src, k) = resolve(&view, lba, rd.n - rd.pos, &geo);
            let off = rd.pos as usize * bs;
            match src {
                Src::Zero => {
                    let ok = match rd.dest {
                        Dest::User(base) => dma::zero(&self.ops[i].iovs, base + off, k as usize * bs),
                        Dest::Stage(base) => {
                            let s = self.ops[i].set.map(|s| s as usize);
                            match s.and_then(|s| self.sets.get_mut(s)) {
                                Some(set) => {
                                    set.stage.as_mut_slice()[base + off..base + off + k as usize * bs].fill(0);
                                    true
                                }
                                None => false,
                            }
                        }
                    };
                    if !ok {
                        self.finish(i, IoStatus::Invalid);
                        return false;
                    }
                    self.ops[i].rd.pos += k;
                }
                Src::Cluster { owner, pc, enc } => {
                    let fp = src.fingerprint();
                    let iov = match rd.dest {
                        Dest::User(base) => self.ops[i].iovs.slice((base + off) as u64, k * geo.bs),
                        Dest::Stage(base) => {
                            let s = self.ops[i].set.unwrap_or(0) as usize;
                            self.sets
                                .get_mut(s)
                                .and_then(|set| set.stage.iovec_range(base + off, k as usize * bs))
                                .map(IoVecs::single)
                        }
                    };
                    let Some(iov) = iov else {
                        self.finish(i, IoStatus::Invalid);
                        return false;
                    };
                    let r = &mut self.ops[i].rd;
                    r.k = k;
                    r.fp = fp;
                    r.owner = owner.id;
                    r.enc = enc;
                    r.chunk = false;
                    self.ops[i].st = St::ReadIo;
                    self.submit_base(i, IoRequest::read(geo.cluster_block(pc, lba), k, iov, 0));
                    return false;
                }
                Src::Chunk { owner, g, loc } => {
                    if !self.want_set(i) {
                        return false;
                    }
                    let fp = src.fingerprint();
                    let s = self.ops[i].set.unwrap_or(0) as usize;
                    let len = (loc.nsect * SECTOR) as usize;
                    let Some(iov) = self.sets.get_mut(s).and_then(|set| set.sect.iovec_range(0, len)) else {
                        self.finish(i, IoStatus::MediaError);
                        return false;
                    };
                    let r = &mut self.ops[i].rd;
                    r.k = k;
                    r.fp = fp;
                    r.owner = owner.id;
                    r.enc = loc.enc;
                    r.chunk = true;
                    r.g = g;
                    r.loc = loc.encode();
                    self.ops[i].st = St::ReadIo;
                    self.submit_base(
                        i,
                        IoRequest::read(geo.sector_block(loc.sector), len as u64 / geo.bs, IoVecs::single(iov), 0),
                    );
                    return false;
                }
            }
        }
    }

    /// A run of the read cursor came back from the device.
    pub(super) fn read_io_done(&mut self, i: usize) {
        let geo = self.geo;
        let bs = geo.bs as usize;
        let rd = self.ops[i].rd;
        let lba = rd.lba + rd.pos;
        let off = rd.pos as usize * bs;
        let key = if rd.enc {
            match self.owner_key(rd.owner) {
                Some(k) => Some(k),
                None => return self.finish(i, IoStatus::MediaError),
            }
        } else {
            None
        };
        if rd.chunk {
            let Some(loc) = ChunkLoc::decode(rd.loc) else { return self.finish(i, IoStatus::MediaError) };
            let s = self.ops[i].set.unwrap_or(0) as usize;
            let Some(set) = self.sets.get_mut(s) else { return self.finish(i, IoStatus::MediaError) };
            let len = (loc.nsect * SECTOR) as usize;
            let gbytes = (geo.gb * geo.bs) as usize;
            {
                let sect = &mut set.sect.as_mut_slice()[..len];
                if let Some(k) = &key {
                    k.decrypt(sect, SECTOR as usize, chunk_tweak(rd.g, 0));
                }
            }
            let scratch = &mut set.scratch.as_mut_slice()[..gbytes];
            if loc.raw {
                scratch.copy_from_slice(&set.sect.as_slice()[..gbytes.min(len)]);
            } else if decompress_chunk(&set.sect.as_slice()[..len], scratch).is_err() {
                return self.finish(i, IoStatus::MediaError);
            }
            let from = ((lba - rd.g * geo.gb) * geo.bs) as usize;
            let n = rd.k as usize * bs;
            let ok = match rd.dest {
                Dest::User(base) => {
                    dma::copy_in(&self.ops[i].iovs, base + off, &set.scratch.as_slice()[from..from + n])
                }
                Dest::Stage(base) => {
                    let BounceSet { stage, scratch, .. } = set;
                    stage.as_mut_slice()[base + off..base + off + n]
                        .copy_from_slice(&scratch.as_slice()[from..from + n]);
                    true
                }
            };
            if !ok {
                return self.finish(i, IoStatus::Invalid);
            }
        } else if let Some(k) = &key {
            let n = rd.k as usize * bs;
            match rd.dest {
                Dest::User(base) => {
                    let iovs = self.ops[i].iovs;
                    if !dma::for_each_unit_mut(&iovs, base + off, n, bs, &mut self.tmp, |u, b| {
                        k.decrypt(b, bs, (lba + u as u64) as u128)
                    }) {
                        return self.finish(i, IoStatus::Invalid);
                    }
                }
                Dest::Stage(base) => {
                    let s = self.ops[i].set.unwrap_or(0) as usize;
                    if let Some(set) = self.sets.get_mut(s) {
                        k.decrypt(&mut set.stage.as_mut_slice()[base + off..base + off + n], bs, lba as u128);
                    }
                }
            }
        }
        // Validate: the run must still resolve to the same place, else read it again.
        let view = self.view.clone();
        let (src, _) = resolve(&view, lba, rd.k, &geo);
        if src.fingerprint() == rd.fp {
            self.ops[i].rd.pos += rd.k;
        }
        self.ops[i].st = St::Read;
        self.step(i);
    }

    pub(super) fn read_done(&mut self, i: usize) -> bool {
        let then = self.ops[i].rd.then;
        match then {
            Then::Finish => {
                self.finish(i, IoStatus::Success);
                false
            }
            Then::FillTail => {
                let w = self.ops[i].w;
                let op = self.ops[i];
                let data_end = op.lba + op.pos + w.k;
                if w.tail > data_end {
                    let off = ((data_end - w.head) * self.geo.bs) as usize;
                    self.ops[i].rd = Rd {
                        lba: data_end,
                        n: w.tail - data_end,
                        dest: Dest::Stage(off),
                        then: Then::StageWrite,
                        ..RD0
                    };
                    return true;
                }
                self.stage_write(i)
            }
            Then::StageWrite => self.stage_write(i),
            Then::Compress => self.compress(i),
        }
    }
}
