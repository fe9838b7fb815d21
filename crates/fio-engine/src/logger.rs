//! A minimal `log` backend writing to stderr, so xbdev's own messages reach the fio user.
//! The level comes from `XBDEV_LOG` (`error`, `warn`, `info`, `debug`, `trace`; default `warn`).

use log::{LevelFilter, Log, Metadata, Record};
use std::sync::Once;

struct Stderr;

impl Log for Stderr {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &Record<'_>) {
        if self.enabled(r.metadata()) {
            eprintln!("xbdev: {}: {}", r.level().as_str().to_ascii_lowercase(), r.args());
        }
    }

    fn flush(&self) {}
}

static LOGGER: Stderr = Stderr;

fn level(v: Option<&str>) -> LevelFilter {
    match v.map(str::trim) {
        Some("off") => LevelFilter::Off,
        Some("error") => LevelFilter::Error,
        Some("info") => LevelFilter::Info,
        Some("debug") => LevelFilter::Debug,
        Some("trace") => LevelFilter::Trace,
        _ => LevelFilter::Warn,
    }
}

/// Install the logger once per process (a no-op when the host installed another one).
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if log::set_logger(&LOGGER).is_ok() {
            log::set_max_level(level(std::env::var("XBDEV_LOG").ok().as_deref()));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels() {
        assert_eq!(level(None), LevelFilter::Warn);
        assert_eq!(level(Some("debug")), LevelFilter::Debug);
        assert_eq!(level(Some("nonsense")), LevelFilter::Warn);
    }
}
