// SPDX-License-Identifier: GPL-2.0-only
/*
 * addon.cc: the N-API face of blockio (node-addon-api, NAPI_VERSION 8).
 *
 * Owns: argument guards, the JS wrappers of blockio's functions (sync calls,
 * and Promise-returning calls), each environment's event ring, and the
 * lifetime of native memory handed to JS as ArrayBuffers.
 *
 * Asynchronous pread/pwrite: on the environment's event ring (blockio_aring:
 * io_uring, completions signalled on an eventfd that a uv_poll_t on the
 * environment's loop watches), so the kernel does the I/O and the loop
 * thread hears of it directly, with no thread hand-off. The ring is set up
 * on first use; where io_uring is not usable, when the ring is full, or
 * after useEventRing(false), the call runs on libuv's thread pool
 * (Napi::AsyncWorker) instead. fdatasync and batches always use the pool.
 * Submission is batched per loop turn: on an idle ring (nothing queued or
 * in flight) a call goes to the kernel at once; otherwise it only queues its
 * SQE, and a uv_check handle (right after the poll phase, where completions
 * start the next reads) and a uv_prepare handle (right before the loop
 * blocks) hand everything queued to the kernel in one io_uring_enter. In a
 * VM each enter costs a device notification (tens of microseconds of
 * system time), so 64 lookups that miss in one turn pay for two, not 64; a
 * lone read waits for nothing. The poll handle keeps the loop alive only
 * while operations are queued or in flight; the environment's async cleanup
 * hook waits for them, frees their records (their promises stay unsettled:
 * no JS runs any more), then closes the handles.
 *
 * Memory regions (aligned heap memory and anonymous mmaps):
 *  - Each ArrayBuffer wraps one Region; the Region is the finalizer hint and
 *    is listed in a table keyed by data address while it is live.
 *  - Exactly one free path runs per region: an explicit free (removes the
 *    table entry, marks the Region freed, detaches the ArrayBuffer, releases
 *    the memory) or the finalizer (releases the memory only if not freed).
 *    The finalizer deletes the Region record itself, except:
 *  - A region with asynchronous I/O in flight has inflight > 0; freeing it
 *    then fails with EBUSY, and the operation holds a reference so GC cannot
 *    finalize it either. An environment going away finalizes its buffers
 *    regardless, possibly before its ring's teardown has waited for the
 *    kernel: such a region is orphaned, and the last unpin releases its
 *    memory and record. Asynchronous I/O accepts only registered regions.
 *
 * Errors: plain Error objects with .code (errno name from blockio), .errno
 * (positive number) and .syscall; argument guards use code EINVAL and
 * syscall "argument". The TypeScript layer maps them to SixtreeErrors.
 */
#include <napi.h>
#include <uv.h>

#include <atomic>
#include <cmath>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "blockio.h"

