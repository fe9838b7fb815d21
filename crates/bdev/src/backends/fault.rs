//! Fault injection stacked on any bdev (like SPDK's error and delay bdevs): inject errors of a
//! chosen status on chosen IO types at a rate or after a count, add latency, or stop
//! completing. Later layers (RAID, multipath, lvol) test against it.
//!
//! Rules change at run time: the control side bumps a generation counter and each channel
//! re-reads the configuration at its next IO, so the IO path takes no lock.

use super::DoneQueue;
use crate::bdev::{AnaState, Bdev, BdevInfo, IoChannel};
use crate::channel::BdevChannel;
use crate::clock;
use crate::io::{IoRequest, IoStatus, IoTypeSet, QueueFull};
use crate::registry::Desc;
use crate::{rand, BdevError};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// When an error rule fires.
#[derive(Copy, Clone, Debug, PartialEq)]
pub enum Trigger {
    /// On every matching IO.
    Always,
    /// On each matching IO with this probability (0.0..=1.0).
    Rate(f64),
    /// On every matching IO after the first `n` have passed (counted per channel).
    AfterCount(u64),
    /// On the next `n` matching IOs, then never again (counted per channel).
    Next(u64),
}

/// An error-injection rule.
#[derive(Clone, Debug, PartialEq)]
pub struct ErrorRule {
    /// IO types the rule applies to.
    pub io_types: IoTypeSet,
    /// Status to complete with.
    pub status: IoStatus,
    /// When it fires.
    pub trigger: Trigger,
    /// Only IOs touching blocks in `[start, end)` (None = everywhere).
    pub lba_range: Option<(u64, u64)>,
}

/// The complete fault configuration.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultConfig {
    /// Error rules, first match wins.
    pub errors: Vec<ErrorRule>,
    /// Extra latency added to every completion, in microseconds.
    pub delay_us: u64,
    /// IO types the delay applies to (empty = all).
    pub delay_types: IoTypeSet,
    /// Hold completions instead of delivering them (a stalled device).
    pub stall: bool,
}

struct Shared {
    cfg: Mutex<FaultConfig>,
    generation: AtomicU64,
}

/// A fault-injecting bdev over a base bdev (which it claims).
pub struct FaultBdev {
    info: BdevInfo,
    base: Desc,
    shared: Arc<Shared>,
}

impl FaultBdev {
    /// Stack a fault bdev named `name` on the open descriptor `base` (claimed here).
    pub fn new(name: &str, base: Desc) -> Result<FaultBdev, BdevError> {
        if name.is_empty() {
            return Err(BdevError::param("name", "must not be empty"));
        }
        base.claim(&format!("fault:{name}"))?;
        let b = base.info();
        let mut info = b.clone();
        info.name = name.to_string();
        info.aliases = Vec::new();
        info.product = "fault".into();
        Ok(FaultBdev {
            info,
            base,
            shared: Arc::new(Shared { cfg: Mutex::new(FaultConfig::default()), generation: AtomicU64::new(1) }),
        })
    }

    /// Replace the fault configuration (takes effect at each channel's next IO).
    pub fn configure(&self, cfg: FaultConfig) {
        *self.shared.cfg.lock().unwrap_or_else(|e| e.into_inner()) = cfg;
        self.shared.generation.fetch_add(1, Ordering::Release);
    }

    /// Change the configuration in place.
    pub fn update(&self, f: impl FnOnce(&mut FaultConfig)) {
        f(&mut self.shared.cfg.lock().unwrap_or_else(|e| e.into_inner()));
        self.shared.generation.fetch_add(1, Ordering::Release);
    }

    /// The current configuration.
    pub fn config(&self) -> FaultConfig {
        self.shared.cfg.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The base bdev's name.
    pub fn base_name(&self) -> &str {
        &self.base.info().name
    }
}

struct RuleState {
    rule: ErrorRule,
    seen: u64,
}

struct FaultChannel {
    base: BdevChannel,
    shared: Arc<Shared>,
    generation: u64,
    rules: Vec<RuleState>,
    delay_ticks: u64,
    delay_types: IoTypeSet,
    stall: bool,
    rng: u64,
    injected: DoneQueue,
    /// Completions waiting: (deliver-at ticks, tag, status).
    held: VecDeque<(u64, u64, IoStatus)>,
    /// Tags of in-flight IOs whose completion gets the delay (decided by type at submit).
    delayed_tags: Vec<u64>,
}

impl Bdev for FaultBdev {
    fn info(&self) -> &BdevInfo {
        &self.info
    }

