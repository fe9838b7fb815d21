//! Completion status: Status Code Type (SCT) / Status Code (SC) decoding and
//! the classification the block layer uses for retry and failover.

use crate::util::{bits32, set_bits32};

/// Declares an "open" code enum: named values plus `Other(u8)` for codes this
/// crate does not name, with lossless conversion to and from the raw byte.
macro_rules! code_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $var:ident = $val:expr,)* }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vm])* $var,)*
            /// A code not named by this crate.
            Other(u8),
        }
        impl $name {
            /// Decodes a raw status code.
            pub fn from_code(sc: u8) -> Self {
                match sc {
                    $($val => Self::$var,)*
                    other => Self::Other(other),
                }
            }
            /// The raw status code.
            pub fn code(self) -> u8 {
                match self {
                    $(Self::$var => $val,)*
                    Self::Other(v) => v,
                }
            }
        }
    };
}

code_enum! {
    /// Generic command status (SCT 0), including the NVM command set codes
    /// 80h..84h.
    GenericStatus {
        /// Successful completion.
        Success = 0x00,
        /// Invalid command opcode.
        InvalidOpcode = 0x01,
        /// Invalid field in command.
        InvalidField = 0x02,
        /// Command ID conflict.
        CommandIdConflict = 0x03,
        /// Data transfer error.
        DataTransferError = 0x04,
        /// Commands aborted due to power loss notification.
        AbortedPowerLoss = 0x05,
        /// Internal error.
        InternalError = 0x06,
        /// Command abort requested.
        AbortRequested = 0x07,
        /// Command aborted due to SQ deletion.
        AbortedSqDeletion = 0x08,
        /// Command aborted due to failed fused command.
        AbortedFailedFused = 0x09,
        /// Command aborted due to missing fused command.
        AbortedMissingFused = 0x0a,
        /// Invalid namespace or format.
        InvalidNamespaceOrFormat = 0x0b,
        /// Command sequence error.
        CommandSequenceError = 0x0c,
        /// Invalid SGL segment descriptor.
        InvalidSglSegmentDescriptor = 0x0d,
        /// Invalid number of SGL descriptors.
        InvalidSglCount = 0x0e,
        /// Data SGL length invalid.
        DataSglLengthInvalid = 0x0f,
        /// Metadata SGL length invalid.
        MetadataSglLengthInvalid = 0x10,
        /// SGL descriptor type invalid.
        SglDescriptorTypeInvalid = 0x11,
        /// PRP offset invalid.
        PrpOffsetInvalid = 0x13,
        /// Operation denied.
        OperationDenied = 0x15,
        /// SGL offset invalid.
        SglOffsetInvalid = 0x16,
        /// Host identifier inconsistent format.
        HostIdInconsistentFormat = 0x18,
        /// Keep alive timer expired.
        KeepAliveExpired = 0x19,
        /// Keep alive timeout invalid.
        KeepAliveInvalid = 0x1a,
        /// Command aborted due to preempt and abort.
        AbortedPreempt = 0x1b,
        /// Namespace is write protected.
        NamespaceWriteProtected = 0x20,
        /// Command interrupted.
        CommandInterrupted = 0x21,
        /// Transient transport error.
        TransientTransportError = 0x22,
        /// Admin command media not ready.
        AdminMediaNotReady = 0x24,
        /// LBA out of range.
        LbaOutOfRange = 0x80,
        /// Capacity exceeded.
        CapacityExceeded = 0x81,
        /// Namespace not ready.
        NamespaceNotReady = 0x82,
        /// Reservation conflict.
        ReservationConflict = 0x83,
        /// Format in progress.
        FormatInProgress = 0x84,
    }
}