namespace {

constexpr double kSafeIntegerMax = 9007199254740991.0; /* 2^53 - 1 */
constexpr uint32_t kBatchOpsMax = 1u << 20;

enum class RegionKind { aligned, mmap };

struct Region {
	void *ptr;
	size_t sizeBytes;
	RegionKind kind;
	bool freed;
	uint32_t inflight;
	/* finalized with I/O in flight: the last unpin releases the memory and the record */
	bool orphaned;
};

std::mutex regionsLock;
std::unordered_map<void *, Region *> regions;

Napi::Error errnoError(Napi::Env env, int err, const char *syscall, const std::string &detail = "")
{
	int e = err < 0 ? -err : err;
	const char *name = blockio_errno_name(e);
	std::string msg = std::string(name) + ": " + syscall + " failed";
	if (!detail.empty())
		msg += " (" + detail + ")";
	Napi::Error error = Napi::Error::New(env, msg);
	error.Set("code", Napi::String::New(env, name));
	error.Set("errno", Napi::Number::New(env, e));
	error.Set("syscall", Napi::String::New(env, syscall));
	return error;
}

[[noreturn]] void throwArg(Napi::Env env, const std::string &msg)
{
	Napi::Error error = Napi::Error::New(env, "EINVAL: " + msg);
	error.Set("code", Napi::String::New(env, "EINVAL"));
	error.Set("errno", Napi::Number::New(env, EINVAL));
	error.Set("syscall", Napi::String::New(env, "argument"));
	throw error;
}

/* v, if it is an integer in [min, max]; else an argument error naming it. */
double checkInteger(Napi::Env env, double v, const char *name, double min, double max)
{
	if (!std::isfinite(v) || std::floor(v) != v || v < min || v > max)
		throwArg(env, std::string(name) + " must be an integer in [" + std::to_string((int64_t)min) + ", " +
				      std::to_string((int64_t)max) + "], got " + std::to_string(v));
	return v;
}

/* (napi_get_value_double fails for anything but a number: the type test and the unwrap in one call) */
double argInteger(const Napi::CallbackInfo &info, size_t i, const char *name, double min, double max)
{
	double v;
	if (info.Length() <= i || napi_get_value_double(info.Env(), info[i], &v) != napi_ok)
		throwArg(info.Env(), std::string(name) + " must be a number");
	return checkInteger(info.Env(), v, name, min, max);
}

/* argInteger for an optional argument: dflt when absent or undefined (still one N-API call for a number). */
double optInteger(const Napi::CallbackInfo &info, size_t i, const char *name, double min, double max, double dflt)
{
	if (info.Length() <= i)
		return dflt;
	double v;
	if (napi_get_value_double(info.Env(), info[i], &v) != napi_ok) {
		if (info[i].IsUndefined())
			return dflt;
		throwArg(info.Env(), std::string(name) + " must be a number");
	}
	return checkInteger(info.Env(), v, name, min, max);
}

int argFd(const Napi::CallbackInfo &info, size_t i)
{
	return (int)argInteger(info, i, "fd", 0, 2147483647.0);
}

int64_t argOffset(const Napi::CallbackInfo &info, size_t i)
{
	int64_t v = (int64_t)argInteger(info, i, "offsetBytes", 0, kSafeIntegerMax);
	if (v % blockio_sector_bytes())
		throwArg(info.Env(), "offsetBytes must be a multiple of " + std::to_string(blockio_sector_bytes()));
	return v;
}

bool argBool(const Napi::CallbackInfo &info, size_t i, const char *name)
{
	if (info.Length() <= i || !info[i].IsBoolean())
		throwArg(info.Env(), std::string(name) + " must be a boolean");
	return info[i].As<Napi::Boolean>().Value();
}

/* An I/O buffer: a Uint8Array whose address and length are sector multiples. */
struct IoBuf {
	Napi::Uint8Array array;
	uint8_t *data;
	size_t len;
};

IoBuf checkIoBuf(Napi::Env env, Napi::Value v, const std::string &name)
{
	if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
		throwArg(env, name + " must be a Uint8Array");
	Napi::Uint8Array a = v.As<Napi::Uint8Array>();
	uint8_t *data = a.Data();
	size_t len = a.ByteLength();
	size_t sector = (size_t)blockio_sector_bytes();
	if (!data || !len)
		throwArg(env, name + " is empty or detached");
	if (len % sector || (uintptr_t)data % sector)
		throwArg(env, name + " address and length must be multiples of " + std::to_string(sector));
	return IoBuf{a, data, len};
}

Region *regionOf(Napi::Uint8Array a)
{
	void *base = a.ArrayBuffer().Data();
	std::lock_guard<std::mutex> g(regionsLock);
	auto it = regions.find(base);
	return it == regions.end() ? nullptr : it->second;
}

/* Pins a registered region for the length of an asynchronous operation. */
Region *pinRegion(Napi::Env env, Napi::Uint8Array a, const std::string &name)
{
	Region *r = regionOf(a);
	if (!r)
		throwArg(env, name + " must come from allocAligned() or mmapAnon() and not be freed");
	std::lock_guard<std::mutex> g(regionsLock);
	r->inflight++;
	return r;
}

void releaseMemory(Region *r)
{
	if (r->kind == RegionKind::aligned)
		blockio_free_aligned(r->ptr, r->sizeBytes);
	else
		blockio_munmap(r->ptr, r->sizeBytes);
}

void unpinRegion(Region *r)
{
	bool last;
	{
		std::lock_guard<std::mutex> g(regionsLock);
		last = --r->inflight == 0 && r->orphaned;
	}
	if (last) {
		releaseMemory(r);
		delete r;
	}
}

/*
 * The ArrayBuffer is collected, or its environment is going away. A region
 * the kernel may still be reading into or writing from (I/O in flight: a
 * worker exiting with reads on its ring, whose teardown waits for them after
 * this may run) is orphaned instead: the last unpin releases it. Freeing it
 * here let the kernel write into freed heap memory.
 */
void finalizeRegion(Napi::Env env, void *, Region *r)
{
	bool release;
	{
		std::lock_guard<std::mutex> g(regionsLock);
		release = !r->freed;
		if (release) {
			auto it = regions.find(r->ptr);
			if (it != regions.end() && it->second == r)
				regions.erase(it);
		}
		if (release && r->inflight > 0) {
			r->orphaned = true;
			return;
		}
	}
	if (release) {
		releaseMemory(r);
		Napi::MemoryManagement::AdjustExternalMemory(env, -(int64_t)r->sizeBytes);
	}
	delete r;
}

Napi::Value wrapRegion(Napi::Env env, void *p, size_t sizeBytes, RegionKind kind)
{
	Region *r = new Region{p, sizeBytes, kind, false, 0, false};
	{
		std::lock_guard<std::mutex> g(regionsLock);
		regions[p] = r;
	}
	Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, p, sizeBytes, finalizeRegion, r);
	Napi::MemoryManagement::AdjustExternalMemory(env, (int64_t)sizeBytes);
	return ab;
}

void freeRegion(const Napi::CallbackInfo &info, RegionKind kind)
{
	Napi::Env env = info.Env();
	if (info.Length() < 1 || !info[0].IsArrayBuffer())
		throwArg(env, "buffer must be an ArrayBuffer");
	Napi::ArrayBuffer ab = info[0].As<Napi::ArrayBuffer>();
	void *p = ab.Data();
	if (!p)
		throwArg(env, "buffer is detached (already freed)");
	Region region;
	{
		std::lock_guard<std::mutex> g(regionsLock);
		auto it = regions.find(p);
		if (it == regions.end() || it->second->kind != kind)
			throwArg(env, kind == RegionKind::aligned ? "buffer was not allocated by allocAligned()"
								  : "buffer was not mapped by mmapAnon()");
		if (it->second->inflight)
			throw errnoError(env, EBUSY, "free", "asynchronous I/O in flight on this buffer");
		it->second->freed = true;
		region = *it->second;
		regions.erase(it);
	}
	/* From here the finalizer only deletes the record; never touch it again. */
	ab.Detach();
	releaseMemory(&region);
	Napi::MemoryManagement::AdjustExternalMemory(env, -(int64_t)region.sizeBytes);
}

