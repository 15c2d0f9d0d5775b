// SPDX-License-Identifier: GPL-2.0-only
/*
 * blockio.c: see blockio.h for what this file owns and its conventions.
 *
 * Notes:
 *  - O_DIRECT is switched on with fcntl(F_SETFL) right after open(). The
 *    kernel refuses it there with EINVAL exactly when the file system cannot
 *    do direct I/O, which tells that case apart from every other EINVAL and
 *    lets us unlink a file we had just created.
 *  - A direct-I/O transfer that ends early at end of file may end on an
 *    unaligned byte; continuing from there would fail with EINVAL, so an
 *    early end is reported as a short read (ENODATA) at once.
 *  - io_uring rings are set up with raw syscalls (no liburing). A ring is not
 *    thread safe, so rings live in a small pool: a batch takes one (or sets a
 *    new one up), keeps up to BLOCKIO_RING_DEPTH operations in flight,
 *    resubmits the rest of short transfers and EINTR/EAGAIN completions, and
 *    gives the ring back. Rings beyond BLOCKIO_RING_POOL_MAX are torn down.
 *    Pooled rings live until the process exits.
 *  - An event ring (blockio_aring_*) belongs to one thread (the Node event
 *    loop of one environment): single operations go in one at a time, the
 *    kernel signals completions on an eventfd the caller polls, and
 *    blockio_aring_reap() hands them back by tag. Slots hold each
 *    operation's progress, so short transfers and EINTR/EAGAIN completions
 *    are resubmitted for the rest, as in a batch.
 *  - crc32c picks SSE4.2 (_mm_crc32_u64) when the CPU has it, detected at
 *    load time with __builtin_cpu_supports; the rest of the file is built for
 *    the baseline ISA so the object still runs on CPUs without SSE4.2.
 */
#define _GNU_SOURCE
#include "blockio.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/io_uring.h>
#include <nmmintrin.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#define BLOCKIO_SECTOR_BYTES 512
/* Outside the kernel's errno range (MAX_ERRNO is 4095). */
#define BLOCKIO_ENODIRECT 10001
#define BLOCKIO_ESHORT_READ ENODATA
#define BLOCKIO_RING_DEPTH 128
#define BLOCKIO_RING_POOL_MAX 8

int blockio_errno_no_direct_io(void) { return BLOCKIO_ENODIRECT; }
int blockio_errno_short_read(void) { return BLOCKIO_ESHORT_READ; }
int blockio_sector_bytes(void) { return BLOCKIO_SECTOR_BYTES; }
int blockio_lock_flags(void) { return LOCK_EX | LOCK_NB; }

const char *blockio_errno_name(int err)
{
	if (err < 0)
		err = -err;
	if (err == BLOCKIO_ENODIRECT)
		return "ENODIRECT";
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
	const char *name = strerrorname_np(err);
	if (name)
		return name;
#else
	switch (err) {
	case EIO: return "EIO";
	case ENOENT: return "ENOENT";
	case EINVAL: return "EINVAL";
	case EAGAIN: return "EAGAIN";
	case ENODATA: return "ENODATA";
	case ENOSPC: return "ENOSPC";
	case EBADF: return "EBADF";
	case EISDIR: return "EISDIR";
	case ENODEV: return "ENODEV";
	case EACCES: return "EACCES";
	case EROFS: return "EROFS";
	case ENOMEM: return "ENOMEM";
	case ENOSYS: return "ENOSYS";
	case EBUSY: return "EBUSY";
	}
#endif
	return "EUNKNOWN";
}

/* ---- devices ------------------------------------------------------------ */

int blockio_open(const char *path, int writable, int create)
{
	int flags = (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC;
	int created = 0, fd, err;
	struct stat st;

	if (!path)
		return -EINVAL;

	do {
		if (create && writable) {
			fd = open(path, flags | O_CREAT | O_EXCL, 0644);
			if (fd >= 0)
				created = 1;
			else if (errno == EEXIST)
				fd = open(path, flags);
		} else {
			fd = open(path, flags);
		}
	} while (fd < 0 && errno == EINTR);
	if (fd < 0)
		return -errno;

	if (fstat(fd, &st) < 0) {
		err = -errno;
		goto fail;
	}
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
		err = S_ISDIR(st.st_mode) ? -EISDIR : -ENODEV;
		goto fail;
	}
	if (writable && S_ISBLK(st.st_mode)) {
		int ro = 0;
		if (ioctl(fd, BLKROGET, &ro) == 0 && ro) {
			err = -EROFS;
			goto fail;
		}
	}

	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_DIRECT) < 0) {
		err = errno == EINVAL ? -BLOCKIO_ENODIRECT : -errno;
		goto fail;
	}
	return fd;
