//! Controller registers. The offsets are the same for PCIe (BAR0 MMIO) and
//! Fabrics (Property Get / Set offsets).

use crate::util::{bits32, bits64, set_bits32, set_bits64};

/// Register offsets.
pub mod offset {
    /// Controller capabilities (8 bytes).
    pub const CAP: u32 = 0x00;
    /// Version (4 bytes).
    pub const VS: u32 = 0x08;
    /// Interrupt mask set (PCIe only).
    pub const INTMS: u32 = 0x0c;
    /// Interrupt mask clear (PCIe only).
    pub const INTMC: u32 = 0x10;
    /// Controller configuration (4 bytes).
    pub const CC: u32 = 0x14;
    /// Controller status (4 bytes).
    pub const CSTS: u32 = 0x1c;
    /// NVM subsystem reset (4 bytes).
    pub const NSSR: u32 = 0x20;
    /// Admin queue attributes (PCIe only).
    pub const AQA: u32 = 0x24;
    /// Admin submission queue base (PCIe only, 8 bytes).
    pub const ASQ: u32 = 0x28;
    /// Admin completion queue base (PCIe only, 8 bytes).
    pub const ACQ: u32 = 0x30;
    /// First doorbell (PCIe only).
    pub const DOORBELLS: u32 = 0x1000;
}

macro_rules! field {
    ($ty:ty, $get:ident, $set:ident, $bits:ident, $setbits:ident, $lo:expr, $w:expr, $out:ty, $doc:literal) => {
        #[doc = $doc]
        pub fn $get(self) -> $out {
            $bits(self.0, $lo, $w) as $out
        }
        #[doc = concat!("Returns a copy with the field set: ", $doc)]
        #[must_use]
        pub fn $set(self, v: $out) -> Self {
            Self($setbits(self.0, $lo, $w, v as $ty))
        }
    };
}

/// CAP: controller capabilities.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Cap(pub u64);

impl Cap {
    field!(u64, mqes, with_mqes, bits64, set_bits64, 0, 16, u16, "Maximum queue entries supported, zero-based.");
    field!(u64, cqr, with_cqr, bits64, set_bits64, 16, 1, u8, "Contiguous queues required (1 bit).");
    field!(u64, ams, with_ams, bits64, set_bits64, 17, 2, u8, "Arbitration mechanisms supported.");
    field!(u64, to, with_to, bits64, set_bits64, 24, 8, u8, "Timeout for CSTS.RDY transitions, in 500 ms units.");
    field!(u64, dstrd, with_dstrd, bits64, set_bits64, 32, 4, u8, "Doorbell stride: 2^(2+DSTRD) bytes.");
    field!(u64, nssrs, with_nssrs, bits64, set_bits64, 36, 1, u8, "NVM subsystem reset supported (1 bit).");
    field!(
        u64,
        css,
        with_css,
        bits64,
        set_bits64,
        37,
        8,
        u8,
        "Command sets supported (bit 0: NVM, bit 6: I/O command sets, bit 7: admin only)."
    );
    field!(u64, mpsmin, with_mpsmin, bits64, set_bits64, 48, 4, u8, "Memory page size minimum: 2^(12+MPSMIN).");
    field!(u64, mpsmax, with_mpsmax, bits64, set_bits64, 52, 4, u8, "Memory page size maximum: 2^(12+MPSMAX).");

    /// The CSTS.RDY timeout in milliseconds.
    pub fn timeout_ms(self) -> u64 {
        u64::from(self.to()) * 500
    }

    /// Doorbell stride in bytes.
    pub fn doorbell_stride(self) -> u64 {
        4u64 << self.dstrd()
    }
}

/// VS: version.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Vs(pub u32);

impl Vs {
    field!(u32, mjr, with_mjr, bits32, set_bits32, 16, 16, u16, "Major version.");
    field!(u32, mnr, with_mnr, bits32, set_bits32, 8, 8, u8, "Minor version.");
    field!(u32, ter, with_ter, bits32, set_bits32, 0, 8, u8, "Tertiary version.");

    /// Builds a version value.
    pub fn new(mjr: u16, mnr: u8, ter: u8) -> Self {
        Self((u32::from(mjr) << 16) | (u32::from(mnr) << 8) | u32::from(ter))
    }
}

/// CC: controller configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Cc(pub u32);

impl Cc {
    field!(u32, en, with_en, bits32, set_bits32, 0, 1, u8, "Enable (1 bit).");
    field!(u32, css, with_css, bits32, set_bits32, 4, 3, u8, "I/O command set selected (0: NVM).");
    field!(u32, mps, with_mps, bits32, set_bits32, 7, 4, u8, "Memory page size: 2^(12+MPS).");
    field!(u32, ams, with_ams, bits32, set_bits32, 11, 3, u8, "Arbitration mechanism selected.");
    field!(u32, shn, with_shn, bits32, set_bits32, 14, 2, u8, "Shutdown notification (1: normal, 2: abrupt).");
    field!(
        u32,
        iosqes,
        with_iosqes,
        bits32,
        set_bits32,
        16,
        4,
        u8,
        "I/O submission queue entry size: 2^n (6 for 64 bytes)."
    );
    field!(
        u32,
        iocqes,
        with_iocqes,
        bits32,
        set_bits32,
        20,
        4,
        u8,
        "I/O completion queue entry size: 2^n (4 for 16 bytes)."
    );