code_enum! {
    /// Media and data integrity errors (SCT 2).
    MediaStatus {
        /// Write fault.
        WriteFault = 0x80,
        /// Unrecovered read error.
        UnrecoveredReadError = 0x81,
        /// End-to-end guard check error.
        GuardCheckError = 0x82,
        /// End-to-end application tag check error.
        ApplicationTagCheckError = 0x83,
        /// End-to-end reference tag check error.
        ReferenceTagCheckError = 0x84,
        /// Compare failure.
        CompareFailure = 0x85,
        /// Access denied.
        AccessDenied = 0x86,
        /// Deallocated or unwritten logical block.
        DeallocatedOrUnwritten = 0x87,
    }
}

code_enum! {
    /// Path related status (SCT 3).
    PathStatus {
        /// Internal path error.
        InternalPathError = 0x00,
        /// Asymmetric access persistent loss.
        AnaPersistentLoss = 0x01,
        /// Asymmetric access inaccessible.
        AnaInaccessible = 0x02,
        /// Asymmetric access transition.
        AnaTransition = 0x03,
        /// Controller pathing error.
        ControllerPathingError = 0x60,
        /// Host pathing error.
        HostPathingError = 0x70,
        /// Command aborted by host.
        AbortedByHost = 0x71,
    }
}

/// Command specific status codes (SCT 1). Their meaning depends on the
/// command; the constants name the ones xbdev produces or interprets.
pub mod command_specific {
    /// Completion queue invalid (Create I/O SQ).
    pub const COMPLETION_QUEUE_INVALID: u8 = 0x00;
    /// Invalid queue identifier.
    pub const INVALID_QUEUE_IDENTIFIER: u8 = 0x01;
    /// Invalid queue size.
    pub const INVALID_QUEUE_SIZE: u8 = 0x02;
    /// Abort command limit exceeded.
    pub const ABORT_LIMIT_EXCEEDED: u8 = 0x03;
    /// Asynchronous event request limit exceeded.
    pub const AER_LIMIT_EXCEEDED: u8 = 0x05;
    /// Invalid log page.
    pub const INVALID_LOG_PAGE: u8 = 0x09;
    /// Invalid queue deletion.
    pub const INVALID_QUEUE_DELETION: u8 = 0x0c;
    /// Feature identifier not saveable.
    pub const FEATURE_NOT_SAVEABLE: u8 = 0x0d;
    /// Feature not changeable.
    pub const FEATURE_NOT_CHANGEABLE: u8 = 0x0e;
    /// Conflicting attributes (Dataset Management, Read, Write).
    pub const CONFLICTING_ATTRIBUTES: u8 = 0x80;
    /// Attempted write to read only range.
    pub const WRITE_TO_READ_ONLY_RANGE: u8 = 0x82;
    /// Fabrics: incompatible format (Connect).
    pub const FABRICS_INCOMPATIBLE_FORMAT: u8 = 0x80;
    /// Fabrics: controller busy (Connect).
    pub const FABRICS_CONTROLLER_BUSY: u8 = 0x81;
    /// Fabrics: connect invalid parameters.
    pub const FABRICS_CONNECT_INVALID_PARAMETERS: u8 = 0x82;
    /// Fabrics: connect restart discovery.
    pub const FABRICS_CONNECT_RESTART_DISCOVERY: u8 = 0x83;
    /// Fabrics: connect invalid host.
    pub const FABRICS_CONNECT_INVALID_HOST: u8 = 0x84;
    /// Fabrics: invalid queue type.
    pub const FABRICS_INVALID_QUEUE_TYPE: u8 = 0x85;
    /// Fabrics: discover restart.
    pub const FABRICS_DISCOVER_RESTART: u8 = 0x90;
    /// Fabrics: authentication required.
    pub const FABRICS_AUTH_REQUIRED: u8 = 0x91;
}

/// Status code type (SCT, 3 bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StatusCodeType {
    /// Generic command status.
    Generic,
    /// Command specific status.
    CommandSpecific,
    /// Media and data integrity errors.
    Media,
    /// Path related status.
    Path,
    /// Vendor specific.
    Vendor,
    /// Reserved encodings 4..=6.
    Reserved(u8),
}