fail:
	close(fd);
	if (created)
		unlink(path);
	return err;
}

int blockio_close(int fd)
{
	/* Linux releases the descriptor even when close reports EINTR: never retry. */
	return close(fd) < 0 && errno != EINTR ? -errno : 0;
}

int blockio_lock(int fd)
{
	int r;

	do {
		r = flock(fd, LOCK_EX | LOCK_NB);
	} while (r < 0 && errno == EINTR);
	return r < 0 ? -errno : 0;
}

int blockio_extend(int fd, int64_t size_bytes)
{
	struct stat st;

	if (size_bytes < 0)
		return -EINVAL;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -ENODEV;
	if (st.st_size >= size_bytes)
		return 0;
	/* posix_fallocate semantics without glibc's write-a-byte-per-block emulation. */
	if (fallocate(fd, 0, 0, size_bytes) == 0)
		return 0;
	if (errno != EOPNOTSUPP && errno != ENOSYS)
		return -errno;
	return ftruncate(fd, size_bytes) < 0 ? -errno : 0;
}

const char *blockio_fd_kind(int fd)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return NULL;
	return S_ISREG(st.st_mode) ? "file" : S_ISBLK(st.st_mode) ? "block" : "other";
}

int64_t blockio_size_bytes(int fd)
{
	struct stat st;
	uint64_t size;

	if (fstat(fd, &st) < 0)
		return -errno;
	if (S_ISBLK(st.st_mode)) {
		if (ioctl(fd, BLKGETSIZE64, &size) < 0)
			return -errno;
		return (int64_t)size;
	}
	return st.st_size;
}

static int64_t align_max(int64_t a, int64_t b) { return a > b ? a : b; }

int64_t blockio_align_bytes(int fd)
{
	struct stat st;
	int64_t align = 0;

	if (fstat(fd, &st) < 0)
		return -errno;
	if (S_ISBLK(st.st_mode)) {
		int ssz;
		if (ioctl(fd, BLKSSZGET, &ssz) < 0)
			return -errno;
		return align_max(ssz, BLOCKIO_SECTOR_BYTES);
	}
#ifdef STATX_DIOALIGN
	struct statx stx;
	if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 && (stx.stx_mask & STATX_DIOALIGN) &&
	    stx.stx_dio_offset_align)
		align = align_max(stx.stx_dio_offset_align, stx.stx_dio_mem_align);
#endif
	if (!align) {
		struct statfs sfs;
		align = fstatfs(fd, &sfs) == 0 && sfs.f_bsize > 0 ? (int64_t)sfs.f_bsize : (int64_t)st.st_blksize;
	}
	return align_max(align, BLOCKIO_SECTOR_BYTES);
}

/* ---- I/O ---------------------------------------------------------------- */

int64_t blockio_pread_full(int fd, void *buf, uint64_t len, int64_t offset)
{
	uint64_t done = 0;

	while (done < len) {
		ssize_t r = pread(fd, (char *)buf + done, len - done, offset + (int64_t)done);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		done += (uint64_t)r;
		if (r == 0 || (done < len && done % BLOCKIO_SECTOR_BYTES))
			return -BLOCKIO_ESHORT_READ;
	}
	return 0;
}

int64_t blockio_pwrite_full(int fd, const void *buf, uint64_t len, int64_t offset)
{
	uint64_t done = 0;

	while (done < len) {
		ssize_t r = pwrite(fd, (const char *)buf + done, len - done, offset + (int64_t)done);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			return -EIO;
		done += (uint64_t)r;
	}
	return 0;
}

int blockio_fdatasync(int fd)
{
	int r;

	do {
		r = fdatasync(fd);
	} while (r < 0 && errno == EINTR);
	return r < 0 ? -errno : 0;
}

int64_t blockio_pwrite_datasync(int fd, const void *buf, uint64_t len, int64_t offset)
{
	int64_t r = blockio_pwrite_full(fd, buf, len, offset);
	int f;

	if (r < 0)
		return r;
	f = blockio_fdatasync(fd);
	return f < 0 ? -(int64_t)(-f | BLOCKIO_STEP_FLUSH) : 0;
}

int blockio_step_flush_bit(void)
{
	return BLOCKIO_STEP_FLUSH;
}

int blockio_batch_serial(int fd, uint32_t nr, const uint8_t *is_write, const uint64_t *addrs, const uint32_t *lens,
			 const int64_t *offsets, int32_t *results)
{
	int failed = 0;

	for (uint32_t i = 0; i < nr; i++) {
		void *buf = (void *)(uintptr_t)addrs[i];
		int64_t r = is_write[i] ? blockio_pwrite_full(fd, buf, lens[i], offsets[i])
					: blockio_pread_full(fd, buf, lens[i], offsets[i]);
		results[i] = (int32_t)r;
		failed += r < 0;
	}
	return failed;
}

