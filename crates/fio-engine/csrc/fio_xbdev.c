// SPDX-License-Identifier: MIT OR Apache-2.0
//
// The C side of the xbdev fio engine: fio's `struct ioengine_ops`, its option table, and one
// thin hook per fio callback. Every hook reads what it needs out of fio's structures (which
// change between fio releases, so only C compiled against the installed fio's own headers
// touches them) and calls a Rust function with plain values. All state lives on the Rust side.
//
// Compiled by build.rs against the configured source tree of the installed fio version
// (`-include config-host.h`), never against headers kept in this repository.

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fio.h"
#include "optgroup.h"

#if FIO_IOOPS_VERSION != 31
#error "the xbdev fio shim is written for FIO_IOOPS_VERSION 31 (fio 3.33); review ioengines.h of this fio and update fio_xbdev.c"
#endif

#ifndef XBDEV_FIO_BUILT_VERSION
#error "build.rs must define XBDEV_FIO_BUILT_VERSION (the fio version the headers come from)"
#endif

// ---------------------------------------------------------------------------------------------
// The Rust side (crates/fio-engine/src/ffi.rs). Integer results: 0 = ok, negative = -errno.

/// What Rust needs to know about a job.
struct xb_job_params {
	const char *conf;	/* --xbdev_conf, or NULL */
	const char *cores;	/* --xbdev_cores, or NULL */
	const char *idle;	/* --xbdev_idle, or NULL */
	const char *mode;	/* --xbdev_mode, or NULL */
	const char *job_name;
	unsigned int iodepth;
	unsigned int thread_mode;
	unsigned int spin_us;	/* --xbdev_spin_us */
};

enum xb_op {
	XB_OP_READ = 0,
	XB_OP_WRITE = 1,
	XB_OP_FLUSH = 2,
	XB_OP_UNMAP = 3,
};

/* xbdev_rs_queue results besides 0 and -errno. */
#define XB_QUEUE_BUSY 1

extern int xbdev_rs_file_sizes(const struct xb_job_params *p, const char *const *names,
			       unsigned int n, uint64_t *sizes, char *err, size_t errlen);
extern int xbdev_rs_init(const struct xb_job_params *p, void **job, char *err, size_t errlen);
extern void xbdev_rs_cleanup(void *job);
extern int xbdev_rs_open(void *job, const char *name, int writable, uint32_t *file_id,
			 uint64_t *size, char *err, size_t errlen);
extern int xbdev_rs_close(void *job, uint32_t file_id);
extern int xbdev_rs_queue(void *job, uint32_t file_id, uint8_t op, uint64_t offset,
			  uint64_t len, void *buf, void *io_u);
extern const char *xbdev_rs_last_error(void *job);
extern int xbdev_rs_commit(void *job);
extern int xbdev_rs_getevents(void *job, unsigned int min, unsigned int max, int64_t timeout_ns);
extern void *xbdev_rs_event(void *job, int i, int *err, int *status);
extern void *xbdev_rs_iomem_alloc(void *job, size_t len);
extern void xbdev_rs_iomem_free(void *job);
extern const char *xbdev_rs_status_name(int status);
extern void xbdev_rs_unload(void);

// ---------------------------------------------------------------------------------------------
// fio symbols, resolved from the fio executable when it dlopens the engine. Weak, so that the
// engine's own test binaries (which are not fio) link without them.

extern const char fio_version_string[] __attribute__((weak));
extern ssize_t log_err(const char *format, ...) __attribute__((weak));

static void xb_log_err(const char *what, const char *msg)
{
	if (log_err)
		log_err("xbdev: %s: %s\n", what, msg);
	else
		fprintf(stderr, "xbdev: %s: %s\n", what, msg);
}

// ---------------------------------------------------------------------------------------------
// Engine options (`fio --enghelp=/path/to/libfio_xbdev.so` lists them).

struct xb_options {
	void *pad;	/* fio keeps the thread_data pointer here; must not be an option */
	char *conf;
	char *cores;
	char *idle;
	char *mode;
	unsigned int spin_us;
};

