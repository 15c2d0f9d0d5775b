// SPDX-License-Identifier: GPL-2.0-only
/*
 * blockio: the C half of sixtree's device layer. Plain C, no Node headers.
 *
 * Owns: opening a store's file or block device with O_DIRECT, its exclusive
 * lock, size and direct-I/O alignment; full-length pread/pwrite; fdatasync;
 * batched submission (io_uring through raw syscalls, or serial preads);
 * aligned heap memory and anonymous mmap regions; crc32c.
 *
 * Conventions:
 *  - Functions that can fail return 0 (or a non-negative value) on success
 *    and a negative errno on failure; nothing here touches errno for the
 *    caller except the pointer-returning allocators (NULL + errno).
 *  - blockio_errno_name() names every code we return, including our one
 *    private code (O_DIRECT refused), whose value blockio_errno_no_direct_io()
 *    returns: callers compare against that function, never a copied number.
 *  - Memory: every pointer from blockio_alloc_aligned() is released by exactly
 *    one blockio_free_aligned(), given the same size; every region from
 *    blockio_mmap_anon() by exactly one blockio_munmap() (blockio_mmap_retire()
 *    only drops its pages and keeps the address range reserved). The *_live() counters make leaks
 *    and double frees visible to tests.
 *  - Everything exported is prefixed blockio_ and has default visibility, so
 *    koffi can call it from the same shared object the N-API addon lives in.
 */
#ifndef SIXTREE_BLOCKIO_H
#define SIXTREE_BLOCKIO_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BLOCKIO_EXPORT __attribute__((visibility("default")))

/* ---- constants callers must not copy ---------------------------------- */

/* Private error code returned (negated) when the file system refuses O_DIRECT. */
BLOCKIO_EXPORT int blockio_errno_no_direct_io(void);
/* Error code returned (negated) when a read ends early at end of device. */
BLOCKIO_EXPORT int blockio_errno_short_read(void);
/* Linux sector size: floor of every alignment, unit of torn writes. */
BLOCKIO_EXPORT int blockio_sector_bytes(void);
/* flock(2) operation used for the store lock (LOCK_EX | LOCK_NB). */
BLOCKIO_EXPORT int blockio_lock_flags(void);
/* "EIO", "ENOENT", ... for a (positive or negative) code we returned. */
BLOCKIO_EXPORT const char *blockio_errno_name(int err);

/* ---- devices ------------------------------------------------------------ */

/*
 * Open path read-only or read-write with O_CLOEXEC, then switch on O_DIRECT.
 * create: create a missing regular file (read-write only). A file we created
 * is unlinked again if the open fails afterwards. Returns fd or -errno;
 * -blockio_errno_no_direct_io() when the file system refuses O_DIRECT;
 * -EISDIR / -ENODEV when path is neither a regular file nor a block device;
 * -EROFS when a read-write open names a read-only block device (BLKROGET:
 * the kernel lets such an open through and fails each write with EPERM).
 */
BLOCKIO_EXPORT int blockio_open(const char *path, int writable, int create);
BLOCKIO_EXPORT int blockio_close(int fd);
/* Exclusive, non-blocking flock: -EWOULDBLOCK when another open holds it. */
BLOCKIO_EXPORT int blockio_lock(int fd);
/* Grow a regular file to size_bytes (fallocate, else ftruncate); never shrinks. */
BLOCKIO_EXPORT int blockio_extend(int fd, int64_t size_bytes);
/* "file", "block" or "other"; NULL if fstat fails. */
BLOCKIO_EXPORT const char *blockio_fd_kind(int fd);
/* Bytes: BLKGETSIZE64 for block devices, st_size for files; or -errno. */
BLOCKIO_EXPORT int64_t blockio_size_bytes(int fd);
/*
 * Direct-I/O alignment for buffer address, offset and length: BLKSSZGET for
 * block devices; statx(STATX_DIOALIGN) where the kernel reports it, else the
 * file system block size; never below blockio_sector_bytes(). Or -errno.
 */
BLOCKIO_EXPORT int64_t blockio_align_bytes(int fd);

/* ---- I/O ---------------------------------------------------------------- */

/* Transfer all len bytes, looping over short transfers and EINTR. 0 or -errno. */
BLOCKIO_EXPORT int64_t blockio_pread_full(int fd, void *buf, uint64_t len, int64_t offset);
BLOCKIO_EXPORT int64_t blockio_pwrite_full(int fd, const void *buf, uint64_t len, int64_t offset);
BLOCKIO_EXPORT int blockio_fdatasync(int fd);
/*
 * A durable write in one call (the journal's entry write): pwrite_full, then,
 * if it succeeded, fdatasync. 0, or -errno of the step that failed, with
 * BLOCKIO_STEP_FLUSH or'ed into the errno when fdatasync failed (the write
 * completed, its durability is unknown). One thread hand-off instead of two.
 */
#define BLOCKIO_STEP_FLUSH 0x10000
BLOCKIO_EXPORT int64_t blockio_pwrite_datasync(int fd, const void *buf, uint64_t len, int64_t offset);
BLOCKIO_EXPORT int blockio_step_flush_bit(void);

/*
 * Batched submission of nr operations: op i reads (is_write[i] == 0) or
 * writes lens[i] bytes at offsets[i] from/to the buffer at address addrs[i].
 * Every operation runs to completion; results[i] = 0 or -errno. Returns the
 * number of failed operations, or -errno if the batch could not run at all
 * (then no operation is in flight and results are undefined).
 * No ordering between operations of one batch.
 *
 * _uring: io_uring via raw syscalls, up to a ring's depth in flight; -ENOSYS
 * when blockio_uring_supported() is 0. _serial: one operation after another.
 */