/* ---- asynchronous work ------------------------------------------------- */

class PromiseWorker : public Napi::AsyncWorker {
public:
	explicit PromiseWorker(Napi::Env env, const char *syscall)
		: Napi::AsyncWorker(env, "sixtree.blockio"), deferred_(Napi::Promise::Deferred::New(env)),
		  syscall_(syscall)
	{
	}
	Napi::Promise promise() { return deferred_.Promise(); }

protected:
	virtual Napi::Value value() { return Env().Undefined(); }
	virtual void release() {}
	void OnOK() override
	{
		Napi::HandleScope scope(Env());
		release();
		if (result_ < 0)
			deferred_.Reject(errnoError(Env(), (int)result_, syscall_).Value());
		else
			deferred_.Resolve(value());
	}
	void OnError(const Napi::Error &e) override
	{
		Napi::HandleScope scope(Env());
		release();
		deferred_.Reject(e.Value());
	}

	Napi::Promise::Deferred deferred_;
	const char *syscall_;
	int64_t result_ = 0;
};

/* pread or pwrite; datasync: pwrite then fdatasync on the same pool thread (one hand-off for a durable write) */
class RwWorker : public PromiseWorker {
public:
	RwWorker(Napi::Env env, bool write, int fd, IoBuf buf, int64_t offset, Region *region, bool datasync = false)
		: PromiseWorker(env, write ? "pwrite" : "pread"), write_(write), datasync_(datasync), fd_(fd),
		  data_(buf.data), len_(buf.len), offset_(offset), region_(region), ref_(Napi::Persistent(buf.array))
	{
	}
	void Execute() override
	{
		if (datasync_) {
			result_ = blockio_pwrite_datasync(fd_, data_, len_, offset_);
			if (result_ < 0 && (-result_ & BLOCKIO_STEP_FLUSH)) {
				syscall_ = "fdatasync";
				result_ = -(-result_ & ~(int64_t)BLOCKIO_STEP_FLUSH);
			}
			return;
		}
		result_ = write_ ? blockio_pwrite_full(fd_, data_, len_, offset_)
				 : blockio_pread_full(fd_, data_, len_, offset_);
	}

protected:
	void release() override
	{
		if (region_)
			unpinRegion(region_);
		region_ = nullptr;
		ref_.Reset();
	}

private:
	bool write_;
	bool datasync_;
	int fd_;
	uint8_t *data_;
	size_t len_;
	int64_t offset_;
	Region *region_;
	Napi::Reference<Napi::Uint8Array> ref_;
};

class SyncWorker : public PromiseWorker {
public:
	SyncWorker(Napi::Env env, int fd) : PromiseWorker(env, "fdatasync"), fd_(fd) {}
	void Execute() override { result_ = blockio_fdatasync(fd_); }

private:
	int fd_;
};

class BatchWorker : public PromiseWorker {
public:
	BatchWorker(Napi::Env env, int fd, bool uring, Napi::Array bufs)
		: PromiseWorker(env, uring ? "io_uring_enter" : "batch"), fd_(fd), uring_(uring),
		  ref_(Napi::Persistent(bufs))
	{
	}
	void Execute() override
	{
		uint32_t nr = (uint32_t)addrs_.size();
		results_.assign(nr, 0);
		int r = uring_ ? blockio_batch_uring(fd_, nr, isWrite_.data(), addrs_.data(), lens_.data(),
						     offsets_.data(), results_.data())
			       : blockio_batch_serial(fd_, nr, isWrite_.data(), addrs_.data(), lens_.data(),
						      offsets_.data(), results_.data());
		result_ = r < 0 ? r : 0;
	}

	std::vector<uint8_t> isWrite_;
	std::vector<uint64_t> addrs_;
	std::vector<uint32_t> lens_;
	std::vector<int64_t> offsets_;
	std::vector<Region *> pinned_;

protected:
	Napi::Value value() override
	{
		Napi::Int32Array out = Napi::Int32Array::New(Env(), results_.size());
		for (size_t i = 0; i < results_.size(); i++)
			out[i] = results_[i];
		return out;
	}
	void release() override
	{
		for (Region *r : pinned_)
			unpinRegion(r);
		pinned_.clear();
		ref_.Reset();
	}

private:
	int fd_;
	bool uring_;
	Napi::Reference<Napi::Array> ref_;
	std::vector<int32_t> results_;
};

/* ---- event ring -------------------------------------------------------------- */

/* RingOp records alive in the process, every environment (eventRingStats().recordsLive): teardown frees them too. */
std::atomic<int64_t> ringOpsLive{0};

/* One operation on the event ring; its address is the ring's tag. */
struct RingOp {
	Napi::Promise::Deferred deferred;
	Napi::Reference<Napi::Uint8Array> ref;
	Region *region;
	const char *syscall;
	RingOp(Napi::Promise::Deferred d, Napi::Reference<Napi::Uint8Array> r, Region *reg, const char *sc)
		: deferred(d), ref(std::move(r)), region(reg), syscall(sc)
	{
		ringOpsLive++;
	}
	~RingOp() { ringOpsLive--; }
};