impl StatusCodeType {
    /// Decodes a 3-bit SCT value (upper bits ignored).
    pub fn from_raw(v: u8) -> Self {
        match v & 7 {
            0 => Self::Generic,
            1 => Self::CommandSpecific,
            2 => Self::Media,
            3 => Self::Path,
            7 => Self::Vendor,
            r => Self::Reserved(r),
        }
    }

    /// The raw 3-bit value.
    pub fn to_raw(self) -> u8 {
        match self {
            Self::Generic => 0,
            Self::CommandSpecific => 1,
            Self::Media => 2,
            Self::Path => 3,
            Self::Vendor => 7,
            Self::Reserved(r) => r & 7,
        }
    }
}

/// A decoded SCT + SC pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StatusCode {
    /// SCT 0.
    Generic(GenericStatus),
    /// SCT 1 (meaning depends on the command; see [`command_specific`]).
    CommandSpecific(u8),
    /// SCT 2.
    Media(MediaStatus),
    /// SCT 3.
    Path(PathStatus),
    /// SCT 7.
    Vendor(u8),
    /// Reserved SCT 4..=6 with its SC.
    Reserved {
        /// Status code type (4..=6).
        sct: u8,
        /// Status code.
        sc: u8,
    },
}

impl StatusCode {
    /// Successful completion.
    pub const SUCCESS: Self = Self::Generic(GenericStatus::Success);

    /// Decodes an SCT / SC pair.
    #[inline]
    pub fn from_parts(sct: u8, sc: u8) -> Self {
        match StatusCodeType::from_raw(sct) {
            StatusCodeType::Generic => Self::Generic(GenericStatus::from_code(sc)),
            StatusCodeType::CommandSpecific => Self::CommandSpecific(sc),
            StatusCodeType::Media => Self::Media(MediaStatus::from_code(sc)),
            StatusCodeType::Path => Self::Path(PathStatus::from_code(sc)),
            StatusCodeType::Vendor => Self::Vendor(sc),
            StatusCodeType::Reserved(sct) => Self::Reserved { sct, sc },
        }
    }

    /// The status code type.
    #[inline]
    pub fn sct(self) -> StatusCodeType {
        match self {
            Self::Generic(_) => StatusCodeType::Generic,
            Self::CommandSpecific(_) => StatusCodeType::CommandSpecific,
            Self::Media(_) => StatusCodeType::Media,
            Self::Path(_) => StatusCodeType::Path,
            Self::Vendor(_) => StatusCodeType::Vendor,
            Self::Reserved { sct, .. } => StatusCodeType::Reserved(sct),
        }
    }

    /// The raw status code byte.
    #[inline]
    pub fn sc(self) -> u8 {
        match self {
            Self::Generic(g) => g.code(),
            Self::CommandSpecific(c) | Self::Vendor(c) => c,
            Self::Media(m) => m.code(),
            Self::Path(p) => p.code(),
            Self::Reserved { sc, .. } => sc,
        }
    }
}

/// The 15-bit status field of a completion (without the phase tag).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Status {
    /// SCT / SC.
    pub code: StatusCode,
    /// Command retry delay index (0..=3).
    pub crd: u8,
    /// More information available in the error log.
    pub more: bool,
    /// Do not retry.
    pub dnr: bool,
}

impl Status {
    /// Success.
    pub const SUCCESS: Self = Self { code: StatusCode::SUCCESS, crd: 0, more: false, dnr: false };

    /// A status with the given code and DNR bit.
    #[inline]
    pub fn new(code: StatusCode, dnr: bool) -> Self {
        Self { code, crd: 0, more: false, dnr }
    }

    /// Decodes the 16-bit completion status word (bit 0, the phase tag, is
    /// ignored).
    #[inline]
    pub fn from_raw(raw: u16) -> Self {
        let r = u32::from(raw);
        Self {
            code: StatusCode::from_parts(bits32(r, 9, 3) as u8, bits32(r, 1, 8) as u8),
            crd: bits32(r, 12, 2) as u8,
            more: bits32(r, 14, 1) != 0,
            dnr: bits32(r, 15, 1) != 0,
        }
    }