/* ---- io_uring ------------------------------------------------------------- */

struct blockio_ring {
	int fd;
	unsigned sq_entries;
	void *sq_map, *cq_map;
	size_t sq_map_bytes, cq_map_bytes;
	struct io_uring_sqe *sqes;
	size_t sqes_bytes;
	unsigned *sq_head, *sq_tail, *sq_mask, *sq_array;
	unsigned *cq_head, *cq_tail, *cq_mask;
	struct io_uring_cqe *cqes;
	struct blockio_ring *next;
};

static void ring_free(struct blockio_ring *r)
{
	if (r->sqes)
		munmap(r->sqes, r->sqes_bytes);
	if (r->cq_map && r->cq_map != r->sq_map)
		munmap(r->cq_map, r->cq_map_bytes);
	if (r->sq_map)
		munmap(r->sq_map, r->sq_map_bytes);
	if (r->fd >= 0)
		close(r->fd);
	free(r);
}

static void *ring_mmap(int fd, size_t bytes, uint64_t off)
{
	void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, (off_t)off);
	return p == MAP_FAILED ? NULL : p;
}

static int ring_probe_rw(int fd)
{
	size_t bytes = sizeof(struct io_uring_probe) + 256 * sizeof(struct io_uring_probe_op);
	struct io_uring_probe *probe = calloc(1, bytes);
	int ok;

	if (!probe)
		return 0;
	ok = syscall(__NR_io_uring_register, fd, IORING_REGISTER_PROBE, probe, 256) >= 0 &&
	     probe->last_op >= IORING_OP_WRITE && (probe->ops[IORING_OP_READ].flags & IO_URING_OP_SUPPORTED) &&
	     (probe->ops[IORING_OP_WRITE].flags & IO_URING_OP_SUPPORTED);
	free(probe);
	return ok;
}

/* A new ring, or NULL with errno set. */
static struct blockio_ring *ring_new(void)
{
	struct io_uring_params p;
	struct blockio_ring *r = calloc(1, sizeof(*r));
	int err;

	if (!r)
		return NULL;
	memset(&p, 0, sizeof(p));
	r->fd = (int)syscall(__NR_io_uring_setup, BLOCKIO_RING_DEPTH, &p);
	if (r->fd < 0)
		goto fail;
	r->sq_entries = p.sq_entries;
	r->sq_map_bytes = p.sq_off.array + p.sq_entries * sizeof(unsigned);
	r->cq_map_bytes = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
	if (p.features & IORING_FEAT_SINGLE_MMAP) {
		if (r->cq_map_bytes > r->sq_map_bytes)
			r->sq_map_bytes = r->cq_map_bytes;
		r->cq_map_bytes = r->sq_map_bytes;
	}
	r->sq_map = ring_mmap(r->fd, r->sq_map_bytes, IORING_OFF_SQ_RING);
	if (!r->sq_map)
		goto fail;
	r->cq_map = p.features & IORING_FEAT_SINGLE_MMAP ? r->sq_map
							  : ring_mmap(r->fd, r->cq_map_bytes, IORING_OFF_CQ_RING);
	if (!r->cq_map)
		goto fail;
	r->sqes_bytes = p.sq_entries * sizeof(struct io_uring_sqe);
	r->sqes = ring_mmap(r->fd, r->sqes_bytes, IORING_OFF_SQES);
	if (!r->sqes)
		goto fail;

	char *sq = r->sq_map, *cq = r->cq_map;
	r->sq_head = (unsigned *)(sq + p.sq_off.head);
	r->sq_tail = (unsigned *)(sq + p.sq_off.tail);
	r->sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
	r->sq_array = (unsigned *)(sq + p.sq_off.array);
	r->cq_head = (unsigned *)(cq + p.cq_off.head);
	r->cq_tail = (unsigned *)(cq + p.cq_off.tail);
	r->cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
	r->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
	return r;
fail:
	err = errno;
	ring_free(r);
	errno = err;
	return NULL;
}

static pthread_mutex_t ring_pool_lock = PTHREAD_MUTEX_INITIALIZER;
static struct blockio_ring *ring_pool;
static unsigned ring_pool_nr;
static pthread_once_t uring_probe_once = PTHREAD_ONCE_INIT;
static int uring_ok;