/* The event ring of one environment (its instance data). */
struct EventRing {
	napi_env env = nullptr;
	blockio_aring *ring = nullptr;
	uv_poll_t *poll = nullptr;	 /* eventfd readable: reap */
	uv_check_t *check = nullptr;	 /* after the poll phase: submit what its callbacks queued */
	uv_prepare_t *prepare = nullptr; /* before the loop blocks: submit what is still queued */
	int handlesOpen = 0;		 /* closed at teardown; the last close ends the cleanup hook */
	napi_async_context context = nullptr;
	napi_async_cleanup_hook_handle cleanup = nullptr;
	bool tried = false;  /* set-up attempted (ring stays null if it failed) */
	bool enabled = true; /* useEventRing() */
	uint32_t inflight = 0;
	/* pread/pwrite calls by where they ran (eventRingStats()) */
	double ringOps = 0;
	double poolOps = 0;
	double submits = 0; /* io_uring_enter calls that handed the kernel queued operations */
};

constexpr uint32_t kReapMax = 64;

EventRing *eventRingOf(Napi::Env env)
{
	EventRing *er = env.GetInstanceData<EventRing>();
	if (!er) {
		er = new EventRing();
		er->env = env;
		env.SetInstanceData<EventRing>(er);
	}
	return er;
}

void ringPollCb(uv_poll_t *handle, int status, int events);

/*
 * Reap every completion: unpin, then settle each promise (settle false: the
 * environment is going away and JS cannot run; the records are freed all
 * the same). A settle that fails (the environment started terminating
 * meanwhile) is dropped, never thrown out of a libuv callback.
 */
void ringReap(EventRing *er, Napi::Env env, bool settle)
{
	uint64_t tags[kReapMax];
	int32_t results[kReapMax];
	int n;
	while (er->ring && (n = blockio_aring_reap(er->ring, tags, results, kReapMax)) > 0) {
		for (int i = 0; i < n; i++) {
			RingOp *op = reinterpret_cast<RingOp *>(static_cast<uintptr_t>(tags[i]));
			unpinRegion(op->region);
			try {
				op->ref.Reset();
				if (settle && results[i] < 0)
					op->deferred.Reject(errnoError(env, results[i], op->syscall).Value());
				else if (settle)
					op->deferred.Resolve(env.Undefined());
			} catch (const Napi::Error &) {
				settle = false;
			}
			delete op;
		}
		er->inflight -= (uint32_t)n;
		if ((uint32_t)n < kReapMax)
			break;
	}
}

/* Close callback of the ring's handles: the last one ends the cleanup hook. */
void ringHandleClosed(uv_handle_t *h)
{
	EventRing *er = static_cast<EventRing *>(h->data);
	switch (h->type) {
	case UV_POLL:
		delete reinterpret_cast<uv_poll_t *>(h);
		break;
	case UV_CHECK:
		delete reinterpret_cast<uv_check_t *>(h);
		break;
	default:
		delete reinterpret_cast<uv_prepare_t *>(h);
		break;
	}
	if (--er->handlesOpen == 0) {
		napi_remove_async_cleanup_hook(er->cleanup);
		er->cleanup = nullptr;
	}
}

/* The environment goes away: wait out the I/O in flight, close the handles. */
void ringTeardown(napi_async_cleanup_hook_handle handle, void *arg)
{
	EventRing *er = static_cast<EventRing *>(arg);
	er->cleanup = handle;
	/*
	 * The kernel must be done with every buffer before the ring goes: hand it
	 * what is queued and wait out what is in flight, freeing each operation's
	 * record (its promise is never settled: no JS runs any more).
	 */
	Napi::Env env(er->env);
	while (er->inflight > 0 && blockio_aring_wait(er->ring) == 0)
		ringReap(er, env, false);
	blockio_aring_free(er->ring);
	er->ring = nullptr;
	uv_poll_stop(er->poll);
	uv_check_stop(er->check);
	uv_prepare_stop(er->prepare);
	er->handlesOpen = 3;
	uv_close(reinterpret_cast<uv_handle_t *>(er->poll), ringHandleClosed);
	uv_close(reinterpret_cast<uv_handle_t *>(er->check), ringHandleClosed);
	uv_close(reinterpret_cast<uv_handle_t *>(er->prepare), ringHandleClosed);
	er->poll = nullptr;
	er->check = nullptr;
	er->prepare = nullptr;
	if (er->context)
		napi_async_destroy(er->env, er->context);
	er->context = nullptr;
}

/* uv_check and uv_prepare callbacks: hand the kernel what this turn queued, in one io_uring_enter. */
template <typename Handle> void ringSubmitCb(Handle *h)
{
	EventRing *er = static_cast<EventRing *>(h->data);
	if (er->ring && blockio_aring_queued(er->ring)) {
		blockio_aring_submit(er->ring);
		er->submits++;
	}
}

