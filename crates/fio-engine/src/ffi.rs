//! The boundary with fio and the OS: `get_ioengine`, the `extern "C"` functions the C shim
//! (csrc/fio_xbdev.c) calls from fio's hooks, and the few raw OS calls of the engine
//! (signal masks, the size-probe child process). All of the engine's `unsafe` is here.
//!
//! Conventions of the shim ABI: integer results are 0 for success and `-errno` for failure;
//! error text goes into the caller's buffer `err[..errlen]`, NUL-terminated and truncated.

use crate::error::{status_errno, EngineError};
use crate::job::{Job, Op, QueueOutcome};
use crate::spec::JobSpec;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::time::{Duration, Instant};

/// A job's parameters as the shim passes them (`struct xb_job_params` in fio_xbdev.c).
#[repr(C)]
pub struct JobParams {
    /// `xbdev_conf` or null.
    pub conf: *const c_char,
    /// `xbdev_cores` or null.
    pub cores: *const c_char,
    /// `xbdev_idle` or null.
    pub idle: *const c_char,
    /// `xbdev_mode` or null.
    pub mode: *const c_char,
    /// fio's job name or null.
    pub job_name: *const c_char,
    /// fio's `iodepth`.
    pub iodepth: u32,
    /// Non-zero with `--thread`.
    pub thread_mode: u32,
}

/// `xbdev_rs_queue`'s result for "no room, commit and reap first".
const QUEUE_BUSY: c_int = 1;

extern "C" {
    /// The engine's `struct ioengine_ops`, or null when the running fio is not the version the
    /// shim was compiled for (fio_xbdev.c).
    fn xbdev_fio_shim_ops() -> *mut c_void;
    /// FIO_IOOPS_VERSION of the headers the shim was compiled against.
    fn xbdev_fio_shim_ioops_version() -> u32;
}

/// fio's entry point: hand over the engine's ops.
///
/// # Safety
/// `ops` must be null or valid for one pointer write (fio passes the address of a local).
#[no_mangle]
pub unsafe extern "C" fn get_ioengine(ops: *mut *mut c_void) {
    crate::logger::init();
    if ops.is_null() {
        return;
    }
    // SAFETY: the shim returns the address of its static ops table, or null.
    let p = unsafe { xbdev_fio_shim_ops() };
    // SAFETY: the caller guarantees `ops` is valid for a write (checked non-null above).
    unsafe { *ops = p };
}

/// FIO_IOOPS_VERSION the shim was compiled against.
pub fn shim_ioops_version() -> u32 {
    // SAFETY: a pure function of the shim returning a constant.
    unsafe { xbdev_fio_shim_ioops_version() }
}

/// Whether the shim accepts the running process as a compatible fio (true outside fio, where
/// the version symbol does not exist).
pub fn shim_accepts_this_process() -> bool {
    // SAFETY: see `get_ioengine`; the result is only compared with null.
    !unsafe { xbdev_fio_shim_ops() }.is_null()
}

// ---------------------------------------------------------------------------------------------
// Helpers.

/// Copy `msg` into the C buffer `err[..len]`, NUL-terminated.
fn write_err(err: *mut c_char, len: usize, msg: &str) {
    if err.is_null() || len == 0 {
        return;
    }
    let n = msg.len().min(len - 1);
    // SAFETY: the shim passes a buffer of `len` bytes; n + 1 <= len bytes are written, and
    // `msg` does not overlap it (it is Rust-owned).
    unsafe {
        std::ptr::copy_nonoverlapping(msg.as_ptr().cast::<c_char>(), err, n);
        *err.add(n) = 0;
    }
}

fn fail(err: *mut c_char, len: usize, e: &EngineError) -> c_int {
    write_err(err, len, &e.chain());
    -e.errno()
}

/// A C string option as `&str`, `None` when null.
///
/// # Safety
/// `p` is null or a NUL-terminated string that outlives the returned reference.
unsafe fn opt_str<'a>(p: *const c_char, what: &'static str) -> Result<Option<&'a str>, EngineError> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: per this function's contract.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str().map(Some).map_err(|_| EngineError::NotUtf8(what))
}

/// The job's options as a [`JobSpec`].
///
/// # Safety
/// `p` is null or points to a valid `JobParams` whose strings are valid C strings.
unsafe fn spec_of(p: *const JobParams) -> Result<(JobSpec, u32, bool), EngineError> {
    // SAFETY: per this function's contract.
    let Some(p) = (unsafe { p.as_ref() }) else { return Err(EngineError::NoConfig) };
    // SAFETY: the shim passes fio's option strings (or null), alive for the whole call.
    let (conf, cores, idle, mode) = unsafe {
        (
            opt_str(p.conf, "xbdev_conf")?,
            opt_str(p.cores, "xbdev_cores")?,
            opt_str(p.idle, "xbdev_idle")?,
            opt_str(p.mode, "xbdev_mode")?,
        )
    };
    Ok((JobSpec::from_options(conf, cores, idle)?.with_mode(mode)?, p.iodepth, p.thread_mode != 0))
}