static void ring_put(struct blockio_ring *r)
{
	pthread_mutex_lock(&ring_pool_lock);
	if (ring_pool_nr < BLOCKIO_RING_POOL_MAX) {
		r->next = ring_pool;
		ring_pool = r;
		ring_pool_nr++;
		r = NULL;
	}
	pthread_mutex_unlock(&ring_pool_lock);
	if (r)
		ring_free(r);
}

static struct blockio_ring *ring_get(void)
{
	struct blockio_ring *r;

	pthread_mutex_lock(&ring_pool_lock);
	r = ring_pool;
	if (r) {
		ring_pool = r->next;
		ring_pool_nr--;
	}
	pthread_mutex_unlock(&ring_pool_lock);
	return r ? r : ring_new();
}

static void uring_probe(void)
{
	struct blockio_ring *r = ring_new();

	if (!r)
		return;
	uring_ok = ring_probe_rw(r->fd);
	if (uring_ok)
		ring_put(r);
	else
		ring_free(r);
}

int blockio_uring_supported(void)
{
	pthread_once(&uring_probe_once, uring_probe);
	return uring_ok;
}

int blockio_uring_depth(void) { return BLOCKIO_RING_DEPTH; }

int blockio_batch_uring(int fd, uint32_t nr, const uint8_t *is_write, const uint64_t *addrs, const uint32_t *lens,
			const int64_t *offsets, int32_t *results)
{
	struct blockio_ring *r;
	uint32_t *done, *requeue;
	uint32_t next = 0, nr_requeue = 0, completed = 0, inflight = 0;
	int failed = 0, broken = 0;

	if (!blockio_uring_supported())
		return -ENOSYS;
	if (!nr)
		return 0;
	done = calloc(nr, sizeof(*done));
	requeue = malloc(nr * sizeof(*requeue));
	r = ring_get();
	if (!done || !requeue || !r) {
		int err = errno ? errno : ENOMEM;
		free(done);
		free(requeue);
		if (r)
			ring_put(r);
		return -err;
	}

	while (completed < nr) {
		unsigned tail = *r->sq_tail;

		while (inflight < r->sq_entries && (nr_requeue || next < nr)) {
			uint32_t i = nr_requeue ? requeue[--nr_requeue] : next++;
			unsigned idx = tail & *r->sq_mask;
			struct io_uring_sqe *sqe = &r->sqes[idx];

			memset(sqe, 0, sizeof(*sqe));
			sqe->opcode = is_write[i] ? IORING_OP_WRITE : IORING_OP_READ;
			sqe->fd = fd;
			sqe->addr = addrs[i] + done[i];
			sqe->len = lens[i] - done[i];
			sqe->off = (uint64_t)offsets[i] + done[i];
			sqe->user_data = i;
			r->sq_array[idx] = idx;
			tail++;
			inflight++;
		}
		__atomic_store_n(r->sq_tail, tail, __ATOMIC_RELEASE);

		unsigned to_submit = tail - __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE);
		long n = syscall(__NR_io_uring_enter, r->fd, to_submit, 1, IORING_ENTER_GETEVENTS, NULL, 0);
		if (n < 0 && errno != EINTR && errno != EAGAIN && errno != EBUSY) {
			/*
			 * The ring itself failed. Operations may still be in flight
			 * on our caller's buffers: tear the ring down (the kernel
			 * cancels and reaps them) rather than reuse it.
			 */
			failed = -errno;
			broken = 1;
			break;
		}

		unsigned head = *r->cq_head;
		unsigned ctail = __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE);
		while (head != ctail) {
			struct io_uring_cqe *cqe = &r->cqes[head & *r->cq_mask];
			uint32_t i = (uint32_t)cqe->user_data;
			int res = cqe->res;

			head++;
			inflight--;
			if (res == -EINTR || res == -EAGAIN) {
				requeue[nr_requeue++] = i;
				continue;
			}
			if (res > 0) {
				done[i] += (uint32_t)res;
				if (done[i] == lens[i]) {
					results[i] = 0;
					completed++;
					continue;
				}
				if (is_write[i] || done[i] % BLOCKIO_SECTOR_BYTES == 0) {
					requeue[nr_requeue++] = i;
					continue;
				}
			}
			results[i] = res < 0 ? res : is_write[i] ? -EIO : -BLOCKIO_ESHORT_READ;
			failed++;
			completed++;
		}
		__atomic_store_n(r->cq_head, head, __ATOMIC_RELEASE);
	}

	free(done);
	free(requeue);
	if (broken)
		ring_free(r);
	else
		ring_put(r);
	return failed;
}

/* ---- event rings ---------------------------------------------------------- */

/*
 * One operation in flight on an event ring: the caller's tag and what is left
 * to transfer (a short transfer or an EINTR/EAGAIN completion is resubmitted
 * for the rest, as blockio_batch_uring does).
 */
