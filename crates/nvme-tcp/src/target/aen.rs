//! ANA change notices of one controller: when an ANA change becomes an
//! asynchronous event, when it is masked, and when it is reported.
//!
//! The rules (NVMe base specification, Asynchronous Event Request and Get
//! Log Page RAE): a change is an event when it happens while notices are
//! enabled and the event type is not masked; reporting it masks the type
//! until the host reads the ANA log page with RAE cleared; an event that
//! found no Asynchronous Event Request outstanding is kept until one
//! arrives. The target notices changes lazily (in its poll loop), so every
//! place that looks at the ANA state for the host first turns the changes
//! made before it into the event they were: a log page read that arrives
//! before the poll loop noticed a change does not swallow its notice.

/// ANA change notice state of one admin queue.
#[derive(Debug)]
pub(crate) struct AnaNotices {
    /// Change count up to which changes were turned into an event or
    /// reported through the log page.
    seen: u64,
    /// An event was generated and not yet cleared by a log page read
    /// (further changes are not events).
    masked: bool,
    /// An event waits for an Asynchronous Event Request.
    pending: bool,
}

impl AnaNotices {
    /// Starting at change count `chgcnt` (the state the host sees first).
    pub(crate) fn new(chgcnt: u64) -> Self {
        Self { seen: chgcnt, masked: false, pending: false }
    }

    /// Turns changes up to `chgcnt` into an event when notices are
    /// `enabled` and the type is not masked.
    pub(crate) fn notice(&mut self, chgcnt: u64, enabled: bool) {
        if chgcnt == self.seen || self.masked {
            return;
        }
        self.seen = chgcnt;
        if enabled {
            self.pending = true;
            self.masked = true;
        }
    }

    /// The host reads the ANA log page reporting changes up to `chgcnt`
    /// (loaded before the page is built); `rae` is its Retain Asynchronous
    /// Event bit. Changes made before the read become their event first.
    pub(crate) fn log_read(&mut self, chgcnt: u64, enabled: bool, rae: bool) {
        self.notice(chgcnt, enabled);
        if !rae {
            self.masked = false;
            self.seen = chgcnt;
        }
    }

    /// Whether an event is reported now, given an outstanding Asynchronous
    /// Event Request (`aer`); changes up to `chgcnt` are noticed first.
    pub(crate) fn take(&mut self, chgcnt: u64, enabled: bool, aer: bool) -> bool {
        self.notice(chgcnt, enabled);
        if self.pending && aer {
            self.pending = false;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::AnaNotices;

    #[test]
    fn change_then_poll_reports_once() {
        let mut n = AnaNotices::new(1);
        assert!(!n.take(1, true, true));
        assert!(n.take(2, true, true));
        assert!(!n.take(2, true, true));
    }

    #[test]
    fn log_read_before_the_poll_noticed_a_change_keeps_its_event() {
        // The order of a target pass: the read is handled, then the poll
        // checks for events.
        let mut n = AnaNotices::new(1);
        n.log_read(2, true, false);
        assert!(n.take(2, true, true), "the change came before the read");
        // The host reads again after the notice; nothing more to report.
        n.log_read(2, true, false);
        assert!(!n.take(2, true, true));
    }

    #[test]
    fn reported_event_masks_further_changes_until_read_without_rae() {
        let mut n = AnaNotices::new(1);
        assert!(n.take(2, true, true));
        assert!(!n.take(3, true, true), "masked");
        n.log_read(3, true, true);
        assert!(!n.take(4, true, true), "RAE set: still masked");
        n.log_read(4, true, false);
        assert!(!n.take(4, true, true), "the read reported change 4");
        assert!(n.take(5, true, true), "a change after the read is a new event");
    }

    #[test]
    fn event_waits_for_a_request() {
        let mut n = AnaNotices::new(1);
        assert!(!n.take(2, true, false));
        assert!(!n.take(3, true, false));
        assert!(n.take(3, true, true));
        assert!(!n.take(3, true, true));
    }

    #[test]
    fn disabled_notices_are_no_events() {
        let mut n = AnaNotices::new(1);
        assert!(!n.take(2, false, true));
        // Enabling later does not report the old change.
        assert!(!n.take(2, true, true));
        assert!(n.take(3, true, true));
    }
}
