//! raid4/5/6: md's `raid5_compute_sector`.
//!
//! Array chunk `c` belongs to stripe `c / data_disks` as logical data chunk
//! `k = c % data_disks`; on its member it sits at `stripe * chunk + offset`.
//! The algorithm chooses, per stripe, the P member, the Q member (raid6)
//! and which member holds logical data chunk `k`.
//!
//! For raid6, Q is `sum(g^i * D_i)` where `i` is not the logical index but
//! the *syndrome slot*: md walks the members starting just after Q
//! (wrapping, or at member 0 when Q is the last member) and numbers the
//! data members it meets 0, 1, 2, ... For the symmetric layouts the slot
//! equals the logical index; for the asymmetric ones it does not.

use super::{GeometryError, Level, MemberContent, MemberExtent, MemberSector, StripeChunk};

/// md's parity algorithm numbers (`ALGORITHM_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParityAlgorithm {
    /// 0: parity rotates right to left, data in member order.
    LeftAsymmetric,
    /// 1: parity rotates left to right, data in member order.
    RightAsymmetric,
    /// 2: parity rotates right to left, data starts after parity (md's
    /// default).
    LeftSymmetric,
    /// 3: parity rotates left to right, data starts after parity.
    RightSymmetric,
    /// 4: parity on the first member(s).
    Parity0,
    /// 5: parity on the last member(s); what raid4 always uses.
    ParityN,
}

impl ParityAlgorithm {
    /// Decodes md's layout number.
    pub fn from_md(layout: u32) -> Option<ParityAlgorithm> {
        Some(match layout {
            0 => ParityAlgorithm::LeftAsymmetric,
            1 => ParityAlgorithm::RightAsymmetric,
            2 => ParityAlgorithm::LeftSymmetric,
            3 => ParityAlgorithm::RightSymmetric,
            4 => ParityAlgorithm::Parity0,
            5 => ParityAlgorithm::ParityN,
            _ => return None,
        })
    }

    /// md's layout number.
    pub fn to_md(self) -> u32 {
        match self {
            ParityAlgorithm::LeftAsymmetric => 0,
            ParityAlgorithm::RightAsymmetric => 1,
            ParityAlgorithm::LeftSymmetric => 2,
            ParityAlgorithm::RightSymmetric => 3,
            ParityAlgorithm::Parity0 => 4,
            ParityAlgorithm::ParityN => 5,
        }
    }

    /// mdadm's name for it.
    pub fn name(self) -> &'static str {
        match self {
            ParityAlgorithm::LeftAsymmetric => "left-asymmetric",
            ParityAlgorithm::RightAsymmetric => "right-asymmetric",
            ParityAlgorithm::LeftSymmetric => "left-symmetric",
            ParityAlgorithm::RightSymmetric => "right-symmetric",
            ParityAlgorithm::Parity0 => "parity-first",
            ParityAlgorithm::ParityN => "parity-last",
        }
    }
}

/// What a member holds in one stripe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StripeRole {
    /// Logical data chunk `k` of the stripe.
    Data(usize),
    /// P parity.
    P,
    /// Q syndrome.
    Q,
}

/// Member placement of one stripe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StripeLayout {
    raid_disks: usize,
    data_disks: usize,
    p: usize,
    q: Option<usize>,
    /// How logical data index maps to members.
    data_rule: DataRule,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataRule {
    /// Member = k, skipping the parity member(s) at or after `skip_from`:
    /// member = k if k < skip_from else k + skip.
    Asymmetric { skip_from: usize, skip: usize },
    /// Member = (start + k) % raid_disks.
    Rotated { start: usize },
}

impl StripeLayout {
    /// Members in the stripe.
    pub fn raid_disks(&self) -> usize {
        self.raid_disks
    }

    /// Data chunks per stripe.
    pub fn data_disks(&self) -> usize {
        self.data_disks
    }

    /// Member holding P.
    pub fn p_member(&self) -> usize {
        self.p
    }

    /// Member holding Q (raid6 only).
    pub fn q_member(&self) -> Option<usize> {
        self.q
    }