struct aring_slot {
	uint64_t tag;
	uint64_t addr;
	int64_t offset;
	uint32_t len, done;
	int fd;
	uint8_t is_write;
	int32_t failed; /* the error it completes with, while on the failed list */
	uint32_t next;	/* free list or failed list */
};

struct blockio_aring {
	struct blockio_ring *ring;
	int eventfd;
	uint32_t inflight;  /* queued, submitted or failed, not yet reaped */
	uint32_t queued;    /* SQEs not yet handed to the kernel */
	uint32_t free_head; /* UINT32_MAX: no free slot */
	uint32_t failed_head;
	uint32_t queued_slots[BLOCKIO_RING_DEPTH]; /* their slots, oldest first */
	struct aring_slot slots[BLOCKIO_RING_DEPTH];
};

struct blockio_aring *blockio_aring_new(void)
{
	struct blockio_aring *a;
	int err;

	if (!blockio_uring_supported()) {
		errno = ENOSYS;
		return NULL;
	}
	a = calloc(1, sizeof(*a));
	if (!a)
		return NULL;
	a->eventfd = -1;
	a->ring = ring_new();
	if (!a->ring)
		goto fail;
	a->eventfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (a->eventfd < 0)
		goto fail;
	if (syscall(__NR_io_uring_register, a->ring->fd, IORING_REGISTER_EVENTFD, &a->eventfd, 1) < 0)
		goto fail;
	for (uint32_t i = 0; i < BLOCKIO_RING_DEPTH; i++)
		a->slots[i].next = i + 1 < BLOCKIO_RING_DEPTH ? i + 1 : UINT32_MAX;
	a->free_head = 0;
	a->failed_head = UINT32_MAX;
	return a;
fail:
	err = errno;
	if (a->ring)
		ring_free(a->ring);
	if (a->eventfd >= 0)
		close(a->eventfd);
	free(a);
	errno = err;
	return NULL;
}

int blockio_aring_eventfd(const struct blockio_aring *a) { return a->eventfd; }

uint32_t blockio_aring_inflight(const struct blockio_aring *a) { return a->inflight; }

uint32_t blockio_aring_queued(const struct blockio_aring *a) { return a->queued; }

static void aring_signal(struct blockio_aring *a)
{
	uint64_t one = 1;
	while (write(a->eventfd, &one, sizeof(one)) < 0 && errno == EINTR)
		;
}

/* Queue the SQE for what is left of slot i (handed to the kernel by aring_enter). */
static void aring_queue(struct blockio_aring *a, uint32_t i)
{
	struct blockio_ring *r = a->ring;
	struct aring_slot *s = &a->slots[i];
	unsigned tail = *r->sq_tail;
	unsigned idx = tail & *r->sq_mask;
	struct io_uring_sqe *sqe = &r->sqes[idx];

	memset(sqe, 0, sizeof(*sqe));
	sqe->opcode = s->is_write ? IORING_OP_WRITE : IORING_OP_READ;
	sqe->fd = s->fd;
	sqe->addr = s->addr + s->done;
	sqe->len = s->len - s->done;
	sqe->off = (uint64_t)s->offset + s->done;
	sqe->user_data = i;
	r->sq_array[idx] = idx;
	__atomic_store_n(r->sq_tail, tail + 1, __ATOMIC_RELEASE);
	a->queued_slots[a->queued++] = i;
}

/*
 * Hand every queued SQE to the kernel. What the kernel refuses to take is
 * withdrawn and put on the failed list with its error (the next reap hands it
 * back; the eventfd is signalled). Returns how many failed.
 */
static uint32_t aring_enter(struct blockio_aring *a)
{
	struct blockio_ring *r = a->ring;
	unsigned head0 = __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE);
	uint32_t failed = 0;

	for (;;) {
		unsigned head = __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE);
		unsigned to_submit = *r->sq_tail - head;
		if (!to_submit)
			break;
		long n = syscall(__NR_io_uring_enter, r->fd, to_submit, 0, 0, NULL, 0);
		if (n < 0 && errno != EINTR && errno != EAGAIN && errno != EBUSY) {
			int32_t err = -errno;
			head = __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE);
			__atomic_store_n(r->sq_tail, head, __ATOMIC_RELEASE);
			for (uint32_t j = head - head0; j < a->queued; j++) {
				struct aring_slot *s = &a->slots[a->queued_slots[j]];
				s->failed = err;
				s->next = a->failed_head;
				a->failed_head = a->queued_slots[j];
				failed++;
			}
			aring_signal(a);
			break;
		}
	}
	a->queued = 0;
	return failed;
}