    /// The usual configuration to enable a controller: NVM command set,
    /// 4 KiB pages, round robin, 64/16-byte entries, EN=1.
    pub fn enable_default() -> Self {
        Self(0).with_en(1).with_css(0).with_mps(0).with_iosqes(6).with_iocqes(4)
    }
}

/// CSTS: controller status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Csts(pub u32);

impl Csts {
    field!(u32, rdy, with_rdy, bits32, set_bits32, 0, 1, u8, "Ready (1 bit).");
    field!(u32, cfs, with_cfs, bits32, set_bits32, 1, 1, u8, "Controller fatal status (1 bit).");
    field!(u32, shst, with_shst, bits32, set_bits32, 2, 2, u8, "Shutdown status (0 normal, 1 occurring, 2 complete).");
    field!(u32, nssro, with_nssro, bits32, set_bits32, 4, 1, u8, "NVM subsystem reset occurred (1 bit).");
    field!(u32, pp, with_pp, bits32, set_bits32, 5, 1, u8, "Processing paused (1 bit).");
}

/// AQA: admin queue attributes (PCIe).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Aqa(pub u32);

impl Aqa {
    field!(u32, asqs, with_asqs, bits32, set_bits32, 0, 12, u16, "Admin submission queue size, zero-based.");
    field!(u32, acqs, with_acqs, bits32, set_bits32, 16, 12, u16, "Admin completion queue size, zero-based.");
}

/// Shutdown status values of [`Csts::shst`].
pub mod shst {
    /// Normal operation.
    pub const NORMAL: u8 = 0;
    /// Shutdown processing occurring.
    pub const OCCURRING: u8 = 1;
    /// Shutdown processing complete.
    pub const COMPLETE: u8 = 2;
}

/// Offset of the submission queue tail doorbell of queue `qid` (PCIe).
pub fn sq_tail_doorbell(qid: u16, cap: Cap) -> u64 {
    u64::from(offset::DOORBELLS) + (2 * u64::from(qid)) * cap.doorbell_stride()
}

/// Offset of the completion queue head doorbell of queue `qid` (PCIe).
pub fn cq_head_doorbell(qid: u16, cap: Cap) -> u64 {
    u64::from(offset::DOORBELLS) + (2 * u64::from(qid) + 1) * cap.doorbell_stride()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_fields() {
        // QEMU-like CAP: MQES 2047, CQR, TO 15, DSTRD 0, CSS NVM, MPSMAX 4.
        let cap = Cap(0x0040_0020_0f01_07ff);
        assert_eq!(cap.mqes(), 0x7ff);
        assert_eq!(cap.cqr(), 1);
        assert_eq!(cap.to(), 0x0f);
        assert_eq!(cap.timeout_ms(), 7500);
        assert_eq!(cap.css(), 1);
        assert_eq!(cap.mpsmin(), 0);
        assert_eq!(cap.mpsmax(), 4);
        assert_eq!(cap.doorbell_stride(), 4);
        let c2 = Cap(0).with_dstrd(2).with_mqes(31).with_to(20);
        assert_eq!(c2.doorbell_stride(), 16);
        assert_eq!((c2.mqes(), c2.to()), (31, 20));
        assert_eq!(sq_tail_doorbell(1, c2), 0x1020);
        assert_eq!(cq_head_doorbell(1, c2), 0x1030);
    }

    #[test]
    fn cc_csts_fields() {
        let cc = Cc::enable_default();
        assert_eq!(cc.0, 0x0046_0001);
        assert_eq!((cc.iosqes(), cc.iocqes(), cc.en()), (6, 4, 1));
        let cc = cc.with_shn(1).with_en(0);
        assert_eq!(cc.0, 0x0046_4000);
        // Out-of-range values are truncated to the field width.
        assert_eq!(Cc(0).with_css(0xff).css(), 7);
        let csts = Csts(0b0101);
        assert_eq!((csts.rdy(), csts.cfs(), csts.shst()), (1, 0, shst::OCCURRING));
        assert_eq!(Csts(0).with_shst(shst::COMPLETE).0, 8);
        let vs = Vs::new(1, 4, 0);
        assert_eq!(vs.0, 0x0001_0400);
        assert_eq!((vs.mjr(), vs.mnr(), vs.ter()), (1, 4, 0));
        let aqa = Aqa(0).with_asqs(31).with_acqs(63);
        assert_eq!(aqa.0, (63 << 16) | 31);
    }
}
