//! Per-core run-to-completion reactors.
//!
//! One reactor thread per configured core, pinned, loops over its pollers, timers and message
//! queue. Everything a reactor owns (IO channels, queue pairs, module state) lives in closures
//! registered on it and is touched only by its thread; other threads reach it with messages.
//!
//! Idle policy: while pollers report work the loop spins; after `spin` without work it parks
//! (woken by [`ReactorHandle::notify`], by its next timer, or by a descriptor a poller watches
//! with [`Ctx::watch_fd`] becoming readable, e.g. a socket), so an idle process burns no core.
//! [`IdlePolicy::AlwaysPoll`] never parks (benchmarks).

use bdev::clock;
use crossbeam_queue::SegQueue;
use crossbeam_utils::CachePadded;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{JoinHandle, Thread};
use std::time::Duration;

/// What a poller did in one pass.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PollStatus {
    /// It did work, or has work in flight that needs polling (keeps the reactor spinning).
    Busy,
    /// Nothing to do.
    Idle,
}

/// How a reactor behaves without work.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum IdlePolicy {
    /// Spin forever (lowest latency, one core at 100%).
    AlwaysPoll,
    /// Spin for `spin` after the last work, then park for at most `max_sleep` at a time.
    Adaptive {
        /// Busy-poll window after the last work.
        spin: Duration,
        /// Longest single park.
        max_sleep: Duration,
    },
}

impl Default for IdlePolicy {
    fn default() -> Self {
        IdlePolicy::Adaptive { spin: Duration::from_micros(200), max_sleep: Duration::from_millis(100) }
    }
}

/// Reactor set configuration.
#[derive(Clone, Debug)]
pub struct ReactorConfig {
    /// CPU ids, one reactor each.
    pub cores: Vec<usize>,
    /// Pin each reactor thread to its CPU.
    pub pin: bool,
    /// Idle behaviour.
    pub idle: IdlePolicy,
}

impl Default for ReactorConfig {
    fn default() -> Self {
        ReactorConfig { cores: vec![0], pin: true, idle: IdlePolicy::default() }
    }
}

impl ReactorConfig {
    /// Reactors on the CPUs of a core mask (`0x3` = CPUs 0 and 1).
    pub fn from_mask(mask: u64) -> ReactorConfig {
        ReactorConfig { cores: (0..64).filter(|i| mask & (1 << i) != 0).collect(), ..Default::default() }
    }
}

/// Errors starting or talking to reactors.
#[derive(Debug, thiserror::Error)]
pub enum ReactorError {
    /// No cores were configured.
    #[error("no reactor cores configured")]
    NoCores,
    /// A core id beyond the machine's CPUs.
    #[error("core {core} does not exist (this machine has {available} CPUs)")]
    NoSuchCore {
        /// Requested core.
        core: usize,
        /// CPUs available.
        available: usize,
    },
    /// The same core twice.
    #[error("core {0} listed twice")]
    DuplicateCore(usize),
    /// The reactor index is out of range.
    #[error("no reactor {0}")]
    NoSuchReactor(usize),
    /// A blocking call from a reactor to itself.
    #[error("reactor {0} cannot wait for a call to itself")]
    SameReactor(usize),
    /// The reactors were stopped.
    #[error("reactors are stopped")]
    Stopped,
    /// The OS refused a thread.
    #[error("cannot start reactor thread")]
    Spawn(#[source] std::io::Error),
}

/// Identifies a poller or timer on its reactor.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct PollerId(u64);

type Message = Box<dyn FnOnce(&mut Ctx) + Send>;
type PollFn = Box<dyn FnMut(&mut Ctx) -> PollStatus>;

struct Shared {
    msgs: SegQueue<Message>,
    sleeping: CachePadded<AtomicBool>,
    wake: CachePadded<AtomicBool>,
    stop: AtomicBool,
    thread: std::sync::OnceLock<Thread>,
    loops: AtomicU64,
    parks: AtomicU64,
    /// What a parked reactor waits on besides watched descriptors (`None`
    /// if no eventfd could be made: it parks the thread, and watched
    /// descriptors do not wake it).
    event: Option<ffi::EventFd>,
}

mod ffi;

impl Shared {
    /// Ends a park.
    fn wake_up(&self) {
        match &self.event {
            Some(e) => e.signal(),
            None => {
                if let Some(t) = self.thread.get() {
                    t.unpark();
                }
            }
        }
    }
}

/// Identifies a descriptor watched by a parked reactor ([`Ctx::watch_fd`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct FdWatch(u64);

/// A handle to one reactor, usable from any thread.
#[derive(Clone)]
pub struct ReactorHandle {
    index: usize,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ReactorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReactorHandle").field("index", &self.index).finish()
    }
}