static struct fio_option xb_options[] = {
	{
		.name = "xbdev_conf",
		.lname = "xbdev JSON config file",
		.type = FIO_OPT_STR_STORE,
		.off1 = offsetof(struct xb_options, conf),
		.help = "Path of the xbdev JSON config that creates the devices named by --filename",
		.category = FIO_OPT_C_ENGINE,
		.group = FIO_OPT_G_INVALID,
	},
	{
		.name = "xbdev_cores",
		.lname = "xbdev reactor cores",
		.type = FIO_OPT_STR_STORE,
		.off1 = offsetof(struct xb_options, cores),
		.help = "CPU ids of the reactors, e.g. 1 or 0,1 or 0-3 (overrides the config's reactor.cores)",
		.category = FIO_OPT_C_ENGINE,
		.group = FIO_OPT_G_INVALID,
	},
	{
		.name = "xbdev_idle",
		.lname = "xbdev reactor idle policy",
		.type = FIO_OPT_STR_STORE,
		.off1 = offsetof(struct xb_options, idle),
		.help = "What an idle reactor does (overrides the config's reactor.idle)",
		.posval = {
			{ .ival = "adaptive", .help = "Poll while busy, then sleep until woken" },
			{ .ival = "poll", .help = "Always poll (lowest latency, burns the core)" },
		},
		.category = FIO_OPT_C_ENGINE,
		.group = FIO_OPT_G_INVALID,
	},
	{
		.name = "xbdev_mode",
		.lname = "xbdev IO path",
		.type = FIO_OPT_STR_STORE,
		.off1 = offsetof(struct xb_options, mode),
		.help = "Which thread drives the devices",
		.def = "inline",
		.posval = {
			{ .ival = "inline", .help = "fio's job thread polls its own device channels (default)" },
			{ .ival = "reactor", .help = "IO goes through a queue to the xbdev reactor cores" },
		},
		.category = FIO_OPT_C_ENGINE,
		.group = FIO_OPT_G_INVALID,
	},
	{
		.name = "xbdev_spin_us",
		.lname = "xbdev inline spin time",
		.type = FIO_OPT_INT,
		.off1 = offsetof(struct xb_options, spin_us),
		.help = "Inline path, adaptive idle: microseconds to poll an idle device before sleeping in its wait",
		.def = "20",
		.minval = 0,
		.maxval = 1000000,
		.category = FIO_OPT_C_ENGINE,
		.group = FIO_OPT_G_INVALID,
	},
	{
		.name = NULL,
	},
};

static void xb_params(struct thread_data *td, struct xb_job_params *p)
{
	struct xb_options *o = td->eo;

	memset(p, 0, sizeof(*p));
	p->spin_us = UINT32_MAX;
	if (o) {
		p->spin_us = o->spin_us;
		p->conf = o->conf;
		p->cores = o->cores;
		p->idle = o->idle;
		p->mode = o->mode;
	}
	p->job_name = td->o.name;
	p->iodepth = td->o.iodepth;
	p->thread_mode = td->o.use_thread;
}

// ---------------------------------------------------------------------------------------------
// Hooks.

/* Called by setup_files(), often in fio's main process before it forks the jobs: only sizes. */
static int xb_setup(struct thread_data *td)
{
	struct xb_job_params p;
	struct fio_file *f;
	const char **names;
	uint64_t *sizes;
	char err[512] = "";
	unsigned int i;
	int ret;

	if (!td->files_index)
		return 0;
	names = calloc(td->files_index, sizeof(*names));
	sizes = calloc(td->files_index, sizeof(*sizes));
	if (!names || !sizes) {
		free(names);
		free(sizes);
		td_verror(td, ENOMEM, "xbdev setup");
		return 1;
	}
	for_each_file(td, f, i)
		names[i] = f->file_name;
	xb_params(td, &p);
	ret = xbdev_rs_file_sizes(&p, names, td->files_index, sizes, err, sizeof(err));
	if (ret == 0) {
		for_each_file(td, f, i) {
			f->real_file_size = sizes[i];
			fio_file_set_size_known(f);
		}
	} else {
		xb_log_err("setup", err);
		td_verror(td, -ret, "xbdev setup");
	}
	free(names);
	free(sizes);
	return ret ? 1 : 0;
}