/* The environment's ring, set up on first use; null: use the thread pool. */
EventRing *eventRing(Napi::Env env)
{
	EventRing *er = eventRingOf(env);
	if (!er->enabled)
		return nullptr;
	if (er->ring)
		return er;
	if (er->tried)
		return nullptr;
	er->tried = true;
	blockio_aring *ring = blockio_aring_new();
	if (!ring)
		return nullptr;
	uv_loop_t *loop = nullptr;
	auto *poll = new uv_poll_t();
	if (napi_get_uv_event_loop(env, &loop) != napi_ok || uv_poll_init(loop, poll, blockio_aring_eventfd(ring)) != 0) {
		delete poll;
		blockio_aring_free(ring);
		return nullptr;
	}
	/* check and prepare handles cannot fail to initialise on a live loop */
	auto *check = new uv_check_t();
	auto *prepare = new uv_prepare_t();
	uv_check_init(loop, check);
	uv_prepare_init(loop, prepare);
	poll->data = er;
	check->data = er;
	prepare->data = er;
	uv_poll_start(poll, UV_READABLE, ringPollCb);
	uv_check_start(check, ringSubmitCb<uv_check_t>);
	uv_prepare_start(prepare, ringSubmitCb<uv_prepare_t>);
	/* only operations queued or in flight keep the loop alive (ringRw refs the poll handle) */
	uv_unref(reinterpret_cast<uv_handle_t *>(poll));
	uv_unref(reinterpret_cast<uv_handle_t *>(check));
	uv_unref(reinterpret_cast<uv_handle_t *>(prepare));
	napi_value resource = Napi::Object::New(env);
	napi_async_init(env, resource, Napi::String::New(env, "sixtree.blockio"), &er->context);
	napi_add_async_cleanup_hook(env, ringTeardown, er, &er->cleanup);
	er->ring = ring;
	er->poll = poll;
	er->check = check;
	er->prepare = prepare;
	return er;
}

void ringPollCb(uv_poll_t *handle, int status, int events)
{
	EventRing *er = static_cast<EventRing *>(handle->data);
	Napi::Env env(er->env);
	try {
		Napi::HandleScope scope(env);
		/* promise reactions run when the callback scope closes, as after any callback */
		Napi::CallbackScope cbScope(env, er->context);
		ringReap(er, env, true);
	} catch (const Napi::Error &) {
		/* no scope: a worker's environment is exiting with I/O in flight */
		ringReap(er, env, false);
	}
	if (er->inflight == 0 && er->poll)
		uv_unref(reinterpret_cast<uv_handle_t *>(er->poll));
}

/* Start a read or write on the ring; an empty value: not started (use the pool). */
Napi::Value ringRw(Napi::Env env, EventRing *er, bool write, int fd, IoBuf buf, int64_t off, Region *region)
{
	if (buf.len > UINT32_MAX)
		return Napi::Value();
	auto *op = new RingOp{Napi::Promise::Deferred::New(env), Napi::Persistent(buf.array), region,
			      write ? "pwrite" : "pread"};
	if (blockio_aring_queue(er->ring, fd, write, buf.data, (uint32_t)buf.len, off,
				static_cast<uint64_t>(reinterpret_cast<uintptr_t>(op))) < 0) {
		op->ref.Reset();
		delete op;
		return Napi::Value();
	}
	if (er->inflight++ == 0)
		uv_ref(reinterpret_cast<uv_handle_t *>(er->poll));
	/*
	 * An idle ring takes the operation at once: nothing is in flight to batch
	 * with, and a lone read (queue depth 1) should not wait for the rest of
	 * the turn. Otherwise the check or prepare handle submits it with the
	 * others this turn queues.
	 */
	if (blockio_aring_inflight(er->ring) == 1) {
		blockio_aring_submit(er->ring);
		er->submits++;
	}
	return op->deferred.Promise();
}

/* ---- exported functions ---------------------------------------------------- */

Napi::Value Open(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	if (info.Length() < 1 || !info[0].IsString())
		throwArg(env, "path must be a string");
	std::string path = info[0].As<Napi::String>().Utf8Value();
	if (path.empty() || path.find('\0') != std::string::npos)
		throwArg(env, "path must be a non-empty string without NUL bytes");
	bool writable = argBool(info, 1, "writable");
	bool create = argBool(info, 2, "create");
	int fd = blockio_open(path.c_str(), writable, create);
	if (fd < 0)
		throw errnoError(env, fd, "open", path);
	return Napi::Number::New(env, fd);
}

Napi::Value Close(const Napi::CallbackInfo &info)
{
	int r = blockio_close(argFd(info, 0));
	if (r < 0)
		throw errnoError(info.Env(), r, "close");
	return info.Env().Undefined();
}

Napi::Value Lock(const Napi::CallbackInfo &info)
{
	int r = blockio_lock(argFd(info, 0));
	if (r < 0)
		throw errnoError(info.Env(), r, "flock");
	return info.Env().Undefined();
}

Napi::Value Extend(const Napi::CallbackInfo &info)
{
	int fd = argFd(info, 0);
	int64_t size = (int64_t)argInteger(info, 1, "sizeBytes", 0, kSafeIntegerMax);
	int r = blockio_extend(fd, size);
	if (r < 0)
		throw errnoError(info.Env(), r, "fallocate");
	return info.Env().Undefined();
}

Napi::Value FdKind(const Napi::CallbackInfo &info)
{
	const char *kind = blockio_fd_kind(argFd(info, 0));
	if (!kind)
		throw errnoError(info.Env(), EBADF, "fstat");
	return Napi::String::New(info.Env(), kind);
}

Napi::Value SizeBytes(const Napi::CallbackInfo &info)
{
	int64_t r = blockio_size_bytes(argFd(info, 0));
	if (r < 0)
		throw errnoError(info.Env(), (int)r, "size");
	return Napi::Number::New(info.Env(), (double)r);
}