/// The job behind the shim's `td->io_ops_data`.
///
/// # Safety
/// `job` is null or a pointer returned by `xbdev_rs_init` and not yet passed to
/// `xbdev_rs_cleanup`; fio calls one job's hooks from one thread, so no other reference to the
/// job exists during the call.
unsafe fn job<'a>(job: *mut c_void) -> Option<&'a mut Job> {
    // SAFETY: per this function's contract.
    unsafe { job.cast::<Job>().as_mut() }
}

// ---------------------------------------------------------------------------------------------
// The shim's calls.

/// `setup`: sizes of the devices `names[..n]` into `sizes[..n]`.
///
/// # Safety
/// `p` as in `spec_of()`; `names` holds `n` valid C strings; `sizes` has room for `n` values;
/// `err` has `errlen` bytes.
#[no_mangle]
pub unsafe extern "C" fn xbdev_rs_file_sizes(
    p: *const JobParams,
    names: *const *const c_char,
    n: u32,
    sizes: *mut u64,
    err: *mut c_char,
    errlen: usize,
) -> c_int {
    // SAFETY: per this function's contract.
    let spec = match unsafe { spec_of(p) } {
        Ok((s, _, _)) => s,
        Err(e) => return fail(err, errlen, &e),
    };
    if n > 0 && (names.is_null() || sizes.is_null()) {
        return fail(err, errlen, &EngineError::Probe("no file list".into()));
    }
    let mut list = Vec::with_capacity(n as usize);
    for i in 0..n as usize {
        // SAFETY: `names` holds `n` pointers (checked non-null above).
        let np = unsafe { *names.add(i) };
        // SAFETY: each is fio's NUL-terminated file name.
        match unsafe { opt_str(np, "filename") } {
            Ok(Some(s)) => list.push(s.to_string()),
            Ok(None) => return fail(err, errlen, &EngineError::Probe("a file has no name".into())),
            Err(e) => return fail(err, errlen, &e),
        }
    }
    match crate::probe::file_sizes(&spec, &list) {
        Ok(v) => {
            for (i, s) in v.iter().enumerate() {
                // SAFETY: `sizes` has room for `n` values and v.len() == n.
                unsafe { *sizes.add(i) = *s };
            }
            0
        }
        Err(e) => fail(err, errlen, &e),
    }
}

/// `init`: create the job (starting this process's instance when needed).
///
/// # Safety
/// `p` as in `spec_of()`; `out` valid for one pointer write; `err` has `errlen` bytes.
#[no_mangle]
pub unsafe extern "C" fn xbdev_rs_init(
    p: *const JobParams,
    out: *mut *mut c_void,
    err: *mut c_char,
    errlen: usize,
) -> c_int {
    crate::logger::init();
    // SAFETY: per this function's contract.
    let (spec, iodepth, thread_mode) = match unsafe { spec_of(p) } {
        Ok(x) => x,
        Err(e) => return fail(err, errlen, &e),
    };
    if out.is_null() {
        return fail(err, errlen, &EngineError::Probe("no job pointer".into()));
    }
    match Job::new(&spec, iodepth as usize, thread_mode, |cfg| with_signals_blocked(|| xbdev::Xbdev::start(cfg))) {
        Ok(j) => {
            // SAFETY: `out` is valid for a write (checked non-null).
            unsafe { *out = Box::into_raw(Box::new(j)).cast::<c_void>() };
            0
        }
        Err(e) => fail(err, errlen, &e),
    }
}

/// `cleanup`: wait for the job's IO, close its devices, release its instance (stopping it when
/// this was the instance's last job).
///
/// # Safety
/// `j` is null or a live pointer from `xbdev_rs_init`, not used again afterwards.
#[no_mangle]
pub unsafe extern "C" fn xbdev_rs_cleanup(j: *mut c_void) {
    if !j.is_null() {
        // SAFETY: per this function's contract the pointer came from Box::into_raw in
        // xbdev_rs_init and is released exactly once here.
        drop(unsafe { Box::from_raw(j.cast::<Job>()) });
    }
}