impl ReactorHandle {
    /// The reactor's index in its set.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Run `f` on the reactor (asynchronously).
    pub fn send(&self, f: impl FnOnce(&mut Ctx) + Send + 'static) -> Result<(), ReactorError> {
        if self.shared.stop.load(Ordering::Acquire) {
            return Err(ReactorError::Stopped);
        }
        self.shared.msgs.push(Box::new(f));
        self.notify();
        Ok(())
    }

    /// Run `f` on the reactor and wait for its result.
    pub fn call<R: Send + 'static>(&self, f: impl FnOnce(&mut Ctx) -> R + Send + 'static) -> Result<R, ReactorError> {
        if Ctx::current_index() == Some(self.index) {
            return Err(ReactorError::SameReactor(self.index));
        }
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(move |ctx| {
            let _ = tx.send(f(ctx));
        })?;
        rx.recv().map_err(|_| ReactorError::Stopped)
    }

    /// Wake the reactor if it is parked: call after making work visible to one of its pollers.
    #[inline]
    pub fn notify(&self) {
        self.shared.wake.store(true, Ordering::SeqCst);
        if self.shared.sleeping.load(Ordering::SeqCst) {
            self.shared.wake_up();
        }
    }

    /// Loop iterations so far and times parked (for tests and monitoring).
    pub fn counters(&self) -> (u64, u64) {
        (self.shared.loops.load(Ordering::Relaxed), self.shared.parks.load(Ordering::Relaxed))
    }
}

struct Poller {
    id: PollerId,
    name: String,
    f: PollFn,
    /// For timers: period and next deadline in ticks.
    timer: Option<(u64, u64)>,
}

/// The reactor's own state, reachable only on its thread.
pub struct Ctx {
    index: usize,
    handles: Arc<Vec<ReactorHandle>>,
    pollers: Vec<Poller>,
    added: Vec<Poller>,
    removed: Vec<PollerId>,
    next_id: u64,
    watched: Vec<(FdWatch, RawFd)>,
    pollfds: Vec<libc::pollfd>,
}