int blockio_aring_queue(struct blockio_aring *a, int fd, int is_write, void *buf, uint32_t len, int64_t offset,
			uint64_t tag)
{
	uint32_t i = a->free_head;
	struct aring_slot *s;

	if (i == UINT32_MAX)
		return -EBUSY;
	if (!len || offset < 0)
		return -EINVAL;
	s = &a->slots[i];
	a->free_head = s->next;
	s->tag = tag;
	s->addr = (uint64_t)(uintptr_t)buf;
	s->offset = offset;
	s->len = len;
	s->done = 0;
	s->fd = fd;
	s->is_write = is_write != 0;
	a->inflight++;
	aring_queue(a, i);
	return 0;
}

uint32_t blockio_aring_submit(struct blockio_aring *a) { return a->queued ? aring_enter(a) : 0; }

static void aring_slot_put(struct blockio_aring *a, uint32_t i)
{
	a->slots[i].next = a->free_head;
	a->free_head = i;
	a->inflight--;
}

int blockio_aring_reap(struct blockio_aring *a, uint64_t *tags, int32_t *results, uint32_t max)
{
	struct blockio_ring *r = a->ring;
	uint32_t n = 0;
	int requeued = 0;
	uint64_t counter;

	/* clear the eventfd first: a completion posted after the reap below signals it again */
	while (read(a->eventfd, &counter, sizeof(counter)) < 0 && errno == EINTR)
		;
	while (a->failed_head != UINT32_MAX && n < max) {
		uint32_t i = a->failed_head;
		a->failed_head = a->slots[i].next;
		tags[n] = a->slots[i].tag;
		results[n++] = a->slots[i].failed;
		aring_slot_put(a, i);
	}
	unsigned head = *r->cq_head;
	unsigned ctail = __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE);
	while (head != ctail && n < max) {
		struct io_uring_cqe *cqe = &r->cqes[head & *r->cq_mask];
		uint32_t i = (uint32_t)cqe->user_data;
		int res = cqe->res;
		struct aring_slot *s = &a->slots[i];
		int32_t result;

		head++;
		if (res == -EINTR || res == -EAGAIN) {
			aring_queue(a, i);
			requeued = 1;
			continue;
		}
		if (res > 0) {
			s->done += (uint32_t)res;
			if (s->done == s->len) {
				result = 0;
				goto complete;
			}
			if (s->is_write || s->done % BLOCKIO_SECTOR_BYTES == 0) {
				aring_queue(a, i);
				requeued = 1;
				continue;
			}
		}
		result = res < 0 ? res : s->is_write ? -EIO : -BLOCKIO_ESHORT_READ;
	complete:
		tags[n] = s->tag;
		results[n++] = result;
		aring_slot_put(a, i);
	}
	__atomic_store_n(r->cq_head, head, __ATOMIC_RELEASE);
	/* more than max: make sure the caller is called again */
	if (a->failed_head != UINT32_MAX || head != __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE))
		aring_signal(a);
	/* the rest of short transfers goes out at once */
	if (requeued)
		aring_enter(a);
	return (int)n;
}

int blockio_aring_wait(struct blockio_aring *a)
{
	struct blockio_ring *r = a->ring;

	blockio_aring_submit(a);
	if (!a->inflight || a->failed_head != UINT32_MAX)
		return 0;
	if (__atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE) != *r->cq_head)
		return 0;
	for (;;) {
		if (syscall(__NR_io_uring_enter, r->fd, 0, 1, IORING_ENTER_GETEVENTS, NULL, 0) >= 0)
			return 0;
		if (errno != EINTR && errno != EAGAIN && errno != EBUSY)
			return -errno;
	}
}

void blockio_aring_free(struct blockio_aring *a)
{
	uint64_t tags[16];
	int32_t results[16];

	if (!a)
		return;
	/* the kernel must not touch buffers after this returns: wait for what is in flight */
	blockio_aring_submit(a);
	for (;;) {
		blockio_aring_reap(a, tags, results, 16);
		if (!a->inflight)
			break;
		if (a->failed_head != UINT32_MAX)
			continue;
		long e = syscall(__NR_io_uring_enter, a->ring->fd, 0, 1, IORING_ENTER_GETEVENTS, NULL, 0);
		if (e < 0 && errno != EINTR && errno != EAGAIN && errno != EBUSY)
			break;
	}
	ring_free(a->ring);
	close(a->eventfd);
	free(a);
}

/* ---- memory ------------------------------------------------------------- */

static atomic_llong aligned_live, mmap_live;