    /// Encodes the status word with phase tag 0.
    #[inline]
    pub fn to_raw(self) -> u16 {
        let mut r = set_bits32(0, 1, 8, self.code.sc().into());
        r = set_bits32(r, 9, 3, self.code.sct().to_raw().into());
        r = set_bits32(r, 12, 2, self.crd.into());
        r = set_bits32(r, 14, 1, self.more.into());
        r = set_bits32(r, 15, 1, self.dnr.into());
        r as u16
    }

    /// Whether the command completed successfully.
    #[inline]
    pub fn is_success(self) -> bool {
        self.code == StatusCode::SUCCESS
    }

    /// Whether the failure concerns the path to the namespace rather than
    /// the namespace itself, so the IO may be retried on another path:
    /// any path-related status (SCT 3: ANA inaccessible / transition /
    /// persistent loss, controller or host pathing error, aborted by host),
    /// namespace not ready, and transient transport errors.
    pub fn is_path_error(self) -> bool {
        matches!(
            self.code,
            StatusCode::Path(_)
                | StatusCode::Generic(GenericStatus::NamespaceNotReady | GenericStatus::TransientTransportError)
        )
    }

    /// Whether the failure is a media or data integrity error (SCT 2).
    pub fn is_media_error(self) -> bool {
        matches!(self.code, StatusCode::Media(_))
    }

    /// Whether the command failed and may succeed if retried (DNR clear).
    pub fn is_retryable(self) -> bool {
        !self.is_success() && !self.dnr
    }
}

impl core::fmt::Display for Status {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "sct {:#x} sc {:#04x} ({:?}){}",
            self.code.sct().to_raw(),
            self.code.sc(),
            self.code,
            if self.dnr { " dnr" } else { "" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_round_trip_all_values() {
        for raw in (0u16..=u16::MAX).step_by(2) {
            let s = Status::from_raw(raw);
            assert_eq!(s.to_raw(), raw, "raw {raw:#x}");
        }
        // Phase bit is ignored.
        assert_eq!(Status::from_raw(1), Status::SUCCESS);
    }

    #[test]
    fn decodes_known_codes() {
        // SCT 2, SC 0x81, DNR.
        let raw = (0x81 << 1) | (2 << 9) | 0x8000;
        let s = Status::from_raw(raw);
        assert_eq!(s.code, StatusCode::Media(MediaStatus::UnrecoveredReadError));
        assert!(s.dnr && s.is_media_error() && !s.is_retryable() && !s.is_path_error());
        let ana = Status::from_raw((0x02 << 1) | (3 << 9));
        assert_eq!(ana.code, StatusCode::Path(PathStatus::AnaInaccessible));
        assert!(ana.is_path_error() && ana.is_retryable());
        let nr = Status::new(StatusCode::Generic(GenericStatus::NamespaceNotReady), false);
        assert!(nr.is_path_error());
        let tte = Status::new(StatusCode::Generic(GenericStatus::TransientTransportError), false);
        assert!(tte.is_path_error());
        let host = Status::new(StatusCode::Path(PathStatus::AbortedByHost), false);
        assert!(host.is_path_error());
        let inval = Status::new(StatusCode::Generic(GenericStatus::InvalidField), true);
        assert!(!inval.is_path_error() && !inval.is_media_error() && !inval.is_retryable());
        assert!(!Status::SUCCESS.is_retryable());
        assert!(Status::SUCCESS.is_success());
    }

    #[test]
    fn unknown_and_reserved_codes_survive() {
        let s = Status::from_raw((0x5e << 1) | (5 << 9));
        assert_eq!(s.code, StatusCode::Reserved { sct: 5, sc: 0x5e });
        let g = Status::from_raw(0x7f << 1);
        assert_eq!(g.code, StatusCode::Generic(GenericStatus::Other(0x7f)));
        let v = Status::from_raw((0x33 << 1) | (7 << 9));
        assert_eq!(v.code, StatusCode::Vendor(0x33));
        assert!(!format!("{v}").is_empty());
    }
}