thread_local! {
    static CURRENT_INDEX: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

impl Ctx {
    /// This reactor's index.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Handles to every reactor of the set (for cross-core messages).
    pub fn reactors(&self) -> &[ReactorHandle] {
        &self.handles
    }

    /// Register a poller, called every loop iteration until removed.
    pub fn add_poller(&mut self, name: &str, f: impl FnMut(&mut Ctx) -> PollStatus + 'static) -> PollerId {
        self.next_id += 1;
        let id = PollerId(self.next_id);
        self.added.push(Poller { id, name: name.to_string(), f: Box::new(f), timer: None });
        id
    }

    /// Register a timer, called every `period` until removed.
    pub fn add_timer(&mut self, name: &str, period: Duration, mut f: impl FnMut(&mut Ctx) + 'static) -> PollerId {
        self.next_id += 1;
        let id = PollerId(self.next_id);
        let p = clock::ns_to_ticks(period.as_nanos() as u64).max(1);
        self.added.push(Poller {
            id,
            name: name.to_string(),
            f: Box::new(move |c| {
                f(c);
                PollStatus::Idle
            }),
            timer: Some((p, clock::ticks() + p)),
        });
        id
    }

    /// Remove a poller or timer (takes effect after the current pass).
    pub fn remove(&mut self, id: PollerId) {
        self.removed.push(id);
        self.added.retain(|p| p.id != id);
    }

    /// Wakes this reactor from a park when `fd` becomes readable (a socket
    /// a poller reads, say), so data arriving while it is parked is served
    /// at once rather than after the park timeout. The descriptor must stay
    /// open until [`Ctx::unwatch_fd`]; a poller that leaves readable data
    /// unread while reporting [`PollStatus::Idle`] keeps the reactor from
    /// sleeping.
    pub fn watch_fd(&mut self, fd: &impl AsRawFd) -> FdWatch {
        self.next_id += 1;
        let w = FdWatch(self.next_id);
        self.watched.push((w, fd.as_raw_fd()));
        w
    }

    /// Stops watching a descriptor.
    pub fn unwatch_fd(&mut self, w: FdWatch) {
        self.watched.retain(|(x, _)| *x != w);
    }

    /// Number of descriptors watched.
    pub fn watched_fds(&self) -> usize {
        self.watched.len()
    }

    /// Names of registered pollers and timers.
    pub fn poller_names(&self) -> Vec<String> {
        self.pollers.iter().chain(&self.added).map(|p| p.name.clone()).collect()
    }

    /// The index of the reactor running on this thread, if any.
    pub fn current_index() -> Option<usize> {
        CURRENT_INDEX.with(|c| c.get())
    }
}

/// A running set of reactors.
pub struct Reactors {
    handles: Arc<Vec<ReactorHandle>>,
    threads: Vec<JoinHandle<()>>,
}

impl Reactors {
    /// Start one reactor per configured core.
    pub fn start(cfg: &ReactorConfig) -> Result<Reactors, ReactorError> {
        if cfg.cores.is_empty() {
            return Err(ReactorError::NoCores);
        }
        let available = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        for (i, &c) in cfg.cores.iter().enumerate() {
            if cfg.pin && c >= available.max(num_cpus_configured()) {
                return Err(ReactorError::NoSuchCore { core: c, available });
            }
            if cfg.cores[..i].contains(&c) {
                return Err(ReactorError::DuplicateCore(c));
            }
        }
        let _ = clock::ticks_per_us();
        let handles: Arc<Vec<ReactorHandle>> = Arc::new(
            (0..cfg.cores.len())
                .map(|index| ReactorHandle {
                    index,
                    shared: Arc::new(Shared {
                        msgs: SegQueue::new(),
                        sleeping: CachePadded::new(AtomicBool::new(false)),
                        wake: CachePadded::new(AtomicBool::new(false)),
                        stop: AtomicBool::new(false),
                        thread: std::sync::OnceLock::new(),
                        loops: AtomicU64::new(0),
                        parks: AtomicU64::new(0),
                        event: ffi::EventFd::new()
                            .map_err(|e| log::warn!("reactor {index}: no eventfd ({e}); parking the thread"))
                            .ok(),
                    }),
                })
                .collect(),
        );
        let mut threads = Vec::new();
        for (index, &core) in cfg.cores.iter().enumerate() {
            let hs = handles.clone();
            let pin = cfg.pin;
            let idle = cfg.idle;
            let t = std::thread::Builder::new()
                .name(format!("xbdev-reactor-{index}"))
                .spawn(move || run(index, core, pin, idle, hs))
                .map_err(ReactorError::Spawn)?;
            let _ = handles[index].shared.thread.set(t.thread().clone());
            threads.push(t);
        }
        Ok(Reactors { handles, threads })
    }

    /// Number of reactors.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Whether there are no reactors (never, once started).
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Handle to reactor `i`.
    pub fn get(&self, i: usize) -> Result<&ReactorHandle, ReactorError> {
        self.handles.get(i).ok_or(ReactorError::NoSuchReactor(i))
    }

    /// All handles.
    pub fn handles(&self) -> &[ReactorHandle] {
        &self.handles
    }

    /// Run `f` on every reactor and wait for all results.
    pub fn call_all<R: Send + 'static>(
        &self,
        f: impl Fn(&mut Ctx) -> R + Send + Sync + 'static,
    ) -> Result<Vec<R>, ReactorError> {
        let f = Arc::new(f);
        let rxs: Vec<_> = self
            .handles
            .iter()
            .map(|h| {
                let (tx, rx) = mpsc::sync_channel(1);
                let f = f.clone();
                h.send(move |ctx| {
                    let _ = tx.send(f(ctx));
                })
                .map(|_| rx)
            })
            .collect::<Result<_, _>>()?;
        rxs.into_iter().map(|rx| rx.recv().map_err(|_| ReactorError::Stopped)).collect()
    }

    /// Stop every reactor: each finishes its messages, drops its pollers (closing their
    /// channels on their own thread) and exits.
    pub fn stop(&mut self) {
        for h in self.handles.iter() {
            h.shared.stop.store(true, Ordering::Release);
            h.notify();
            h.shared.wake_up();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Reactors {
    fn drop(&mut self) {
        self.stop();
    }
}

fn num_cpus_configured() -> usize {
    std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|s| s.trim().rsplit(['-', ',']).next().and_then(|x| x.parse::<usize>().ok()))
        .map(|n| n + 1)
        .unwrap_or(1)
}

/// Waits for a notification, a watched descriptor or `sleep` to pass.
fn park(shared: &Shared, ctx: &mut Ctx, sleep: Duration) {
    let Some(ev) = &shared.event else {
        std::thread::park_timeout(sleep);
        return;
    };
    ctx.pollfds.clear();
    ctx.pollfds.push(ffi::readable(ev.as_raw_fd()));
    ctx.pollfds.extend(ctx.watched.iter().map(|&(_, fd)| ffi::readable(fd)));
    if let Err(e) = ffi::wait(&mut ctx.pollfds, sleep) {
        log::warn!("reactor {}: ppoll failed ({e}); parking the thread", ctx.index);
        std::thread::park_timeout(sleep);
    }
    ev.drain();
}

fn run(index: usize, core: usize, pin: bool, idle: IdlePolicy, handles: Arc<Vec<ReactorHandle>>) {
    if pin {
        if let Err(e) = bdev::ffi::pin_to_cpu(core) {
            log::warn!("reactor {index}: cannot pin to cpu {core}: {e}");
        }
    }
    CURRENT_INDEX.with(|c| c.set(Some(index)));
    let shared = handles[index].shared.clone();
    let mut ctx = Ctx {
        index,
        handles,
        pollers: Vec::new(),
        added: Vec::new(),
        removed: Vec::new(),
        next_id: 0,
        watched: Vec::new(),
        pollfds: Vec::new(),
    };
    let (spin_ticks, max_sleep) = match idle {
        IdlePolicy::AlwaysPoll => (u64::MAX, Duration::ZERO),
        IdlePolicy::Adaptive { spin, max_sleep } => (clock::ns_to_ticks(spin.as_nanos() as u64), max_sleep),
    };
    let mut last_busy = clock::ticks();
    let mut loops = 0u64;
    loop {
        let mut busy = false;
        for _ in 0..64 {
            match shared.msgs.pop() {
                Some(m) => {
                    m(&mut ctx);
                    busy = true;
                }
                None => break,
            }
        }
        let now = clock::ticks();
        let mut pollers = std::mem::take(&mut ctx.pollers);
        for p in pollers.iter_mut() {
            match &mut p.timer {
                None => {
                    if (p.f)(&mut ctx) == PollStatus::Busy {
                        busy = true;
                    }
                }
                Some((period, next)) => {
                    if now >= *next {
                        *next = now + *period;
                        (p.f)(&mut ctx);
                        busy = true;
                    }
                }
            }
        }
        if !ctx.removed.is_empty() {
            let removed = std::mem::take(&mut ctx.removed);
            pollers.retain(|p| !removed.contains(&p.id));
        }
        pollers.append(&mut ctx.added);
        ctx.pollers = pollers;
        loops += 1;
        if loops & 1023 == 0 {
            shared.loops.store(loops, Ordering::Relaxed);
        }
        if shared.stop.load(Ordering::Acquire) {
            break;
        }
        if busy {
            last_busy = now;
            continue;
        }
        if spin_ticks == u64::MAX || now.saturating_sub(last_busy) < spin_ticks {
            std::hint::spin_loop();
            continue;
        }
        // Park until notified or the next timer is due.
        let next_timer = ctx.pollers.iter().filter_map(|p| p.timer.map(|t| t.1)).min();
        let mut sleep = max_sleep;
        if let Some(t) = next_timer {
            sleep = sleep.min(Duration::from_nanos(clock::ticks_to_ns(t.saturating_sub(now))));
        }
        shared.sleeping.store(true, Ordering::SeqCst);
        if !shared.wake.swap(false, Ordering::SeqCst) && shared.msgs.is_empty() && !sleep.is_zero() {
            shared.parks.fetch_add(1, Ordering::Relaxed);
            park(&shared, &mut ctx, sleep);
        }
        shared.sleeping.store(false, Ordering::SeqCst);
        shared.wake.store(false, Ordering::SeqCst);
        last_busy = clock::ticks();
    }
    // Drop pollers (and the channels they own) on this thread.
    ctx.pollers.clear();
    ctx.added.clear();
    while let Some(m) = shared.msgs.pop() {
        drop(m);
    }
    shared.loops.store(loops, Ordering::Relaxed);
}