/// `open_file`: open device `name`; its id and size in bytes go to `id` and `size`.
///
/// # Safety
/// `j` as in `job()`; `name` a valid C string; `id`/`size` valid for writes; `err` has `errlen`
/// bytes.
#[no_mangle]
pub unsafe extern "C" fn xbdev_rs_open(
    j: *mut c_void,
    name: *const c_char,
    writable: c_int,
    id: *mut u32,
    size: *mut u64,
    err: *mut c_char,
    errlen: usize,
) -> c_int {
    // SAFETY: per this function's contract.
    let Some(job) = (unsafe { job(j) }) else { return fail(err, errlen, &EngineError::BadFile(u32::MAX)) };
    // SAFETY: fio's file name, a valid C string.
    let name = match unsafe { opt_str(name, "filename") } {
        Ok(Some(n)) => n,
        Ok(None) => return fail(err, errlen, &EngineError::Probe("a file has no name".into())),
        Err(e) => return fail(err, errlen, &e),
    };
    if id.is_null() || size.is_null() {
        return fail(err, errlen, &EngineError::BadFile(u32::MAX));
    }
    match job.open(name, writable != 0) {
        Ok((i, s)) => {
            // SAFETY: both valid for writes (checked non-null).
            unsafe {
                *id = i;
                *size = s;
            }
            0
        }
        Err(e) => fail(err, errlen, &e),
    }
}

/// `close_file`.
///
/// # Safety
/// `j` as in `job()`.
#[no_mangle]
pub unsafe extern "C" fn xbdev_rs_close(j: *mut c_void, id: u32) -> c_int {
    // SAFETY: per this function's contract.
    let Some(job) = (unsafe { job(j) }) else { return -libc::EBADF };
    match job.close(id) {
        Ok(()) => 0,
        Err(e) => {
            log::error!("{}", e.chain());
            job.set_last_error(&e);
            -e.errno()
        }
    }
}

/// `queue`: queue one request; 0 = queued, 1 = busy, `-errno` = refused (message in
/// `xbdev_rs_last_error`). `io_u` is the user value completions give back.
///
/// # Safety
/// `j` as in `job()`. For reads and writes `buf..buf+len` is fio's IO buffer for this request,
/// which fio neither reads, writes nor frees until it has reaped the request's completion.
#[no_mangle]
pub unsafe extern "C" fn xbdev_rs_queue(
    j: *mut c_void,
    file: u32,
    op: u8,
    offset: u64,
    len: u64,
    buf: *mut c_void,
    io_u: *mut c_void,
) -> c_int {
    // SAFETY: per this function's contract.
    let Some(job) = (unsafe { job(j) }) else { return -libc::EBADF };
    let op = match Op::from_code(op) {
        Ok(op) => op,
        Err(e) => {
            job.set_last_error(&e);
            return -e.errno();
        }
    };
    let iov = if op.has_data() {
        let addr = buf as usize;
        let Ok(n) = usize::try_from(len) else {
            let e = EngineError::ForeignBuffer { addr, len };
            job.set_last_error(&e);
            return -e.errno();
        };
        if buf.is_null() || !(job.in_iomem(addr, len) || bdev::dma::is_dma_memory(addr, n)) {
            let e = EngineError::ForeignBuffer { addr, len };
            job.set_last_error(&e);
            return -e.errno();
        }
        // SAFETY: the range is DMA memory (checked above) holding fio's buffer for this
        // request, which fio leaves alone until the completion is reaped (this function's
        // contract), matching IoVec's requirement.
        Some(unsafe { bdev::IoVec::from_raw(buf.cast::<u8>(), n) })
    } else {
        None
    };
    match job.queue(file, op, offset, len, iov, io_u as u64) {
        QueueOutcome::Queued => 0,
        QueueOutcome::Busy => QUEUE_BUSY,
        QueueOutcome::Failed(e) => {
            job.set_last_error(&e);
            -e.errno()
        }
    }
}

/// The last error message of the job, as a C string valid until the job's next call.
///
/// # Safety
/// `j` as in `job()`.
#[no_mangle]
pub unsafe extern "C" fn xbdev_rs_last_error(j: *mut c_void) -> *const c_char {
    static NONE: &CStr = c"no error recorded";
    // SAFETY: per this function's contract.
    let Some(job) = (unsafe { job(j) }) else { return NONE.as_ptr() };
    job.last_error_cstr().as_ptr()
}

/// `commit`: hand queued requests to the reactor.
///
/// # Safety
/// `j` as in `job()`.
#[no_mangle]
pub unsafe extern "C" fn xbdev_rs_commit(j: *mut c_void) -> c_int {
    // SAFETY: per this function's contract.
    let Some(job) = (unsafe { job(j) }) else { return -libc::EBADF };
    job.commit();
    0
}