/* Called in the job's own process or thread before anything else. */
static int xb_init(struct thread_data *td)
{
	struct xb_job_params p;
	char err[512] = "";
	void *job = NULL;
	int ret;

	xb_params(td, &p);
	ret = xbdev_rs_init(&p, &job, err, sizeof(err));
	if (ret) {
		xb_log_err("init", err);
		td_verror(td, -ret, "xbdev init");
		return 1;
	}
	td->io_ops_data = job;
	return 0;
}

static void xb_cleanup(struct thread_data *td)
{
	if (td->io_ops_data) {
		xbdev_rs_cleanup(td->io_ops_data);
		td->io_ops_data = NULL;
	}
}

static int xb_open_file(struct thread_data *td, struct fio_file *f)
{
	char err[512] = "";
	uint32_t id = 0;
	uint64_t size = 0;
	int writable = (td->o.td_ddir & (TD_DDIR_WRITE | TD_DDIR_TRIM)) != 0;
	int ret;

	if (!td->io_ops_data) {
		td_verror(td, EINVAL, "xbdev open: engine not initialised");
		return 1;
	}
	ret = xbdev_rs_open(td->io_ops_data, f->file_name, writable, &id, &size, err, sizeof(err));
	if (ret) {
		xb_log_err("open", err);
		td_verror(td, -ret, "xbdev open");
		return 1;
	}
	f->engine_data = (void *)(uintptr_t)(id + 1);
	f->real_file_size = size;
	fio_file_set_size_known(f);
	return 0;
}

static int xb_close_file(struct thread_data *td, struct fio_file *f)
{
	uintptr_t id = (uintptr_t)f->engine_data;
	int ret = 0;

	if (id && td->io_ops_data)
		ret = xbdev_rs_close(td->io_ops_data, (uint32_t)(id - 1));
	f->engine_data = NULL;
	return ret ? 1 : 0;
}

static int xb_get_file_size(struct thread_data *td, struct fio_file *f)
{
	/* Sizes come from ->setup(); this answers for an already known file only. */
	if (fio_file_size_known(f))
		return 0;
	return xb_setup(td);
}

static enum fio_q_status xb_queue(struct thread_data *td, struct io_u *io_u)
{
	uintptr_t id = (uintptr_t)io_u->file->engine_data;
	uint8_t op;
	int ret;

	fio_ro_check(td, io_u);

	switch (io_u->ddir) {
	case DDIR_READ:
		op = XB_OP_READ;
		break;
	case DDIR_WRITE:
		op = XB_OP_WRITE;
		break;
	case DDIR_TRIM:
		op = XB_OP_UNMAP;
		break;
	case DDIR_SYNC:
	case DDIR_DATASYNC:
	case DDIR_SYNC_FILE_RANGE:
		op = XB_OP_FLUSH;
		break;
	default:
		io_u->error = EINVAL;
		return FIO_Q_COMPLETED;
	}
	if (!id) {
		io_u->error = EBADF;
		return FIO_Q_COMPLETED;
	}
	ret = xbdev_rs_queue(td->io_ops_data, (uint32_t)(id - 1), op, io_u->offset,
			     io_u->xfer_buflen, io_u->xfer_buf, io_u);
	if (ret == 0)
		return FIO_Q_QUEUED;
	if (ret == XB_QUEUE_BUSY)
		return FIO_Q_BUSY;
	xb_log_err(io_u->file->file_name, xbdev_rs_last_error(td->io_ops_data));
	io_u->error = -ret;
	io_u->engine_data = NULL;
	io_u->resid = io_u->xfer_buflen;
	return FIO_Q_COMPLETED;
}

static int xb_commit(struct thread_data *td)
{
	return xbdev_rs_commit(td->io_ops_data);
}