    /// Member holding logical data chunk `k` (`k < data_disks`).
    pub fn data_member(&self, k: usize) -> usize {
        match self.data_rule {
            DataRule::Asymmetric { skip_from, skip } => {
                if k < skip_from {
                    k
                } else {
                    k + skip
                }
            }
            // start < raid_disks and k < data_disks: one subtraction
            // instead of a division.
            DataRule::Rotated { start } => match start + k {
                m if m < self.raid_disks => m,
                m if m < 2 * self.raid_disks => m - self.raid_disks,
                m => m % self.raid_disks,
            },
        }
    }

    /// What `member` holds in this stripe.
    pub fn role_of(&self, member: usize) -> Option<StripeRole> {
        if member >= self.raid_disks {
            return None;
        }
        if member == self.p {
            return Some(StripeRole::P);
        }
        if Some(member) == self.q {
            return Some(StripeRole::Q);
        }
        let k = match self.data_rule {
            DataRule::Asymmetric { skip_from, skip } => {
                if member < skip_from {
                    member
                } else {
                    member - skip
                }
            }
            DataRule::Rotated { start } => (member + self.raid_disks - start) % self.raid_disks,
        };
        Some(StripeRole::Data(k))
    }

    /// The first member of md's syndrome walk.
    fn syndrome_start(&self) -> usize {
        match self.q {
            Some(q) if q + 1 < self.raid_disks => q + 1,
            _ => 0,
        }
    }

    /// Data members in Q-coefficient order: the member at position `i` is
    /// multiplied by `g^i` in Q. For raid4/5 this is simply the members in
    /// walk order from member 0.
    pub fn syndrome_members(&self) -> impl Iterator<Item = usize> + '_ {
        let n = self.raid_disks;
        let start = self.syndrome_start();
        (0..n).map(move |i| (start + i) % n).filter(move |&m| m != self.p && Some(m) != self.q)
    }

    /// Q-coefficient slot of a data member.
    pub fn syndrome_slot(&self, member: usize) -> Option<usize> {
        if member >= self.raid_disks || member == self.p || Some(member) == self.q {
            return None;
        }
        let n = self.raid_disks;
        let start = self.syndrome_start();
        let dist = (member + n - start) % n;
        // Count P/Q members walked over before reaching `member`.
        let passed = [Some(self.p), self.q].iter().flatten().filter(|&&x| (x + n - start) % n < dist).count();
        Some(dist - passed)
    }
}

/// raid4/5/6 mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripedGeometry {
    level: Level,
    algorithm: ParityAlgorithm,
    raid_disks: usize,
    data_disks: usize,
    chunk_sectors: u64,
    chunk_shift: u32,
    /// Per-member sectors used: `size` rounded down to the chunk.
    member_sectors: u64,
}

impl StripedGeometry {
    pub(super) fn new(
        level: Level,
        layout: u32,
        raid_disks: u32,
        chunk_sectors: u32,
        dev_sectors: u64,
    ) -> Result<StripedGeometry, GeometryError> {
        let algorithm = if level == Level::Raid4 {
            // md ignores the layout of raid4: parity is always last.
            ParityAlgorithm::ParityN
        } else {
            ParityAlgorithm::from_md(layout).ok_or(GeometryError::UnsupportedLayout { level, layout })?
        };
        let parity = if level == Level::Raid6 { 2 } else { 1 };
        let raid_disks = raid_disks as usize;
        let chunk = u64::from(chunk_sectors);
        let member_sectors = dev_sectors & !(chunk - 1);
        if member_sectors == 0 {
            return Err(GeometryError::Empty);
        }
        let data_disks = raid_disks - parity;
        (member_sectors).checked_mul(data_disks as u64).ok_or(GeometryError::Overflow)?;
        Ok(StripedGeometry {
            level,
            algorithm,
            raid_disks,
            data_disks,
            chunk_sectors: chunk,
            chunk_shift: chunk_sectors.trailing_zeros(),
            member_sectors,
        })
    }

    /// The level.
    pub fn level(&self) -> Level {
        self.level
    }

    /// The algorithm (raid4 reports [`ParityAlgorithm::ParityN`]).
    pub fn algorithm(&self) -> ParityAlgorithm {
        self.algorithm
    }

    /// Members.
    pub fn raid_disks(&self) -> usize {
        self.raid_disks
    }

    /// Data chunks per stripe.
    pub fn data_disks(&self) -> usize {
        self.data_disks
    }

    /// Chunk size.
    pub fn chunk_sectors(&self) -> u64 {
        self.chunk_sectors
    }

