//! NVMe completion status to block-layer IO status.

use bdev::IoStatus;
use nvme_spec::status::{GenericStatus, Status, StatusCode};

/// Maps an NVMe completion status to the block layer's [`IoStatus`].
pub fn io_status(s: Status) -> IoStatus {
    if s.is_success() {
        return IoStatus::Success;
    }
    if s.is_path_error() {
        return IoStatus::PathError;
    }
    if s.is_media_error() {
        return IoStatus::MediaError;
    }
    match s.code {
        StatusCode::Generic(g) => match g {
            GenericStatus::CapacityExceeded => IoStatus::NoSpace,
            GenericStatus::AbortRequested
            | GenericStatus::AbortedSqDeletion
            | GenericStatus::AbortedPowerLoss
            | GenericStatus::AbortedFailedFused
            | GenericStatus::AbortedMissingFused
            | GenericStatus::AbortedPreempt
            | GenericStatus::CommandInterrupted => IoStatus::Aborted,
            GenericStatus::InvalidOpcode
            | GenericStatus::InvalidField
            | GenericStatus::InvalidNamespaceOrFormat
            | GenericStatus::LbaOutOfRange
            | GenericStatus::NamespaceWriteProtected
            | GenericStatus::InvalidSglSegmentDescriptor
            | GenericStatus::InvalidSglCount
            | GenericStatus::DataSglLengthInvalid
            | GenericStatus::SglDescriptorTypeInvalid
            | GenericStatus::ReservationConflict
            | GenericStatus::OperationDenied => IoStatus::Invalid,
            // Data transfer and internal errors: the path (or controller)
            // failed, another path may succeed.
            _ if !s.dnr => IoStatus::PathError,
            _ => IoStatus::MediaError,
        },
        StatusCode::CommandSpecific(_) => IoStatus::Invalid,
        _ if !s.dnr => IoStatus::PathError,
        _ => IoStatus::MediaError,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nvme_spec::status::{MediaStatus, PathStatus};

    #[test]
    fn mapping() {
        let st = |code, dnr| Status::new(code, dnr);
        assert_eq!(io_status(Status::SUCCESS), IoStatus::Success);
        assert_eq!(io_status(st(StatusCode::Path(PathStatus::AnaInaccessible), false)), IoStatus::PathError);
        assert_eq!(io_status(st(StatusCode::Path(PathStatus::AnaTransition), true)), IoStatus::PathError);
        assert_eq!(io_status(st(StatusCode::Media(MediaStatus::UnrecoveredReadError), true)), IoStatus::MediaError);
        assert_eq!(io_status(st(StatusCode::Generic(GenericStatus::LbaOutOfRange), true)), IoStatus::Invalid);
        assert_eq!(io_status(st(StatusCode::Generic(GenericStatus::CapacityExceeded), true)), IoStatus::NoSpace);
        assert_eq!(io_status(st(StatusCode::Generic(GenericStatus::AbortedSqDeletion), false)), IoStatus::Aborted);
        assert_eq!(io_status(st(StatusCode::Generic(GenericStatus::NamespaceNotReady), false)), IoStatus::PathError);
        assert_eq!(io_status(st(StatusCode::Generic(GenericStatus::DataTransferError), false)), IoStatus::PathError);
        assert_eq!(io_status(st(StatusCode::Generic(GenericStatus::InternalError), true)), IoStatus::MediaError);
        assert_eq!(io_status(st(StatusCode::CommandSpecific(0x80), true)), IoStatus::Invalid);
    }
}
