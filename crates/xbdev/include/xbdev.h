/* xbdev C API. Link with -lxbdev (libxbdev.so or libxbdev.a from crates/xbdev).
 * Every function returns 0 (or a byte count / descriptor) on success and a negative errno on
 * failure; xbdev_last_error() returns the calling thread's last failure message. */
#ifndef XBDEV_H
#define XBDEV_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Lifecycle. xbdev_init: one reactor on core 0, no devices. */
int xbdev_init(void);
int xbdev_init_json(const char *json_file);
int xbdev_fini(void);
const char *xbdev_last_error(void);

/* Configuration: devices from a JSON file (reactor section ignored after init), or one by one. */
int xbdev_parse_config(const char *json_file);
int xbdev_save_config(const char *json_file);
int xbdev_config_aio(const char *filename, const char *name);
int xbdev_config_malloc(const char *name, uint64_t size_mb, uint32_t block_size);

/* Synchronous IO. Offsets and counts are multiples of the device's block size. */
int xbdev_open(const char *bdev_name);
int xbdev_close(int fd);
ssize_t xbdev_read(int fd, void *buf, size_t count, uint64_t offset);
ssize_t xbdev_write(int fd, const void *buf, size_t count, uint64_t offset);
int xbdev_flush(int fd);
int xbdev_unmap(int fd, uint64_t offset, uint64_t len);

/* DMA buffers: zero-copy for every backend (other memory is bounced). */
void *xbdev_dma_buffer_alloc(size_t size);
void xbdev_dma_buffer_free(void *buf);

/* Asynchronous IO, per thread: queue, submit the batch, poll completions.
 * buf must stay valid and untouched until cb(cb_arg, status) runs; status is 0 or -errno
 * (-EIO media error, -ENOLINK path error, -ETIMEDOUT, -ECANCELED, -ENOSPC, -EINVAL). */
typedef void (*xbdev_io_cb)(void *cb_arg, int status);
int xbdev_aio_read(int fd, void *buf, size_t count, uint64_t offset, xbdev_io_cb cb, void *cb_arg);
int xbdev_aio_write(int fd, const void *buf, size_t count, uint64_t offset, xbdev_io_cb cb, void *cb_arg);
int xbdev_aio_submit(void);
int xbdev_poll_completions(uint32_t max, uint64_t timeout_us);

#ifdef __cplusplus
}
#endif
#endif