/// `getevents`: reap between `min` and `max` completions; `timeout_ns` < 0 waits forever.
///
/// # Safety
/// `j` as in `job()`.
#[no_mangle]
pub unsafe extern "C" fn xbdev_rs_getevents(j: *mut c_void, min: u32, max: u32, timeout_ns: i64) -> c_int {
    // SAFETY: per this function's contract.
    let Some(job) = (unsafe { job(j) }) else { return -libc::EBADF };
    let timeout = u64::try_from(timeout_ns).ok().map(Duration::from_nanos);
    let n = job.getevents(min as usize, max as usize, timeout);
    c_int::try_from(n).unwrap_or(c_int::MAX)
}

/// `event`: completion `i` of the last `getevents`: returns its `io_u` and writes the errno
/// (0 = success) and the xbdev status code.
///
/// # Safety
/// `j` as in `job()`; `err` and `status` valid for writes.
#[no_mangle]
pub unsafe extern "C" fn xbdev_rs_event(j: *mut c_void, i: c_int, err: *mut c_int, status: *mut c_int) -> *mut c_void {
    // SAFETY: per this function's contract.
    let Some(job) = (unsafe { job(j) }) else { return std::ptr::null_mut() };
    let Some((user, st)) = usize::try_from(i).ok().and_then(|i| job.event(i)) else {
        return std::ptr::null_mut();
    };
    if !err.is_null() && !status.is_null() {
        // SAFETY: both valid for writes (checked non-null).
        unsafe {
            *err = status_errno(st);
            *status = st as c_int;
        }
    }
    user as *mut c_void
}

/// `iomem_alloc`: the job's IO memory of `len` bytes; null on failure.
///
/// # Safety
/// `j` as in `job()`.
#[no_mangle]
pub unsafe extern "C" fn xbdev_rs_iomem_alloc(j: *mut c_void, len: usize) -> *mut c_void {
    // SAFETY: per this function's contract.
    let Some(job) = (unsafe { job(j) }) else { return std::ptr::null_mut() };
    match job.iomem_alloc(len) {
        Ok(p) => p.cast::<c_void>(),
        Err(e) => {
            log::error!("{}", e.chain());
            job.set_last_error(&e);
            std::ptr::null_mut()
        }
    }
}

/// `iomem_free`.
///
/// # Safety
/// `j` as in `job()`.
#[no_mangle]
pub unsafe extern "C" fn xbdev_rs_iomem_free(j: *mut c_void) {
    // SAFETY: per this function's contract.
    if let Some(job) = unsafe { job(j) } {
        job.iomem_free();
    }
}

/// The library is being unloaded (or the process exits): stop every instance of this
/// process, joining its reactor threads. Called by the shim's library destructor.
#[no_mangle]
pub extern "C" fn xbdev_rs_unload() {
    crate::instances::shutdown_all();
}

/// The lower-case name of an xbdev status code, as a static C string.
#[no_mangle]
pub extern "C" fn xbdev_rs_status_name(status: c_int) -> *const c_char {
    const NAMES: [&CStr; 7] =
        [c"success", c"media_error", c"path_error", c"no_space", c"invalid", c"aborted", c"timeout"];
    let name = usize::try_from(status).ok().and_then(|i| NAMES.get(i)).copied().unwrap_or(c"unknown");
    name.as_ptr()
}

// ---------------------------------------------------------------------------------------------
// OS calls.

/// Run `f` with every signal blocked in the calling thread, so threads it starts (reactors)
/// inherit a mask that leaves fio's signals (SIGINT, SIGTERM, SIGUSR1...) to fio's threads.
pub fn with_signals_blocked<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: sigset_t is plain data; sigfillset initialises it.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: both sets are valid, initialised sigset_t values owned by this frame.
    let ok = unsafe { libc::sigfillset(&mut all) == 0 && libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old) == 0 };
    let r = f();
    if ok {
        // SAFETY: restores the mask saved above for this same thread.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    }
    r
}

fn os_err(what: &'static str) -> EngineError {
    EngineError::ProbeOs { what, source: std::io::Error::last_os_error() }
}

