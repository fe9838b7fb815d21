//! The C ABI (seed section 2): `xbdev_init`, `xbdev_open`, `xbdev_read`, ... declared in
//! `include/xbdev.h`. Functions return 0 (or a byte count) on success and a negative errno on
//! failure; `xbdev_last_error()` gives the message of the calling thread's last failure.
//! A panic never crosses the boundary (the library is built with `panic = "abort"` in release).

use crate::config::{BaseDevice, Config};
use crate::error::XbdevError;
use crate::global;
use crate::queue::IoQueue;
use bdev::backends::aio::AioParams;
use bdev::backends::malloc::MallocParams;
use bdev::{DmaBuf, IoStatus, IoType, IoVec};
use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::time::Duration;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
    static AIO: RefCell<Option<CAio>> = const { RefCell::new(None) };
}

fn errno_of(e: &XbdevError) -> c_int {
    use XbdevError::*;
    match e {
        AlreadyInitialized => libc::EALREADY,
        NotInitialized => libc::ENODEV,
        UnknownDevice(_) => libc::ENOENT,
        BadHandle(_) | Closed(_) => libc::EBADF,
        ReadOnly(_) => libc::EROFS,
        OutOfRange { .. } => libc::ERANGE,
        QueueFull(_) => libc::EAGAIN,
        Timeout => libc::ETIMEDOUT,
        Io { status: IoStatus::NoSpace, .. } => libc::ENOSPC,
        Io { .. } => libc::EIO,
        File { .. } => libc::EIO,
        _ => libc::EINVAL,
    }
}

fn fail(e: XbdevError) -> c_int {
    let msg = CString::new(e.to_string().replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|l| *l.borrow_mut() = msg);
    -errno_of(&e)
}

fn ret(r: Result<(), XbdevError>) -> c_int {
    match r {
        Ok(()) => 0,
        Err(e) => fail(e),
    }
}

fn cstr<'a>(p: *const c_char, what: &str) -> Result<&'a str, XbdevError> {
    if p.is_null() {
        return Err(XbdevError::InvalidBuffer(format!("{what} is NULL")));
    }
    // SAFETY: the C caller passes a NUL-terminated string that outlives the call.
    unsafe { CStr::from_ptr(p) }.to_str().map_err(|_| XbdevError::InvalidBuffer(format!("{what} is not UTF-8")))
}

/// Message of the calling thread's last failure (empty if none). Valid until the next failure.
#[no_mangle]
pub extern "C" fn xbdev_last_error() -> *const c_char {
    LAST_ERROR.with(|l| l.borrow().as_ptr())
}

/// Start xbdev with one reactor on core 0 and no devices.
#[no_mangle]
pub extern "C" fn xbdev_init() -> c_int {
    let mut cfg = Config::default();
    cfg.reactor.pin = false;
    ret(global::init(&cfg))
}

/// Start xbdev from a JSON config file.
#[no_mangle]
pub extern "C" fn xbdev_init_json(json_file: *const c_char) -> c_int {
    ret(cstr(json_file, "json_file").and_then(|p| Ok(Config::from_file(p)?)).and_then(|c| global::init(&c)))
}

/// Create the devices of a JSON config file in the running instance (its reactor section is
/// ignored: reactors are fixed at init).
#[no_mangle]
pub extern "C" fn xbdev_parse_config(json_file: *const c_char) -> c_int {
    ret((|| {
        let cfg = Config::from_file(cstr(json_file, "json_file")?)?;
        let xb = global::instance()?;
        for d in &cfg.base_devices {
            xb.create_base_device(d)?;
        }
        Ok(())
    })())
}

/// Write the running configuration to a file.
#[no_mangle]
pub extern "C" fn xbdev_save_config(json_file: *const c_char) -> c_int {
    ret(cstr(json_file, "json_file").and_then(global::save_config))
}

/// Stop xbdev.
#[no_mangle]
pub extern "C" fn xbdev_fini() -> c_int {
    AIO.with(|a| a.borrow_mut().take());
    ret(global::fini())
}

/// Add an aio bdev over a file or block device (seed `xbdev_config_aio`).
#[no_mangle]
pub extern "C" fn xbdev_config_aio(filename: *const c_char, name: *const c_char) -> c_int {
    ret((|| {
        let p = AioParams::new(cstr(name, "name")?, cstr(filename, "filename")?);
        global::instance()?.create_base_device(&BaseDevice::Aio(p))
    })())
}