    /// Stripes in the array.
    pub fn stripes(&self) -> u64 {
        self.member_sectors >> self.chunk_shift
    }

    /// Sectors used on each member.
    pub fn member_used_sectors(&self) -> u64 {
        self.member_sectors
    }

    /// Array size.
    pub fn array_sectors(&self) -> u64 {
        self.member_sectors * self.data_disks as u64
    }

    /// Data sectors per stripe.
    pub fn stripe_data_sectors(&self) -> u64 {
        self.chunk_sectors * self.data_disks as u64
    }

    /// Placement of stripe `stripe`.
    pub fn stripe_layout(&self, stripe: u64) -> StripeLayout {
        let n = self.raid_disks;
        let d = self.data_disks;
        // `stripe % n` < n, so it fits in usize.
        let rot = (stripe % n as u64) as usize;
        let asym = |skip_from: usize, skip: usize| DataRule::Asymmetric { skip_from, skip };
        let (p, q, data_rule) = if self.level == Level::Raid6 {
            match self.algorithm {
                ParityAlgorithm::LeftAsymmetric | ParityAlgorithm::RightAsymmetric => {
                    let p = if self.algorithm == ParityAlgorithm::LeftAsymmetric { n - 1 - rot } else { rot };
                    if p == n - 1 {
                        // Q D D .. D P
                        (p, Some(0), asym(0, 1))
                    } else {
                        (p, Some(p + 1), asym(p, 2))
                    }
                }
                ParityAlgorithm::LeftSymmetric | ParityAlgorithm::RightSymmetric => {
                    let p = if self.algorithm == ParityAlgorithm::LeftSymmetric { n - 1 - rot } else { rot };
                    (p, Some((p + 1) % n), DataRule::Rotated { start: (p + 2) % n })
                }
                ParityAlgorithm::Parity0 => (0, Some(1), asym(0, 2)),
                ParityAlgorithm::ParityN => (d, Some(d + 1), asym(n, 0)),
            }
        } else {
            match self.algorithm {
                ParityAlgorithm::LeftAsymmetric => (d - rot, None, asym(d - rot, 1)),
                ParityAlgorithm::RightAsymmetric => (rot, None, asym(rot, 1)),
                ParityAlgorithm::LeftSymmetric => {
                    let p = d - rot;
                    (p, None, DataRule::Rotated { start: (p + 1) % n })
                }
                ParityAlgorithm::RightSymmetric => (rot, None, DataRule::Rotated { start: (rot + 1) % n }),
                ParityAlgorithm::Parity0 => (0, None, asym(0, 1)),
                ParityAlgorithm::ParityN => (d, None, asym(n, 0)),
            }
        };
        StripeLayout { raid_disks: n, data_disks: d, p, q, data_rule }
    }

    /// Maps an in-range `lba`; returns its chunk and the sectors left in it.
    pub fn map(&self, lba: u64) -> (StripeChunk, u64) {
        let chunk_no = lba >> self.chunk_shift;
        let offset = lba & (self.chunk_sectors - 1);
        let stripe = chunk_no / self.data_disks as u64;
        let k = (chunk_no % self.data_disks as u64) as usize;
        let layout = self.stripe_layout(stripe);
        (
            StripeChunk {
                stripe,
                data_index: k,
                data: MemberSector { member: layout.data_member(k), sector: (stripe << self.chunk_shift) + offset },
                layout,
            },
            self.chunk_sectors - offset,
        )
    }

    /// Array sector of logical data chunk `k` of `stripe` at `offset`.
    pub fn lba_of(&self, stripe: u64, k: usize, offset: u64) -> u64 {
        ((stripe * self.data_disks as u64 + k as u64) << self.chunk_shift) + offset
    }

    pub(super) fn member_extent(&self, member: usize, sector: u64) -> MemberExtent {
        let stripe = sector >> self.chunk_shift;
        let offset = sector & (self.chunk_sectors - 1);
        let layout = self.stripe_layout(stripe);
        let content = match layout.role_of(member) {
            Some(StripeRole::Data(k)) => MemberContent::Data { lba: self.lba_of(stripe, k, offset) },
            Some(StripeRole::P) => MemberContent::Parity { stripe },
            Some(StripeRole::Q) => MemberContent::Syndrome { stripe },
            None => MemberContent::Unused,
        };
        MemberExtent { content, sectors: self.chunk_sectors - offset }
    }
}