/*
 * Buffers of BLOCKIO_MAP_MIN_BYTES and up (nodes of 64 KiB and more) come
 * from their own mapping, populated in the mmap call: one kernel entry
 * instead of a page fault per page at first touch (256 KiB: about 75 us
 * against 300 us and more for posix_memalign + memset here), and given back
 * to the system at free instead of sitting in malloc's heap. Alignment above
 * the page size trims an over-sized mapping. Smaller buffers stay on
 * malloc's heap; free tells the two apart by the size.
 */
#define BLOCKIO_MAP_MIN_BYTES (64u << 10)

static int aligned_mapped(uint64_t size_bytes)
{
	return size_bytes >= BLOCKIO_MAP_MIN_BYTES;
}

static uint64_t page_round(uint64_t n)
{
	uint64_t pg = (uint64_t)sysconf(_SC_PAGESIZE);
	return (n + pg - 1) & ~(pg - 1);
}

static void *map_aligned(uint64_t size_bytes, uint64_t align_bytes)
{
	uint64_t pg = (uint64_t)sysconf(_SC_PAGESIZE);
	uint64_t len = page_round(size_bytes);
	uint64_t extra = align_bytes > pg ? align_bytes - pg : 0;
	char *p, *q;

	p = mmap(NULL, len + extra, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | (extra ? 0 : MAP_POPULATE), -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	if (!extra)
		return p;
	q = (char *)(((uintptr_t)p + align_bytes - 1) & ~(uintptr_t)(align_bytes - 1));
	if (q > p)
		munmap(p, (size_t)(q - p));
	if (q + len < p + len + extra)
		munmap(q + len, (size_t)(p + len + extra - (q + len)));
	/* fault in what is kept (MAP_POPULATE would have faulted the trimmed ends too) */
	memset(q, 0, len);
	return q;
}

void *blockio_alloc_aligned(uint64_t size_bytes, uint64_t align_bytes)
{
	void *p;
	int r;

	if (!size_bytes || align_bytes < sizeof(void *) || (align_bytes & (align_bytes - 1))) {
		errno = EINVAL;
		return NULL;
	}
	if (aligned_mapped(size_bytes)) {
		p = map_aligned(size_bytes, align_bytes);
		if (!p)
			return NULL;
	} else {
		r = posix_memalign(&p, align_bytes, size_bytes);
		if (r) {
			errno = r;
			return NULL;
		}
		memset(p, 0, size_bytes);
	}
	atomic_fetch_add(&aligned_live, 1);
	return p;
}

void blockio_free_aligned(void *p, uint64_t size_bytes)
{
	if (!p)
		return;
	if (aligned_mapped(size_bytes))
		munmap(p, page_round(size_bytes));
	else
		free(p);
	atomic_fetch_sub(&aligned_live, 1);
}

void *blockio_mmap_anon(uint64_t size_bytes)
{
	void *p;

	if (!size_bytes) {
		errno = EINVAL;
		return NULL;
	}
	p = mmap(NULL, size_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	atomic_fetch_add(&mmap_live, 1);
	return p;
}

int blockio_mmap_retire(void *p, uint64_t size_bytes)
{
	void *q = mmap(p, size_bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
	return q == MAP_FAILED ? -errno : 0;
}

int blockio_munmap(void *p, uint64_t size_bytes)
{
	if (munmap(p, size_bytes) < 0)
		return -errno;
	atomic_fetch_sub(&mmap_live, 1);
	return 0;
}

int blockio_page_bytes(void) { return (int)sysconf(_SC_PAGESIZE); }
int64_t blockio_aligned_live(void) { return atomic_load(&aligned_live); }
int64_t blockio_mmap_live(void) { return atomic_load(&mmap_live); }
uint64_t blockio_address(const void *p) { return (uint64_t)(uintptr_t)p; }

uint64_t blockio_gather(void *dst, const void *src, const uint32_t *spans, uint32_t nr)
{
	uint64_t o = 0;

	for (uint32_t i = 0; i < nr; i++) {
		memcpy((char *)dst + o, (const char *)src + spans[2 * i], spans[2 * i + 1]);
		o += spans[2 * i + 1];
	}
	return o;
}

/* ---- crc32c ------------------------------------------------------------- */

#define CRC32C_POLY_REFLECTED 0x82F63B78u

static uint32_t crc32c_table[8][256];

static uint32_t crc32c_sw(uint32_t crc, const uint8_t *p, uint64_t len)
{
	while (len && ((uintptr_t)p & 7)) {
		crc = crc32c_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
		len--;
	}
	while (len >= 8) {
		uint64_t w;
		memcpy(&w, p, 8);
		w ^= crc;
		crc = crc32c_table[7][w & 0xff] ^ crc32c_table[6][(w >> 8) & 0xff] ^
		      crc32c_table[5][(w >> 16) & 0xff] ^ crc32c_table[4][(w >> 24) & 0xff] ^
		      crc32c_table[3][(w >> 32) & 0xff] ^ crc32c_table[2][(w >> 40) & 0xff] ^
		      crc32c_table[1][(w >> 48) & 0xff] ^ crc32c_table[0][w >> 56];
		p += 8;
		len -= 8;
	}
	while (len--)
		crc = crc32c_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return crc;
}

/*
 * The SSE4.2 path runs three independent crc32 chains over three adjacent
 * lanes of a stride (the instruction's latency is three times its
 * throughput), then joins them: the register after lane B from state s is
 * s * x^(8 * stride) ^ crc(B from 0), all mod P, reflected. The powers
 * x^(8 * stride) mod P are made at load time (crc32c_stride_k).
 */
static const uint32_t crc32c_strides[] = {4096, 1024, 256};
#define CRC32C_STRIDE_NR (sizeof(crc32c_strides) / sizeof(crc32c_strides[0]))
static uint32_t crc32c_stride_k[CRC32C_STRIDE_NR];

/* a * b mod P, reflected (zlib's multmodp). */
static uint32_t crc32c_multmodp(uint32_t a, uint32_t b)
{
	uint32_t m = 1u << 31, p = 0;

	if (!a)
		return 0;
	for (;;) {
		if (a & m) {
			p ^= b;
			if ((a & (m - 1)) == 0)
				break;
		}
		m >>= 1;
		b = b & 1 ? (b >> 1) ^ CRC32C_POLY_REFLECTED : b >> 1;
	}
	return p;
}

__attribute__((target("sse4.2"))) static uint32_t crc32c_sse42(uint32_t crc, const uint8_t *p, uint64_t len)
{
	uint64_t c = crc;

	while (len && ((uintptr_t)p & 7)) {
		c = _mm_crc32_u8((uint32_t)c, *p++);
		len--;
	}
	for (unsigned s = 0; s < CRC32C_STRIDE_NR; s++) {
		uint64_t stride = crc32c_strides[s];
		while (len >= 3 * stride) {
			const uint8_t *p1 = p + stride, *p2 = p + 2 * stride;
			uint64_t c1 = 0, c2 = 0;
			for (uint64_t i = 0; i < stride; i += 8) {
				uint64_t w0, w1, w2;
				memcpy(&w0, p + i, 8);
				memcpy(&w1, p1 + i, 8);
				memcpy(&w2, p2 + i, 8);
				c = _mm_crc32_u64(c, w0);
				c1 = _mm_crc32_u64(c1, w1);
				c2 = _mm_crc32_u64(c2, w2);
			}
			c = crc32c_multmodp(crc32c_stride_k[s], (uint32_t)c) ^ (uint32_t)c1;
			c = crc32c_multmodp(crc32c_stride_k[s], (uint32_t)c) ^ (uint32_t)c2;
			p += 3 * stride;
			len -= 3 * stride;
		}
	}
	while (len >= 8) {
		uint64_t w;
		memcpy(&w, p, 8);
		c = _mm_crc32_u64(c, w);
		p += 8;
		len -= 8;
	}
	while (len--)
		c = _mm_crc32_u8((uint32_t)c, *p++);
	return (uint32_t)c;
}

static uint32_t (*crc32c_impl)(uint32_t, const uint8_t *, uint64_t) = crc32c_sw;

__attribute__((constructor)) static void blockio_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ CRC32C_POLY_REFLECTED : c >> 1;
		crc32c_table[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++)
		for (int t = 1; t < 8; t++)
			crc32c_table[t][i] = crc32c_table[0][crc32c_table[t - 1][i] & 0xff] ^ (crc32c_table[t - 1][i] >> 8);
	/* x^(8 * stride) mod P: x^0, then one zero byte (a multiplication by x^8) at a time */
	for (unsigned s = 0; s < CRC32C_STRIDE_NR; s++) {
		uint32_t k = 1u << 31;
		for (uint32_t i = 0; i < crc32c_strides[s]; i++)
			k = crc32c_table[0][k & 0xff] ^ (k >> 8);
		crc32c_stride_k[s] = k;
	}

	__builtin_cpu_init();
	if (__builtin_cpu_supports("sse4.2") && !getenv("SIXTREE_CRC32C_TABLE"))
		crc32c_impl = crc32c_sse42;
}

uint32_t blockio_crc32c(uint32_t seed, const void *buf, uint64_t len)
{
	return ~crc32c_impl(~seed, buf, len);
}

const char *blockio_crc32c_impl(void) { return crc32c_impl == crc32c_sse42 ? "sse4.2" : "table"; }