BLOCKIO_EXPORT int blockio_batch_uring(int fd, uint32_t nr, const uint8_t *is_write, const uint64_t *addrs,
				       const uint32_t *lens, const int64_t *offsets, int32_t *results);
BLOCKIO_EXPORT int blockio_batch_serial(int fd, uint32_t nr, const uint8_t *is_write, const uint64_t *addrs,
					const uint32_t *lens, const int64_t *offsets, int32_t *results);
/* 1 if io_uring with READ/WRITE opcodes works here (probed once), else 0. */
BLOCKIO_EXPORT int blockio_uring_supported(void);
/* Operations a ring keeps in flight at most (its submission queue depth). */
BLOCKIO_EXPORT int blockio_uring_depth(void);

/*
 * Event rings: an io_uring for single asynchronous operations, owned by one
 * thread, whose completions are signalled on an eventfd (the caller polls
 * it readable, then reaps). At most blockio_uring_depth() operations in
 * flight per ring.
 *
 * _new: NULL + errno (ENOSYS when io_uring is not usable here).
 * _queue: add one read or write of len bytes at offset into/from buf; tag
 *   comes back with its completion. 0, or -EBUSY when the ring is full
 *   (-EINVAL for len 0). Queued operations reach the kernel at _submit.
 * _submit: hand every queued operation to the kernel (one system call).
 *   Those it refuses complete with its error at the next reap; returns how
 *   many did.
 * _reap: clear the eventfd, then hand back up to max completed operations:
 *   tags[i], results[i] = 0 (whole length transferred) or -errno. Returns the
 *   number handed back. Left-over completions signal the eventfd again; the
 *   rest of a short transfer is resubmitted at once.
 * _wait: block until at least one operation can be reaped (returns at once
 *   when one can, or when none is in flight); 0, or -errno if the kernel
 *   refuses to wait. For teardown, which reaps the tags itself before _free.
 * _free: wait for every operation in flight (their tags are dropped), then
 *   release the ring and the eventfd.
 */
struct blockio_aring;
BLOCKIO_EXPORT struct blockio_aring *blockio_aring_new(void);
BLOCKIO_EXPORT int blockio_aring_eventfd(const struct blockio_aring *a);
/* Operations queued, in flight or completed but not yet reaped. */
BLOCKIO_EXPORT uint32_t blockio_aring_inflight(const struct blockio_aring *a);
/* Operations queued and not yet submitted. */
BLOCKIO_EXPORT uint32_t blockio_aring_queued(const struct blockio_aring *a);
BLOCKIO_EXPORT int blockio_aring_queue(struct blockio_aring *a, int fd, int is_write, void *buf, uint32_t len,
				       int64_t offset, uint64_t tag);
BLOCKIO_EXPORT uint32_t blockio_aring_submit(struct blockio_aring *a);
BLOCKIO_EXPORT int blockio_aring_reap(struct blockio_aring *a, uint64_t *tags, int32_t *results, uint32_t max);
BLOCKIO_EXPORT int blockio_aring_wait(struct blockio_aring *a);
BLOCKIO_EXPORT void blockio_aring_free(struct blockio_aring *a);

/* ---- memory ------------------------------------------------------------- */

/* Zeroed memory aligned to align (a power of two); NULL + errno on failure.
 * Freed with the size it was allocated with. */
BLOCKIO_EXPORT void *blockio_alloc_aligned(uint64_t size_bytes, uint64_t align_bytes);
BLOCKIO_EXPORT void blockio_free_aligned(void *p, uint64_t size_bytes);
/* Zeroed private anonymous mapping (page aligned, populated); NULL + errno on failure. */
BLOCKIO_EXPORT void *blockio_mmap_anon(uint64_t size_bytes);
/* Drop a mapping's pages and make it PROT_NONE; the range stays reserved. */
BLOCKIO_EXPORT int blockio_mmap_retire(void *p, uint64_t size_bytes);
BLOCKIO_EXPORT int blockio_munmap(void *p, uint64_t size_bytes);
BLOCKIO_EXPORT int blockio_page_bytes(void);
BLOCKIO_EXPORT int64_t blockio_aligned_live(void);
BLOCKIO_EXPORT int64_t blockio_mmap_live(void);
/* The numeric address of p (koffi uses it to pass buffer addresses in batches). */
BLOCKIO_EXPORT uint64_t blockio_address(const void *p);
/*
 * Copy nr spans of src, one after another, to dst: span i is spans[2i]
 * bytes in, spans[2i + 1] bytes long. The caller guarantees the bounds and
 * that dst does not overlap a span. Returns the bytes copied.
 */
BLOCKIO_EXPORT uint64_t blockio_gather(void *dst, const void *src, const uint32_t *spans, uint32_t nr);

/* ---- checksums ---------------------------------------------------------- */

/*
 * CRC-32C (Castagnoli, RFC 3720). seed is a previous result, so
 * crc32c(b, crc32c(a, 0)) == crc32c(a || b, 0).
 */
BLOCKIO_EXPORT uint32_t blockio_crc32c(uint32_t seed, const void *buf, uint64_t len);
/* "sse4.2" or "table": the implementation picked at load time. */
BLOCKIO_EXPORT const char *blockio_crc32c_impl(void);

#ifdef __cplusplus
}
#endif

#endif /* SIXTREE_BLOCKIO_H */