    fn open_channel(&self) -> Result<Box<dyn IoChannel>, BdevError> {
        let base = self.base.channel()?;
        let depth = base.depth();
        let mut ch = FaultChannel {
            base,
            shared: self.shared.clone(),
            generation: 0,
            rules: Vec::new(),
            delay_ticks: 0,
            delay_types: IoTypeSet::NONE,
            stall: false,
            rng: rand::seed(),
            injected: DoneQueue::new(depth),
            held: VecDeque::with_capacity(depth),
            delayed_tags: Vec::with_capacity(depth),
        };
        ch.refresh();
        Ok(Box::new(ch))
    }

    /// The base's ANA state: fault injection is transparent to it.
    fn ana_state(&self) -> Option<AnaState> {
        self.base.bdev().ana_state()
    }
}

impl FaultChannel {
    #[inline]
    fn refresh(&mut self) {
        let g = self.shared.generation.load(Ordering::Acquire);
        if g == self.generation {
            return;
        }
        let cfg = self.shared.cfg.lock().unwrap_or_else(|e| e.into_inner()).clone();
        self.generation = g;
        self.rules = cfg.errors.into_iter().map(|rule| RuleState { rule, seen: 0 }).collect();
        self.delay_ticks = clock::ns_to_ticks(cfg.delay_us * 1000);
        self.delay_types = cfg.delay_types;
        self.stall = cfg.stall;
    }

    fn injected_status(&mut self, io: &IoRequest) -> Option<IoStatus> {
        for r in &mut self.rules {
            if !r.rule.io_types.contains(io.io_type) {
                continue;
            }
            if let Some((s, e)) = r.rule.lba_range {
                if io.offset_blocks >= e || io.offset_blocks + io.num_blocks.max(1) <= s {
                    continue;
                }
            }
            r.seen += 1;
            let fire = match r.rule.trigger {
                Trigger::Always => true,
                Trigger::Rate(p) => (rand::next(&mut self.rng) >> 11) as f64 / (1u64 << 53) as f64 <= p,
                Trigger::AfterCount(n) => r.seen > n,
                Trigger::Next(n) => r.seen <= n,
            };
            if fire {
                return Some(r.rule.status);
            }
        }
        None
    }
}

impl IoChannel for FaultChannel {
    fn submit(&mut self, io: &IoRequest) -> Result<(), QueueFull> {
        self.refresh();
        if let Some(status) = self.injected_status(io) {
            if self.injected.is_full() {
                return Err(QueueFull);
            }
            self.injected.push(io.tag, status);
            return Ok(());
        }
        let delayed =
            self.delay_ticks > 0 && (self.delay_types == IoTypeSet::NONE || self.delay_types.contains(io.io_type));
        self.base.submit(io)?;
        if delayed {
            self.delayed_tags.push(io.tag);
        }
        Ok(())
    }

    fn poll(&mut self, done: &mut dyn FnMut(u64, IoStatus)) -> usize {
        self.refresh();
        let now = clock::ticks();
        let FaultChannel { base, held, delayed_tags, delay_ticks, .. } = self;
        base.poll(&mut |tag, status| {
            let at = match delayed_tags.iter().position(|t| *t == tag) {
                Some(i) => {
                    delayed_tags.swap_remove(i);
                    now + *delay_ticks
                }
                None => 0,
            };
            held.push_back((at, tag, status));
        });
        let mut n = 0;
        if !self.stall {
            n += self.injected.drain(done);
            let now = clock::ticks();
            let mut i = 0;
            while i < self.held.len() {
                if self.held[i].0 <= now {
                    if let Some((_, tag, st)) = self.held.remove(i) {
                        done(tag, st);
                        n += 1;
                    }
                } else {
                    i += 1;
                }
            }
        }
        n
    }

    fn in_flight(&self) -> usize {
        self.base.in_flight() + self.held.len() + self.injected.len()
    }
}