/// Add a RAM disk of `size_mb` MiB with `block_size` (512 or 4096) byte blocks.
#[no_mangle]
pub extern "C" fn xbdev_config_malloc(name: *const c_char, size_mb: u64, block_size: u32) -> c_int {
    ret((|| {
        let bs = block_size.max(1) as u64;
        let p = MallocParams {
            name: cstr(name, "name")?.to_string(),
            num_blocks: size_mb.saturating_mul(1 << 20) / bs,
            block_size,
        };
        global::instance()?.create_base_device(&BaseDevice::Malloc(p))
    })())
}

/// Open a device read-write; returns a descriptor (>= 0).
#[no_mangle]
pub extern "C" fn xbdev_open(name: *const c_char) -> c_int {
    match cstr(name, "name").and_then(global::open) {
        Ok(fd) => fd,
        Err(e) => fail(e),
    }
}

/// Close a descriptor.
#[no_mangle]
pub extern "C" fn xbdev_close(fd: c_int) -> c_int {
    ret(global::close(fd))
}

fn data_io(fd: c_int, buf: *mut c_void, count: usize, offset: u64, write: bool) -> isize {
    if buf.is_null() && count > 0 {
        return fail(XbdevError::InvalidBuffer("buf is NULL".into())) as isize;
    }
    let r = if write {
        // SAFETY: the C caller passes count readable bytes at buf for the call's duration.
        let s = unsafe { std::slice::from_raw_parts(buf.cast::<u8>().cast_const(), count) };
        global::write(fd, s, offset)
    } else {
        // SAFETY: the C caller passes count writable bytes at buf for the call's duration.
        let s = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), count) };
        global::read(fd, s, offset)
    };
    match r {
        Ok(n) => n as isize,
        Err(e) => fail(e) as isize,
    }
}

/// Read `count` bytes at `offset` (multiples of the block size) into `buf`.
#[no_mangle]
pub extern "C" fn xbdev_read(fd: c_int, buf: *mut c_void, count: usize, offset: u64) -> isize {
    data_io(fd, buf, count, offset, false)
}

/// Write `count` bytes from `buf` at `offset` (multiples of the block size).
#[no_mangle]
pub extern "C" fn xbdev_write(fd: c_int, buf: *const c_void, count: usize, offset: u64) -> isize {
    data_io(fd, buf.cast_mut(), count, offset, true)
}

/// Make completed writes durable.
#[no_mangle]
pub extern "C" fn xbdev_flush(fd: c_int) -> c_int {
    ret(global::flush(fd))
}

/// Deallocate a byte range.
#[no_mangle]
pub extern "C" fn xbdev_unmap(fd: c_int, offset: u64, len: u64) -> c_int {
    ret(global::unmap(fd, offset, len))
}

/// Allocate a 4 KiB-aligned DMA buffer (zero-copy for every backend).
#[no_mangle]
pub extern "C" fn xbdev_dma_buffer_alloc(size: usize) -> *mut c_void {
    match DmaBuf::alloc(size) {
        Ok(b) => {
            let p = b.as_ptr();
            register_dma(b);
            p.cast()
        }
        Err(e) => {
            fail(XbdevError::Bdev(e.into()));
            std::ptr::null_mut()
        }
    }
}

static DMA_TABLE: std::sync::Mutex<Vec<DmaBuf>> = std::sync::Mutex::new(Vec::new());

fn register_dma(b: DmaBuf) {
    DMA_TABLE.lock().unwrap_or_else(|e| e.into_inner()).push(b);
}

/// Free a buffer from `xbdev_dma_buffer_alloc` (NULL is ignored).
#[no_mangle]
pub extern "C" fn xbdev_dma_buffer_free(buf: *mut c_void) {
    if buf.is_null() {
        return;
    }
    let mut t = DMA_TABLE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(i) = t.iter().position(|b| b.as_ptr() == buf.cast()) {
        t.swap_remove(i);
    }
}

/// Completion callback: `status` is 0 or a negative errno.
pub type XbdevIoCb = Option<extern "C" fn(cb_arg: *mut c_void, status: c_int)>;

struct PendingC {
    cb: XbdevIoCb,
    arg: *mut c_void,
    /// For reads bounced through a DMA buffer: where the data goes.
    copy_out: Option<(*mut u8, usize)>,
}

struct CAio {
    q: IoQueue,
    pending: Vec<Option<PendingC>>,
    free: Vec<usize>,
}

fn status_errno(s: IoStatus) -> c_int {
    match s {
        IoStatus::Success => 0,
        IoStatus::NoSpace => -libc::ENOSPC,
        IoStatus::Invalid => -libc::EINVAL,
        IoStatus::Timeout => -libc::ETIMEDOUT,
        IoStatus::Aborted => -libc::ECANCELED,
        IoStatus::PathError => -libc::ENOLINK,
        IoStatus::MediaError => -libc::EIO,
    }
}