Napi::Value AlignBytes(const Napi::CallbackInfo &info)
{
	int64_t r = blockio_align_bytes(argFd(info, 0));
	if (r < 0)
		throw errnoError(info.Env(), (int)r, "statx");
	return Napi::Number::New(info.Env(), (double)r);
}

Napi::Value RwSync(const Napi::CallbackInfo &info, bool write)
{
	Napi::Env env = info.Env();
	int fd = argFd(info, 0);
	IoBuf buf = checkIoBuf(env, info[1], "buf");
	int64_t off = argOffset(info, 2);
	int64_t r = write ? blockio_pwrite_full(fd, buf.data, buf.len, off) : blockio_pread_full(fd, buf.data, buf.len, off);
	if (r < 0)
		throw errnoError(env, (int)r, write ? "pwrite" : "pread");
	return env.Undefined();
}

Napi::Value PreadSync(const Napi::CallbackInfo &info) { return RwSync(info, false); }
Napi::Value PwriteSync(const Napi::CallbackInfo &info) { return RwSync(info, true); }

Napi::Value FdatasyncSync(const Napi::CallbackInfo &info)
{
	int r = blockio_fdatasync(argFd(info, 0));
	if (r < 0)
		throw errnoError(info.Env(), r, "fdatasync");
	return info.Env().Undefined();
}

Napi::Value RwAsync(const Napi::CallbackInfo &info, bool write)
{
	Napi::Env env = info.Env();
	int fd = argFd(info, 0);
	IoBuf buf = checkIoBuf(env, info[1], "buf");
	int64_t off = argOffset(info, 2);
	Region *region = pinRegion(env, buf.array, "buf");
	if (EventRing *er = eventRing(env)) {
		Napi::Value p = ringRw(env, er, write, fd, buf, off, region);
		if (!p.IsEmpty()) {
			er->ringOps++;
			return p;
		}
	}
	eventRingOf(env)->poolOps++;
	auto *w = new RwWorker(env, write, fd, buf, off, region);
	Napi::Promise p = w->promise();
	w->Queue();
	return p;
}

Napi::Value Pread(const Napi::CallbackInfo &info) { return RwAsync(info, false); }
Napi::Value Pwrite(const Napi::CallbackInfo &info) { return RwAsync(info, true); }

Napi::Value Fdatasync(const Napi::CallbackInfo &info)
{
	auto *w = new SyncWorker(info.Env(), argFd(info, 0));
	Napi::Promise p = w->promise();
	w->Queue();
	return p;
}

/* pwriteDatasync(fd, buf, offset): pwrite, then fdatasync, on one pool thread */
Napi::Value PwriteDatasync(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	int fd = argFd(info, 0);
	IoBuf buf = checkIoBuf(env, info[1], "buf");
	int64_t off = argOffset(info, 2);
	Region *region = pinRegion(env, buf.array, "buf");
	eventRingOf(env)->poolOps++;
	auto *w = new RwWorker(env, true, fd, buf, off, region, true);
	Napi::Promise p = w->promise();
	w->Queue();
	return p;
}

/* batch(fd, uring: boolean, bufs: Uint8Array[], offsets: Float64Array, isWrite: Uint8Array) */
Napi::Value Batch(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	int fd = argFd(info, 0);
	bool uring = argBool(info, 1, "uring");
	if (info.Length() < 5 || !info[2].IsArray())
		throwArg(env, "bufs must be an array of Uint8Array");
	Napi::Array bufs = info[2].As<Napi::Array>();
	uint32_t nr = bufs.Length();
	if (nr > kBatchOpsMax)
		throwArg(env, "too many operations in one batch: " + std::to_string(nr));
	if (!info[3].IsTypedArray() || info[3].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array ||
	    info[3].As<Napi::TypedArray>().ElementLength() != nr)
		throwArg(env, "offsets must be a Float64Array with one entry per buffer");
	if (!info[4].IsTypedArray() || info[4].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array ||
	    info[4].As<Napi::TypedArray>().ElementLength() != nr)
		throwArg(env, "isWrite must be a Uint8Array with one entry per buffer");
	Napi::Float64Array offsets = info[3].As<Napi::Float64Array>();
	Napi::Uint8Array isWrite = info[4].As<Napi::Uint8Array>();

	std::vector<IoBuf> checked;
	checked.reserve(nr);
	for (uint32_t i = 0; i < nr; i++) {
		std::string name = "bufs[" + std::to_string(i) + "]";
		IoBuf b = checkIoBuf(env, bufs.Get(i), name);
		if (!regionOf(b.array))
			throwArg(env, name + " must come from allocAligned() or mmapAnon() and not be freed");
		double off = offsets[i];
		if (!std::isfinite(off) || std::floor(off) != off || off < 0 || off > kSafeIntegerMax ||
		    (int64_t)off % blockio_sector_bytes())
			throwArg(env, "offsets[" + std::to_string(i) + "] must be a sector-aligned integer >= 0");
		if (isWrite[i] > 1)
			throwArg(env, "isWrite entries must be 0 or 1");
		checked.push_back(b);
	}

	auto *w = new BatchWorker(env, fd, uring, bufs);
	for (uint32_t i = 0; i < nr; i++) {
		w->addrs_.push_back((uint64_t)(uintptr_t)checked[i].data);
		w->lens_.push_back((uint32_t)checked[i].len);
		w->offsets_.push_back((int64_t)offsets[i]);
		w->isWrite_.push_back(isWrite[i]);
		w->pinned_.push_back(pinRegion(env, checked[i].array, "buf"));
	}
	Napi::Promise p = w->promise();
	w->Queue();
	return p;
}