static int xb_getevents(struct thread_data *td, unsigned int min, unsigned int max,
			const struct timespec *t)
{
	int64_t timeout_ns = -1;

	if (t)
		timeout_ns = (int64_t)t->tv_sec * 1000000000LL + t->tv_nsec;
	return xbdev_rs_getevents(td->io_ops_data, min, max, timeout_ns);
}

static struct io_u *xb_event(struct thread_data *td, int event)
{
	int err = 0, status = 0;
	struct io_u *io_u = xbdev_rs_event(td->io_ops_data, event, &err, &status);

	if (io_u) {
		io_u->error = err;
		if (err) {
			io_u->resid = io_u->xfer_buflen;
			/* For ->errdetails(); 0 means "rejected before reaching a device". */
			io_u->engine_data = (void *)(uintptr_t)(status + 1);
		}
	}
	return io_u;
}

static char *xb_errdetails(struct io_u *io_u)
{
	uintptr_t code = (uintptr_t)io_u->engine_data;
	char *s = malloc(96);

	if (!s)
		return NULL;
	if (code)
		snprintf(s, 96, "xbdev: the device answered %s", xbdev_rs_status_name((int)code - 1));
	else
		snprintf(s, 96, "xbdev: the request was rejected before reaching the device");
	return s;
}

static int xb_iomem_alloc(struct thread_data *td, size_t total_mem)
{
	void *p;

	if (!td->io_ops_data)
		return 1;
	p = xbdev_rs_iomem_alloc(td->io_ops_data, total_mem);
	if (!p)
		return 1;
	td->orig_buffer = p;
	return 0;
}

static void xb_iomem_free(struct thread_data *td)
{
	if (td->io_ops_data)
		xbdev_rs_iomem_free(td->io_ops_data);
	td->orig_buffer = NULL;
}

static struct ioengine_ops xb_ops = {
	.name = "xbdev",
	.version = FIO_IOOPS_VERSION,
	.flags = FIO_RAWIO | FIO_DISKLESSIO | FIO_NOEXTEND | FIO_NODISKUTIL | FIO_MEMALIGN,
	.setup = xb_setup,
	.init = xb_init,
	.queue = xb_queue,
	.commit = xb_commit,
	.getevents = xb_getevents,
	.event = xb_event,
	.errdetails = xb_errdetails,
	.cleanup = xb_cleanup,
	.open_file = xb_open_file,
	.close_file = xb_close_file,
	.get_file_size = xb_get_file_size,
	.iomem_alloc = xb_iomem_alloc,
	.iomem_free = xb_iomem_free,
	.option_struct_size = sizeof(struct xb_options),
	.options = xb_options,
};

/*
 * The engine's ops, for Rust's exported `get_ioengine`; NULL (with a message) when the running
 * fio is not the version whose headers this shim was compiled against, because its structures
 * may then differ.
 */
struct ioengine_ops *xbdev_fio_shim_ops(void)
{
	if (fio_version_string && strcmp(fio_version_string, XBDEV_FIO_BUILT_VERSION) != 0) {
		fprintf(stderr,
			"xbdev: this engine was built against %s headers but is loaded by %s; "
			"rebuild it (crates/fio-engine/setup-fio.sh, then cargo build)\n",
			XBDEV_FIO_BUILT_VERSION, fio_version_string);
		return NULL;
	}
	return &xb_ops;
}

/*
 * Runs when fio unloads the engine (its last dlclose) or the process exits normally: stop the
 * xbdev instances that thread-mode jobs left running, joining their threads while the
 * library's code is still mapped. Job processes leave with _exit, which skips this; their
 * last job's cleanup has stopped their instance already.
 */
__attribute__((destructor)) static void xb_unload(void)
{
	xbdev_rs_unload();
}

/* fio_ro_check() and friends are static inlines in fio's headers; a few constants for tests. */
unsigned int xbdev_fio_shim_ioops_version(void)
{
	return FIO_IOOPS_VERSION;
}
