/* Exercises the C ABI as a C program would. Exit 0 on success; prints what failed. */
#include "xbdev.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond) do { if (!(cond)) { fprintf(stderr, "FAIL %s:%d: %s (last error: %s)\n", \
    __FILE__, __LINE__, #cond, xbdev_last_error()); return 1; } } while (0)

static int done_count;
static int last_status = 12345;
static void on_done(void *arg, int status) { (*(int *)arg)++; last_status = status; done_count++; }

int main(void) {
    CHECK(xbdev_open("m0") == -ENODEV);
    CHECK(xbdev_init() == 0);
    CHECK(xbdev_init() == -EALREADY);
    CHECK(xbdev_config_malloc("m0", 8, 512) == 0);
    int fd = xbdev_open("m0");
    CHECK(fd >= 0);
    CHECK(xbdev_open("nope") == -ENOENT);
    CHECK(strstr(xbdev_last_error(), "unknown device 'nope'") != NULL);

    char plain[4096];
    memset(plain, 0x5a, sizeof plain);
    CHECK(xbdev_write(fd, plain, sizeof plain, 8192) == 4096);
    char *dma = xbdev_dma_buffer_alloc(4096);
    CHECK(dma != NULL);
    CHECK(xbdev_read(fd, dma, 4096, 8192) == 4096);
    CHECK(memcmp(dma, plain, 4096) == 0);
    CHECK(xbdev_read(fd, dma, 100, 0) == -EINVAL);
    CHECK(strstr(xbdev_last_error(), "length 100 is not a multiple of the block size 512") != NULL);
    CHECK(xbdev_read(fd, dma, 4096, (8u << 20)) == -ERANGE);
    CHECK(xbdev_flush(fd) == 0);

    /* async: one DMA buffer (zero copy) and one plain buffer (bounced) */
    int a = 0, b = 0;
    memset(dma, 0x11, 4096);
    CHECK(xbdev_aio_write(fd, dma, 4096, 0, on_done, &a) == 0);
    char plain2[512];
    memset(plain2, 0x22, sizeof plain2);
    CHECK(xbdev_aio_write(fd, plain2, 512, 4096, on_done, &b) == 0);
    CHECK(xbdev_aio_submit() == 2);
    while (done_count < 2) CHECK(xbdev_poll_completions(8, 1000000) >= 0);
    CHECK(a == 1 && b == 1 && last_status == 0);
    char back[512];
    memset(back, 0, sizeof back);
    CHECK(xbdev_aio_read(fd, back, 512, 4096, on_done, &b) == 0);
    xbdev_aio_submit();
    while (done_count < 3) xbdev_poll_completions(8, 1000000);
    CHECK(memcmp(back, plain2, 512) == 0);

    CHECK(xbdev_close(fd) == 0);
    CHECK(xbdev_close(fd) == -EBADF);
    xbdev_dma_buffer_free(dma);
    CHECK(xbdev_fini() == 0);
    CHECK(xbdev_fini() == -ENODEV);
    printf("c abi test ok\n");
    return 0;
}