/* useEventRing(enabled: boolean): whether later pread/pwrite calls of this environment may use its event ring. */
Napi::Value UseEventRing(const Napi::CallbackInfo &info)
{
	eventRingOf(info.Env())->enabled = argBool(info, 0, "enabled");
	return info.Env().Undefined();
}

/* eventRingStats(): { ring, pool, inflight, submits, recordsLive }: this environment's pread/pwrite calls by where they ran, ring operations in flight, and the io_uring_enter calls that submitted ring operations; recordsLive: operation records alive in the whole process. */
Napi::Value EventRingStats(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	EventRing *er = eventRingOf(env);
	Napi::Object o = Napi::Object::New(env);
	o.Set("ring", Napi::Number::New(env, er->ringOps));
	o.Set("pool", Napi::Number::New(env, er->poolOps));
	o.Set("inflight", Napi::Number::New(env, er->inflight));
	o.Set("submits", Napi::Number::New(env, er->submits));
	o.Set("recordsLive", Napi::Number::New(env, (double)ringOpsLive.load()));
	return o;
}

/* 'uring' if the next pread/pwrite of this environment goes to its event ring (setting it up now), else 'pool'. */
Napi::Value AsyncEngine(const Napi::CallbackInfo &info)
{
	return Napi::String::New(info.Env(), eventRing(info.Env()) ? "uring" : "pool");
}

Napi::Value UringSupported(const Napi::CallbackInfo &info)
{
	return Napi::Boolean::New(info.Env(), blockio_uring_supported() != 0);
}

Napi::Value AllocAligned(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	size_t size = (size_t)argInteger(info, 0, "sizeBytes", 1, kSafeIntegerMax);
	double align = argInteger(info, 1, "alignBytes", (double)sizeof(void *), 1 << 30);
	if ((uint64_t)align & ((uint64_t)align - 1))
		throwArg(env, "alignBytes must be a power of two");
	void *p = blockio_alloc_aligned(size, (uint64_t)align);
	if (!p)
		throw errnoError(env, errno, "posix_memalign");
	return wrapRegion(env, p, size, RegionKind::aligned);
}

Napi::Value FreeAligned(const Napi::CallbackInfo &info)
{
	freeRegion(info, RegionKind::aligned);
	return info.Env().Undefined();
}

Napi::Value MmapAnon(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	size_t size = (size_t)argInteger(info, 0, "sizeBytes", 1, kSafeIntegerMax);
	void *p = blockio_mmap_anon(size);
	if (!p)
		throw errnoError(env, errno, "mmap");
	return wrapRegion(env, p, size, RegionKind::mmap);
}

Napi::Value Munmap(const Napi::CallbackInfo &info)
{
	freeRegion(info, RegionKind::mmap);
	return info.Env().Undefined();
}

/* Address of a registered region's first byte, or undefined. */
Napi::Value RegionAddress(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	if (info.Length() < 1 || !info[0].IsArrayBuffer())
		throwArg(env, "buffer must be an ArrayBuffer");
	void *p = info[0].As<Napi::ArrayBuffer>().Data();
	std::lock_guard<std::mutex> g(regionsLock);
	if (!p || regions.find(p) == regions.end())
		return env.Undefined();
	return Napi::Number::New(env, (double)(uintptr_t)p);
}

Napi::Value MemStats(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	Napi::Object o = Napi::Object::New(env);
	o.Set("alignedLive", Napi::Number::New(env, (double)blockio_aligned_live()));
	o.Set("mmapLive", Napi::Number::New(env, (double)blockio_mmap_live()));
	return o;
}

/*
 * crc32c(data: Uint8Array, seed = 0, start = 0, end = data.length): CRC-32C of
 * data[start, end) (a range, so that callers checksumming part of a node need
 * no subarray per call), chained from seed. Called per bset header and per
 * bset on every node read, so each argument costs one N-API call
 * (napi_get_typedarray_info answers type, length and data at once): the
 * node-addon-api type tests and unwraps cost more than the checksum of a
 * 36-byte header.
 */
Napi::Value Crc32c(const Napi::CallbackInfo &info)
{
	napi_env env = info.Env();
	napi_typedarray_type type;
	size_t len = 0;
	void *data = nullptr;
	if (info.Length() < 1 || napi_get_typedarray_info(env, info[0], &type, &len, &data, nullptr, nullptr) != napi_ok ||
	    type != napi_uint8_array)
		throwArg(info.Env(), "data must be a Uint8Array");
	uint32_t seed = (uint32_t)optInteger(info, 1, "seed", 0, 4294967295.0, 0);
	double end = optInteger(info, 3, "end", 0, (double)len, (double)len);
	double start = optInteger(info, 2, "start", 0, end, 0);
	uint32_t crc = blockio_crc32c(seed, static_cast<const uint8_t *>(data) + (size_t)start, (uint64_t)(end - start));
	napi_value out;
	napi_create_uint32(env, crc, &out);
	return Napi::Value(env, out);
}

/*
 * gather(dst: Uint8Array, dstOff, src: Uint8Array, spans: Uint32Array, nr): blockio_gather into
 * dst from dstOff; every span inside src, the total inside dst, and no span overlapping the
 * destination range. Returns the bytes copied.
 */