fn aio_queue(
    fd: c_int,
    op: IoType,
    buf: *mut c_void,
    count: usize,
    offset: u64,
    cb: XbdevIoCb,
    arg: *mut c_void,
) -> Result<(), XbdevError> {
    let h = global::handle(fd)?;
    let xb = global::instance()?;
    AIO.with(|a| {
        let mut a = a.borrow_mut();
        if a.is_none() {
            *a = Some(CAio { q: xb.io_queue(1024)?, pending: Vec::new(), free: Vec::new() });
        }
        let Some(st) = a.as_mut() else { return Err(XbdevError::NotInitialized) };
        let id = st.free.pop().unwrap_or_else(|| {
            st.pending.push(None);
            st.pending.len() - 1
        });
        let mut copy_out = None;
        let r = if !op.has_data() {
            st.q.queue_io(&h, op, offset, count as u64, None, id as u64)
        } else if buf.is_null() {
            Err(XbdevError::InvalidBuffer("buf is NULL".into()))
        } else if bdev::dma::is_dma_memory(buf as usize, count) {
            // SAFETY: the C contract of xbdev_aio_*: buf stays valid and untouched until the
            // callback runs.
            let iov = unsafe { IoVec::from_raw(buf.cast(), count) };
            st.q.queue_io(&h, op, offset, count as u64, Some(iov), id as u64)
        } else {
            let mut b = DmaBuf::alloc(count.max(1)).map_err(bdev::BdevError::from)?;
            if op == IoType::Write {
                // SAFETY: buf holds count readable bytes (C contract).
                b.as_mut_slice().copy_from_slice(unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), count) });
                st.q.write(&h, b, offset, id as u64).map_err(|e| e.0)
            } else {
                copy_out = Some((buf.cast::<u8>(), count));
                st.q.read(&h, b, offset, id as u64).map_err(|e| e.0)
            }
        };
        match r {
            Ok(()) => {
                st.pending[id] = Some(PendingC { cb, arg, copy_out });
                Ok(())
            }
            Err(e) => {
                st.free.push(id);
                Err(e)
            }
        }
    })
}

/// Queue an asynchronous read; `cb(cb_arg, status)` runs from `xbdev_poll_completions` on
/// this thread. `buf` must stay valid until then.
#[no_mangle]
pub extern "C" fn xbdev_aio_read(
    fd: c_int,
    buf: *mut c_void,
    count: usize,
    offset: u64,
    cb: XbdevIoCb,
    cb_arg: *mut c_void,
) -> c_int {
    ret(aio_queue(fd, IoType::Read, buf, count, offset, cb, cb_arg))
}

/// Queue an asynchronous write (see `xbdev_aio_read`).
#[no_mangle]
pub extern "C" fn xbdev_aio_write(
    fd: c_int,
    buf: *const c_void,
    count: usize,
    offset: u64,
    cb: XbdevIoCb,
    cb_arg: *mut c_void,
) -> c_int {
    ret(aio_queue(fd, IoType::Write, buf.cast_mut(), count, offset, cb, cb_arg))
}

/// Hand this thread's queued asynchronous requests to the reactor; returns how many.
#[no_mangle]
pub extern "C" fn xbdev_aio_submit() -> c_int {
    AIO.with(|a| a.borrow_mut().as_mut().map(|s| s.q.submit() as c_int).unwrap_or(0))
}

/// Run callbacks of up to `max` finished requests, waiting up to `timeout_us` for the first;
/// returns how many ran.
#[no_mangle]
pub extern "C" fn xbdev_poll_completions(max: u32, timeout_us: u64) -> c_int {
    let done: Vec<(PendingC, IoStatus, Option<DmaBuf>)> = AIO.with(|a| {
        let mut a = a.borrow_mut();
        let Some(st) = a.as_mut() else { return Vec::new() };
        let mut out = Vec::new();
        let CAio { q, pending, free } = st;
        q.poll(max as usize, Duration::from_micros(timeout_us), &mut |c| {
            if let Some(p) = pending.get_mut(c.user as usize).and_then(Option::take) {
                free.push(c.user as usize);
                out.push((p, c.status, c.buf));
            }
        });
        out
    });
    let n = done.len();
    for (p, status, buf) in done {
        if let (Some((dst, len)), Some(b), IoStatus::Success) = (p.copy_out, &buf, status) {
            // SAFETY: dst holds len writable bytes until the callback (C contract).
            unsafe { std::slice::from_raw_parts_mut(dst, len) }.copy_from_slice(&b.as_slice()[..len]);
        }
        if let Some(cb) = p.cb {
            cb(p.arg, status_errno(status));
        }
    }
    n as c_int
}