/// Write all of `data` to `fd`, retrying on EINTR.
fn write_all(fd: c_int, mut data: &[u8]) {
    while !data.is_empty() {
        // SAFETY: `data` is a valid slice; `fd` is the pipe's write end, owned by the caller.
        let n = unsafe { libc::write(fd, data.as_ptr().cast::<c_void>(), data.len()) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        data = data.get(n as usize..).unwrap_or(&[]);
    }
}

/// The body of the forked child: run `f`, write its text to `fd`, and leave the process
/// without returning into the parent's code or running its exit handlers.
fn child_main(fd: c_int, f: impl FnOnce() -> String) -> ! {
    // The parent's (fio's) handlers make no sense here: die on the usual signals instead.
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGUSR1, libc::SIGUSR2] {
        // SAFETY: installing the default disposition is always valid.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    let text = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|_| "error the probe process panicked\n".to_string());
    write_all(fd, text.as_bytes());
    // SAFETY: _exit ends the process at once; nothing of the parent's state is run.
    unsafe { libc::_exit(0) }
}

/// Run `f` in a forked child process and return the text it produced, waiting at most
/// `timeout` (the child is killed after that). The calling process starts no thread.
pub fn run_in_child(timeout: Duration, f: impl FnOnce() -> String) -> Result<String, EngineError> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 returns.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(os_err("pipe2"));
    }
    let [rd, wr] = fds;
    // SAFETY: fork has no memory-safety preconditions; the child only runs `child_main`, which
    // never returns.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let e = os_err("fork");
        // SAFETY: closing the two descriptors created above.
        unsafe {
            libc::close(rd);
            libc::close(wr);
        }
        return Err(e);
    }
    if pid == 0 {
        // SAFETY: the child does not read; closing its copy of the read end.
        unsafe { libc::close(rd) };
        child_main(wr, f);
    }
    // SAFETY: the parent does not write; closing its copy of the write end lets reads see EOF.
    unsafe { libc::close(wr) };
    let t0 = Instant::now();
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut timed_out = false;
    loop {
        let left = timeout.saturating_sub(t0.elapsed());
        if left.is_zero() {
            timed_out = true;
            break;
        }
        let mut pfd = libc::pollfd { fd: rd, events: libc::POLLIN, revents: 0 };
        let ms = c_int::try_from(left.as_millis()).unwrap_or(c_int::MAX).max(1);
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        if r == 0 {
            continue;
        }
        // SAFETY: `chunk` is a valid buffer of its length.
        let n = unsafe { libc::read(rd, chunk.as_mut_ptr().cast::<c_void>(), chunk.len()) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        if n == 0 {
            break;
        }
        out.extend_from_slice(chunk.get(..n as usize).unwrap_or(&[]));
    }
    // SAFETY: closing the parent's read end.
    unsafe { libc::close(rd) };
    if timed_out {
        // SAFETY: `pid` is our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let mut status: c_int = 0;
    loop {
        // SAFETY: waiting for our own child; `status` is a valid out-parameter.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r >= 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            break;
        }
    }
    if timed_out {
        return Err(EngineError::Probe(format!("the probe process did not finish within {timeout:?}")));
    }
    if libc::WIFSIGNALED(status) {
        return Err(EngineError::Probe(format!("the probe process died of signal {}", libc::WTERMSIG(status))));
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_text_reaches_the_parent() {
        let t = run_in_child(Duration::from_secs(20), || "size 42\n".to_string()).unwrap();
        assert_eq!(t, "size 42\n");
    }

    #[test]
    fn a_child_that_hangs_is_killed() {
        let e = run_in_child(Duration::from_millis(300), || {
            std::thread::sleep(Duration::from_secs(30));
            String::new()
        })
        .unwrap_err();
        assert!(e.chain().contains("did not finish"), "{}", e.chain());
    }

    #[test]
    fn error_text_is_truncated_and_terminated() {
        let mut buf = [0x55 as c_char; 8];
        write_err(buf.as_mut_ptr(), buf.len(), "0123456789");
        // SAFETY: write_err NUL-terminated the buffer.
        let s = unsafe { CStr::from_ptr(buf.as_ptr()) };
        assert_eq!(s.to_str().unwrap(), "0123456");
    }

    #[test]
    fn status_names_match_bdev() {
        for s in bdev::IoStatus::ALL {
            // SAFETY: xbdev_rs_status_name returns a static C string.
            let n = unsafe { CStr::from_ptr(xbdev_rs_status_name(s as c_int)) };
            assert_eq!(n.to_str().unwrap(), s.name());
        }
        // SAFETY: as above.
        let n = unsafe { CStr::from_ptr(xbdev_rs_status_name(99)) };
        assert_eq!(n.to_str().unwrap(), "unknown");
    }

    #[test]
    fn shim_is_built_for_this_fio() {
        assert_eq!(shim_ioops_version(), 31);
        assert!(shim_accepts_this_process());
        let mut ops: *mut c_void = std::ptr::null_mut();
        // SAFETY: `ops` is a valid out-parameter.
        unsafe { get_ioengine(&mut ops) };
        assert!(!ops.is_null());
    }
}