Napi::Value Gather(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	for (size_t i : {0, 2})
		if (info.Length() <= i || !info[i].IsTypedArray() ||
		    info[i].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
			throwArg(env, i ? "src must be a Uint8Array" : "dst must be a Uint8Array");
	if (info.Length() <= 3 || !info[3].IsTypedArray() ||
	    info[3].As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array)
		throwArg(env, "spans must be a Uint32Array");
	Napi::Uint8Array dst = info[0].As<Napi::Uint8Array>();
	Napi::Uint8Array src = info[2].As<Napi::Uint8Array>();
	Napi::Uint32Array spans = info[3].As<Napi::Uint32Array>();
	uint64_t dstOff = (uint64_t)argInteger(info, 1, "dstOff", 0, (double)dst.ByteLength());
	uint32_t nr = (uint32_t)argInteger(info, 4, "nr", 0, (double)(spans.ElementLength() / 2));
	const uint32_t *sp = spans.Data();
	uintptr_t d0 = (uintptr_t)dst.Data() + dstOff, s0 = (uintptr_t)src.Data();
	uint64_t total = 0;
	for (uint32_t i = 0; i < nr; i++) {
		uint64_t off = sp[2 * i], len = sp[2 * i + 1];
		if (off + len > src.ByteLength())
			throwArg(env, "spans[" + std::to_string(i) + "] runs past the end of src");
		total += len;
	}
	if (total > dst.ByteLength() - dstOff)
		throwArg(env, "the spans do not fit dst");
	for (uint32_t i = 0; i < nr; i++) {
		uintptr_t a = s0 + sp[2 * i], e = a + sp[2 * i + 1];
		if (a < d0 + total && d0 < e)
			throwArg(env, "spans[" + std::to_string(i) + "] overlaps the destination");
	}
	return Napi::Number::New(env, (double)blockio_gather(dst.Data() + dstOff, src.Data(), sp, nr));
}

Napi::Value ErrnoName(const Napi::CallbackInfo &info)
{
	int e = (int)argInteger(info, 0, "errno", -1e9, 1e9);
	return Napi::String::New(info.Env(), blockio_errno_name(e));
}

Napi::Object Init(Napi::Env env, Napi::Object exports)
{
	exports.Set("open", Napi::Function::New(env, Open, "open"));
	exports.Set("close", Napi::Function::New(env, Close, "close"));
	exports.Set("lock", Napi::Function::New(env, Lock, "lock"));
	exports.Set("extend", Napi::Function::New(env, Extend, "extend"));
	exports.Set("fdKind", Napi::Function::New(env, FdKind, "fdKind"));
	exports.Set("sizeBytes", Napi::Function::New(env, SizeBytes, "sizeBytes"));
	exports.Set("alignBytes", Napi::Function::New(env, AlignBytes, "alignBytes"));
	exports.Set("preadSync", Napi::Function::New(env, PreadSync, "preadSync"));
	exports.Set("pwriteSync", Napi::Function::New(env, PwriteSync, "pwriteSync"));
	exports.Set("fdatasyncSync", Napi::Function::New(env, FdatasyncSync, "fdatasyncSync"));
	exports.Set("pread", Napi::Function::New(env, Pread, "pread"));
	exports.Set("pwrite", Napi::Function::New(env, Pwrite, "pwrite"));
	exports.Set("fdatasync", Napi::Function::New(env, Fdatasync, "fdatasync"));
	exports.Set("pwriteDatasync", Napi::Function::New(env, PwriteDatasync, "pwriteDatasync"));
	exports.Set("batch", Napi::Function::New(env, Batch, "batch"));
	exports.Set("useEventRing", Napi::Function::New(env, UseEventRing, "useEventRing"));
	exports.Set("asyncEngine", Napi::Function::New(env, AsyncEngine, "asyncEngine"));
	exports.Set("eventRingStats", Napi::Function::New(env, EventRingStats, "eventRingStats"));
	exports.Set("uringSupported", Napi::Function::New(env, UringSupported, "uringSupported"));
	exports.Set("uringDepth", Napi::Number::New(env, blockio_uring_depth()));
	exports.Set("allocAligned", Napi::Function::New(env, AllocAligned, "allocAligned"));
	exports.Set("freeAligned", Napi::Function::New(env, FreeAligned, "freeAligned"));
	exports.Set("mmapAnon", Napi::Function::New(env, MmapAnon, "mmapAnon"));
	exports.Set("munmap", Napi::Function::New(env, Munmap, "munmap"));
	exports.Set("regionAddress", Napi::Function::New(env, RegionAddress, "regionAddress"));
	exports.Set("memStats", Napi::Function::New(env, MemStats, "memStats"));
	exports.Set("crc32c", Napi::Function::New(env, Crc32c, "crc32c"));
	exports.Set("crc32cImpl", Napi::String::New(env, blockio_crc32c_impl()));
	exports.Set("gather", Napi::Function::New(env, Gather, "gather"));
	exports.Set("errnoName", Napi::Function::New(env, ErrnoName, "errnoName"));
	exports.Set("noDirectIoErrno", Napi::Number::New(env, blockio_errno_no_direct_io()));
	exports.Set("shortReadErrno", Napi::Number::New(env, blockio_errno_short_read()));
	exports.Set("sectorBytes", Napi::Number::New(env, blockio_sector_bytes()));
	exports.Set("pageBytes", Napi::Number::New(env, blockio_page_bytes()));
	return exports;
}

} // namespace

NODE_API_MODULE(sixtree, Init)
