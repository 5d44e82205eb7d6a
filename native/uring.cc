// The uring part's native side (the design: uring.h). lib/uring/ validates
// every argument, keeps the views of in-flight operations reachable and
// settles the promises; this file owns the ring, the memory lent to the
// kernel, and the event-loop plumbing.
//
// Everything here runs on the thread that made the ring (the JS thread), so
// nothing is locked; the rings shared with the kernel are read and written
// with acquire/release ordering.
#include "uring.h"

#include <linux/io_uring.h>
#include <uv.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "addon.h"
#include "errors.h"
#include "iovec.h"
#include "memory.h"
#include "os.h"

namespace iobuf {
namespace {

// ---------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------

// user_data of an ASYNC_CANCEL SQE; an operation's is (generation << 32) | slot
// with a 31-bit generation, so the two never collide.
constexpr uint64_t kCancelTag = uint64_t{1} << 63;
constexpr uint32_t kGenerationMask = 0x7fffffff;
// The most bytes one read or write moves (the kernel's MAX_RW_COUNT).
constexpr uint32_t kMaxTransfer = 0x7ffff000;
// Bounce buffers keep the user's address modulo this, so that an O_DIRECT
// transfer is refused (EINVAL) or accepted exactly as it would be in place.
constexpr uintptr_t kBounceAlignment = 4096;
// Worker teardown waits this many one-second rounds for the kernel to give
// back memory of cancelled operations before it gives up and leaks it
// (mapped and pinned for good, which is safe) rather than hang the thread.
constexpr int kTeardownRounds = 30;

// The features a ring needs; all present since Linux 5.13.
constexpr uint32_t kRequiredFeatures = IORING_FEAT_SINGLE_MMAP | IORING_FEAT_NODROP |
                                       IORING_FEAT_SUBMIT_STABLE | IORING_FEAT_RW_CUR_POS |
                                       IORING_FEAT_EXT_ARG | IORING_FEAT_RSRC_TAGS;

template <typename T>
T LoadAcquire(const T* location) {
  return __atomic_load_n(location, __ATOMIC_ACQUIRE);
}

template <typename T>
void StoreRelease(T* location, T value) {
  __atomic_store_n(location, value, __ATOMIC_RELEASE);
}

// ---------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------

// A range of V8-heap memory that the kernel sees through a bounce buffer.
struct Bounce {
  uint8_t* user;    // the JS view's bytes
  uint8_t* bounce;  // what the kernel reads or writes
  size_t length;
  size_t at;    // where this range starts in the transfer (vectored: sum of the entries before)
  void* block;  // the allocation holding `bounce`
};

struct Operation {
  enum class State : uint8_t {
    kFree,
    kQueued,     // accepted, waiting for room in the kernel (backlog)
    kSubmitted,  // an SQE was published; its CQE has not been reaped
    kCompleted,  // reaped; a bounced read waits for uringCopyOut
  };
  State state = State::kFree;
  UringOp op = UringOp::kRead;
  bool cancelRequested = false;
  uint32_t generation = 0;
  int32_t result = 0;
  int fd = -1;
  uint64_t offset = 0;
  // read/write: one range; fixed when bufferIndex >= 0.
  uint8_t* address = nullptr;
  uint32_t length = 0;
  int32_t bufferIndex = -1;
  uint32_t fsyncFlags = 0;
  // readv/writev: the entries the kernel is given (bounce addresses where bounced).
  std::vector<struct iovec> entries;
  std::vector<Bounce> bounces;
  std::vector<Allocation*> pinned;
};

// One registered buffer: [start, end) is fixed buffer `index`.
struct RegisteredBuffer {
  uintptr_t start;
  uintptr_t end;
  uint32_t index;
};

struct Ring {
  napi_env env = nullptr;
  int ringFd = -1;
  int eventFd = -1;
  unsigned sqEntries = 0;
  unsigned cqEntries = 0;
  os::Mapping ringsMapping;  // SQ and CQ rings (IORING_FEAT_SINGLE_MMAP)
  os::Mapping sqesMapping;

  // Inside the shared rings.
  unsigned* sqHead = nullptr;  // the kernel's
  unsigned* sqTail = nullptr;  // ours
  unsigned sqMask = 0;
  io_uring_sqe* sqes = nullptr;
  unsigned* cqHead = nullptr;  // ours
  unsigned* cqTail = nullptr;  // the kernel's
  unsigned cqMask = 0;
  io_uring_cqe* cqes = nullptr;

  unsigned sqTailLocal = 0;  // == *sqTail: only this thread writes it
  unsigned unsubmitted = 0;  // SQEs published that no io_uring_enter has taken yet
  unsigned inKernel = 0;     // SQEs published (operations and cancels) whose CQE is not reaped
  unsigned operationsInKernel = 0;
  unsigned operationLimit = 0;  // operations in the kernel at once; beyond, the backlog

  std::vector<std::unique_ptr<Operation>> operations;  // by slot
  std::vector<uint32_t> freeSlots;
  std::deque<uint32_t> backlog;
  std::deque<uint32_t> cancelBacklog;  // cancels that found the SQ ring full
  size_t live = 0;                     // operations queued or submitted

  std::vector<RegisteredBuffer> registered;  // sorted by start
  std::vector<Allocation*> registeredPins;
  uint32_t tableSize = 0;  // slots of the sparse fixed-buffer table (0: none)

  uint8_t* control = nullptr;  // the control block (uring.h)
  double* counters = nullptr;
  int32_t* completions = nullptr;
  uint32_t completionCapacity = 0;

  uv_poll_t* poll = nullptr;
  bool referenced = false;  // the poll handle and the dispatcher are held
  napi_ref dispatcher = nullptr;
  napi_async_cleanup_hook_handle cleanupHook = nullptr;

  bool shutDown = false;    // operations released, rings unmapped, ring fd closed
  bool leaked = false;      // teardown gave up waiting for the kernel
  bool pollClosed = false;  // uv_close's callback ran
  bool finalized = false;   // the control block's ArrayBuffer was collected
};

Ring* RingOf(napi_env env, napi_value handle) {
  void* data = nullptr;
  if (napi_get_arraybuffer_info(env, handle, &data, nullptr) != napi_ok || data == nullptr) return nullptr;
  return *static_cast<Ring**>(data);
}

Napi::Error ClosedError(Napi::Env env) {
  return MakeError(env, "ERR_IOBUF_URING_CLOSED", "This IoRing is closed");
}

// ---------------------------------------------------------------------------
// Availability
// ---------------------------------------------------------------------------

// Why io_uring_setup failed with `error`, in words a user can act on.
std::string Explain(int error) {
  switch (error) {
    case ENOSYS:
      return "this kernel has no io_uring (older than Linux 5.1, or built without CONFIG_IO_URING)";
    case EPERM:
    case EACCES: {
      long disabled = os::ReadSysctl("/proc/sys/kernel/io_uring_disabled", -1);
      if (disabled == 2) return "io_uring is switched off (sysctl kernel.io_uring_disabled=2)";
      if (disabled == 1) {
        return "sysctl kernel.io_uring_disabled=1 allows io_uring only to CAP_SYS_ADMIN and to the "
               "group in kernel.io_uring_group";
      }
      return "io_uring_setup was refused: a seccomp filter blocks io_uring (the default profiles of "
             "Docker, containerd and Podman do)";
    }
    case ENOMEM:
      return "not enough memory for the rings (before Linux 5.12 they count against RLIMIT_MEMLOCK)";
    case EINVAL: return "the kernel refused the ring's parameters (Linux 5.13 or later is needed)";
    default: return "io_uring_setup failed";
  }
}

// True when io_uring_setup's failure means "not available here", not a
// passing shortage (EMFILE, ENOMEM) that the caller should see as such.
bool MeansUnavailable(int error) {
  return error == ENOSYS || error == EPERM || error == EACCES || error == EINVAL;
}

constexpr const char* kTooOld =
    "this kernel's io_uring lacks features IoRing needs (Linux 5.13 or later is needed)";

// io_uring_setup with the flags we want, dropping the ones an older kernel refuses.
int Setup(unsigned entries, io_uring_params* params) {
  const unsigned flagSets[] = {IORING_SETUP_CLAMP | IORING_SETUP_SUBMIT_ALL, IORING_SETUP_CLAMP};
  int fd = -EINVAL;
  for (unsigned flags : flagSets) {
    memset(params, 0, sizeof *params);
    params->flags = flags;
    fd = os::UringSetup(entries, params);
    if (fd != -EINVAL) break;
  }
  return fd;
}

// uringProbe() -> null, or [code, errno (negative, 0 when none), reason]:
// whether a ring can be made here, by making a small one.
Napi::Value Probe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  io_uring_params params;
  int fd = Setup(2, &params);
  auto failure = [&](const char* code, int error, const std::string& reason) {
    Napi::Array result = Napi::Array::New(env, 3);
    result.Set(0u, Napi::String::New(env, code));
    result.Set(1u, Napi::Number::New(env, -error));
    result.Set(2u, Napi::String::New(env, reason));
    return result;
  };
  if (fd < 0) {
    const char* name = ErrnoNameOf(-fd);
    return failure(name != nullptr ? name : "EUNKNOWN", -fd, Explain(-fd));
  }
  os::CloseFd(fd);
  if ((params.features & kRequiredFeatures) != kRequiredFeatures) {
    return failure("ERR_IOBUF_UNSUPPORTED", 0, kTooOld);
  }
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
    return failure("ERR_IOBUF_UNSUPPORTED", 0, "this runtime gives addons no libuv event loop");
  }
  return env.Null();
}

// ---------------------------------------------------------------------------
// Submission
// ---------------------------------------------------------------------------

// Submits every published SQE. Failures other than EINTR leave them in the
// SQ ring; the next flush (a JS tick, a wakeup) tries again.
void Flush(Ring* ring) {
  while (ring->unsubmitted > 0) {
    int submitted = os::UringEnter(ring->ringFd, ring->unsubmitted, 0, 0, nullptr, 0);
    ring->counters[kEnterCalls]++;
    if (submitted == -EINTR) continue;
    if (submitted <= 0) return;
    ring->unsubmitted -= std::min(ring->unsubmitted, static_cast<unsigned>(submitted));
  }
}

// The next free SQE, zeroed, or null when the SQ ring stays full even after a flush.
io_uring_sqe* NextSqe(Ring* ring) {
  if (ring->sqTailLocal - LoadAcquire(ring->sqHead) >= ring->sqEntries) {
    Flush(ring);
    if (ring->sqTailLocal - LoadAcquire(ring->sqHead) >= ring->sqEntries) return nullptr;
  }
  io_uring_sqe* sqe = &ring->sqes[ring->sqTailLocal & ring->sqMask];
  memset(sqe, 0, sizeof *sqe);
  return sqe;
}

// Makes the SQE filled last visible to the kernel (taken at the next flush).
void Publish(Ring* ring) {
  ring->sqTailLocal++;
  StoreRelease(ring->sqTail, ring->sqTailLocal);
  ring->unsubmitted++;
  ring->inKernel++;
}

uint64_t UserData(const Operation& operation, uint32_t slot) {
  return (uint64_t{operation.generation} << 32) | slot;
}

void Fill(io_uring_sqe* sqe, const Operation& operation, uint32_t slot) {
  sqe->fd = operation.fd;
  sqe->off = operation.offset;
  sqe->user_data = UserData(operation, slot);
  switch (operation.op) {
    case UringOp::kRead:
    case UringOp::kWrite: {
      const bool read = operation.op == UringOp::kRead;
      if (operation.bufferIndex >= 0) {
        sqe->opcode = read ? IORING_OP_READ_FIXED : IORING_OP_WRITE_FIXED;
        sqe->buf_index = static_cast<uint16_t>(operation.bufferIndex);
      } else {
        sqe->opcode = read ? IORING_OP_READ : IORING_OP_WRITE;
      }
      sqe->addr = reinterpret_cast<uint64_t>(operation.address);
      sqe->len = operation.length;
      break;
    }
    case UringOp::kReadv:
    case UringOp::kWritev:
      sqe->opcode = operation.op == UringOp::kReadv ? IORING_OP_READV : IORING_OP_WRITEV;
      sqe->addr = reinterpret_cast<uint64_t>(operation.entries.data());
      sqe->len = static_cast<uint32_t>(operation.entries.size());
      break;
    case UringOp::kFsync:
      sqe->opcode = IORING_OP_FSYNC;
      sqe->off = 0;
      sqe->fsync_flags = operation.fsyncFlags;
      break;
  }
}

// Puts the operation in slot into the SQ ring; false when there is no room.
bool SubmitOperation(Ring* ring, uint32_t slot) {
  if (ring->operationsInKernel >= ring->operationLimit) return false;
  io_uring_sqe* sqe = NextSqe(ring);
  if (sqe == nullptr) return false;
  Operation& operation = *ring->operations[slot];
  Fill(sqe, operation, slot);
  Publish(ring);
  ring->operationsInKernel++;
  operation.state = Operation::State::kSubmitted;
  return true;
}

bool SubmitCancel(Ring* ring, uint32_t slot) {
  io_uring_sqe* sqe = NextSqe(ring);
  if (sqe == nullptr) return false;
  Operation& operation = *ring->operations[slot];
  sqe->opcode = IORING_OP_ASYNC_CANCEL;
  sqe->fd = -1;
  sqe->addr = UserData(operation, slot);
  sqe->user_data = kCancelTag | slot;
  Publish(ring);
  ring->counters[kCancels]++;
  return true;
}

// Asks the kernel to cancel the submitted operation in slot (once).
void RequestCancel(Ring* ring, uint32_t slot) {
  Operation& operation = *ring->operations[slot];
  if (operation.cancelRequested || operation.state != Operation::State::kSubmitted) return;
  operation.cancelRequested = true;
  if (!SubmitCancel(ring, slot)) ring->cancelBacklog.push_back(slot);
}

// Moves queued operations (and cancels) into the SQ ring while there is room.
void SubmitBacklog(Ring* ring) {
  while (!ring->cancelBacklog.empty()) {
    uint32_t slot = ring->cancelBacklog.front();
    Operation& operation = *ring->operations[slot];
    if (operation.state == Operation::State::kSubmitted && !SubmitCancel(ring, slot)) break;
    ring->cancelBacklog.pop_front();
  }
  while (!ring->backlog.empty() && SubmitOperation(ring, ring->backlog.front())) ring->backlog.pop_front();
}

// ---------------------------------------------------------------------------
// Operation records
// ---------------------------------------------------------------------------

uint32_t AllocateSlot(Ring* ring) {
  if (!ring->freeSlots.empty()) {
    uint32_t slot = ring->freeSlots.back();
    ring->freeSlots.pop_back();
    return slot;
  }
  ring->operations.push_back(std::make_unique<Operation>());
  return static_cast<uint32_t>(ring->operations.size() - 1);
}

// Gives everything the operation held back (pins, bounce buffers) and frees
// the slot. Only once the kernel is done with it, or never had it.
void Release(Ring* ring, uint32_t slot) {
  Operation& operation = *ring->operations[slot];
  UnpinAllocations(operation.pinned);
  operation.pinned.clear();
  for (const Bounce& bounce : operation.bounces) free(bounce.block);
  operation.bounces.clear();
  operation.entries.clear();
  operation.state = Operation::State::kFree;
  operation.cancelRequested = false;
  operation.generation = (operation.generation + 1) & kGenerationMask;
  ring->freeSlots.push_back(slot);
}

bool NeedsCopyOut(const Operation& operation) {
  return (operation.op == UringOp::kRead || operation.op == UringOp::kReadv) && !operation.bounces.empty() &&
         operation.result > 0;
}

// The registered buffer that holds all of [address, address + length), or null.
const RegisteredBuffer* FindRegistered(const Ring* ring, const uint8_t* address, size_t length) {
  auto start = reinterpret_cast<uintptr_t>(address);
  auto found =
      std::upper_bound(ring->registered.begin(), ring->registered.end(), start,
                       [](uintptr_t value, const RegisteredBuffer& buffer) { return value < buffer.start; });
  if (found == ring->registered.begin()) return nullptr;
  --found;
  return start < found->end && length <= found->end - start ? &*found : nullptr;
}

// Decides how the kernel reaches [address, address + length) and records it
// in the operation: registered (returns kSubmitFixed, sets *bufferIndex when
// asked), pinned native memory (kSubmitInPlace), or a bounce buffer
// (kSubmitBounced: *kernelAddress becomes the bounce address; a write's bytes
// are copied in now). Throws ENOMEM when no bounce buffer can be had.
uint32_t Lend(Napi::Env env, Ring* ring, Operation* operation, uint8_t* address, size_t length, size_t at,
              bool allowFixed, uint8_t** kernelAddress) {
  *kernelAddress = address;
  if (length == 0) return 0;
  if (const RegisteredBuffer* buffer = FindRegistered(ring, address, length)) {
    if (allowFixed) operation->bufferIndex = static_cast<int32_t>(buffer->index);
    return kSubmitFixed;
  }
  struct iovec entry = {address, length};
  size_t before = operation->pinned.size();
  PinAllocations(&entry, 1, &operation->pinned);
  if (operation->pinned.size() > before) return kSubmitInPlace;
  void* block = nullptr;
  if (posix_memalign(&block, kBounceAlignment, length + kBounceAlignment) != 0) {
    throw MakeErrnoError(env, ENOMEM, "posix_memalign", nullptr, "no memory for a bounce buffer");
  }
  uint8_t* bounce =
      static_cast<uint8_t*>(block) + (reinterpret_cast<uintptr_t>(address) & (kBounceAlignment - 1));
  operation->bounces.push_back({address, bounce, length, at, block});
  if (operation->op == UringOp::kWrite || operation->op == UringOp::kWritev) memcpy(bounce, address, length);
  *kernelAddress = bounce;
  return kSubmitBounced;
}

// ---------------------------------------------------------------------------
// Completion
// ---------------------------------------------------------------------------

// Reaps up to `limit` CQEs. Each completed operation gives its memory back
// (a bounced read waits for uringCopyOut); with `record`, its {slot, result}
// goes into the control block for the dispatcher. Returns the operations reaped.
uint32_t Reap(Ring* ring, bool record, uint32_t limit) {
  unsigned head = *ring->cqHead;
  const unsigned tail = LoadAcquire(ring->cqTail);
  uint32_t count = 0;
  while (head != tail && count < limit) {
    const io_uring_cqe& cqe = ring->cqes[head & ring->cqMask];
    head++;
    ring->inKernel--;
    if ((cqe.user_data & kCancelTag) != 0) continue;
    const auto slot = static_cast<uint32_t>(cqe.user_data);
    if (slot >= ring->operations.size()) continue;
    Operation& operation = *ring->operations[slot];
    if (operation.state != Operation::State::kSubmitted ||
        operation.generation != ((cqe.user_data >> 32) & kGenerationMask)) {
      continue;
    }
    ring->operationsInKernel--;
    ring->live--;
    operation.result = cqe.res;
    if (record && NeedsCopyOut(operation)) {
      operation.state = Operation::State::kCompleted;
    } else {
      Release(ring, slot);
    }
    if (record) {
      ring->completions[2 * count] = static_cast<int32_t>(slot);
      ring->completions[2 * count + 1] = cqe.res;
    }
    count++;
  }
  StoreRelease(ring->cqHead, head);
  if (ring->counters != nullptr) ring->counters[kCompletions] += count;
  return count;
}

// Holds the loop open (and the JS dispatcher alive) exactly while operations are live.
void UpdateReference(Ring* ring) {
  const bool busy = ring->live > 0;
  if (busy == ring->referenced || ring->shutDown) return;
  ring->referenced = busy;
  uv_handle_t* handle = reinterpret_cast<uv_handle_t*>(ring->poll);
  if (busy) {
    uv_ref(handle);
    napi_reference_ref(ring->env, ring->dispatcher, nullptr);
  } else {
    uv_unref(handle);
    napi_reference_unref(ring->env, ring->dispatcher, nullptr);
  }
}

// Calls the JS dispatcher with `count` completions in the control block.
// Promise reactions (and so the operations they start) run before it returns.
void Dispatch(Ring* ring, uint32_t count) {
  napi_env env = ring->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value dispatcher = nullptr;
  napi_value global = nullptr;
  napi_value argument = nullptr;
  napi_get_reference_value(env, ring->dispatcher, &dispatcher);
  napi_get_global(env, &global);
  napi_create_uint32(env, count, &argument);
  if (dispatcher != nullptr) {
    napi_value result;
    napi_status status = napi_make_callback(env, nullptr, global, dispatcher, 1, &argument, &result);
    if (status == napi_pending_exception) {
      napi_value error;
      napi_get_and_clear_last_exception(env, &error);
      napi_fatal_exception(env, error);
    }
  }
  napi_close_handle_scope(env, scope);
}

void OnReadable(uv_poll_t* handle, int status, int events) {
  Ring* ring = static_cast<Ring*>(handle->data);
  if (ring->shutDown) return;
  os::DrainEventFd(ring->eventFd);
  ring->counters[kWakeups]++;
  for (;;) {
    uint32_t count = Reap(ring, true, ring->completionCapacity);
    SubmitBacklog(ring);
    if (count == 0) break;
    Dispatch(ring, count);
    if (ring->shutDown) return;                   // closed by the dispatcher
    if (count < ring->completionCapacity) break;  // later CQEs signal the eventfd again
  }
  Flush(ring);
  UpdateReference(ring);
}

// ---------------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------------

void DeleteIfDone(Ring* ring) {
  if (ring->pollClosed && ring->finalized) delete ring;
}

void OnPollClosed(uv_handle_t* handle) {
  Ring* ring = static_cast<Ring*>(handle->data);
  delete ring->poll;
  ring->poll = nullptr;
  if (ring->cleanupHook != nullptr) {
    napi_remove_async_cleanup_hook(ring->cleanupHook);
    ring->cleanupHook = nullptr;
  }
  ring->pollClosed = true;
  DeleteIfDone(ring);
}

// Takes back everything the kernel has: queued operations are dropped,
// submitted ones cancelled, and this thread waits (in io_uring_enter) until
// every CQE is in. No JS runs. Used by worker teardown and by a collected
// ring; a JS close() has nothing in flight by then (lib/uring/ waits).
void CancelAndWait(Ring* ring) {
  for (uint32_t slot : ring->backlog) {
    ring->live--;
    Release(ring, slot);
  }
  ring->backlog.clear();
  for (uint32_t slot = 0; slot < ring->operations.size(); slot++) {
    Operation& operation = *ring->operations[slot];
    if (operation.state == Operation::State::kCompleted) Release(ring, slot);
    if (operation.state == Operation::State::kSubmitted) RequestCancel(ring, slot);
  }
  int rounds = 0;
  for (;;) {
    Reap(ring, false, UINT32_MAX);
    SubmitBacklog(ring);
    if (ring->inKernel == 0 && ring->cancelBacklog.empty()) break;
    __kernel_timespec timeout = {1, 0};
    io_uring_getevents_arg argument = {};
    argument.ts = reinterpret_cast<uint64_t>(&timeout);
    int waited = os::UringEnter(ring->ringFd, ring->unsubmitted, 1,
                                IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG, &argument, sizeof argument);
    if (waited > 0) ring->unsubmitted -= std::min(ring->unsubmitted, static_cast<unsigned>(waited));
    if (waited == -ETIME && ++rounds >= kTeardownRounds) {
      ring->leaked = true;
      return;
    }
    if (waited < 0 && waited != -ETIME && waited != -EINTR && waited != -EAGAIN && waited != -EBUSY) {
      ring->leaked = true;
      return;
    }
  }
}

// Closes the ring for good (idempotent). After it nothing of the kernel's
// refers to JS-visible memory any more, unless teardown had to give up
// (`leaked`: the memory then stays pinned and mapped).
void Shutdown(Ring* ring) {
  if (ring->shutDown) return;
  if (ring->live > 0 || ring->inKernel > 0) CancelAndWait(ring);
  ring->shutDown = true;
  if (!ring->leaked) {
    for (uint32_t slot = 0; slot < ring->operations.size(); slot++) {
      if (ring->operations[slot]->state == Operation::State::kCompleted) Release(ring, slot);
    }
  }
  if (ring->tableSize > 0) os::UringRegister(ring->ringFd, IORING_UNREGISTER_BUFFERS, nullptr, 0);
  if (!ring->leaked) UnpinAllocations(ring->registeredPins);
  ring->registeredPins.clear();
  os::Unmap(ring->sqesMapping);
  os::Unmap(ring->ringsMapping);
  os::CloseFd(ring->ringFd);
  ring->ringFd = -1;
  if (!ring->finalized) *reinterpret_cast<Ring**>(ring->control) = nullptr;
  if (ring->dispatcher != nullptr) {
    napi_delete_reference(ring->env, ring->dispatcher);
    ring->dispatcher = nullptr;
  }
  // Stopping takes the eventfd out of epoll at once, so it can be closed now
  // (close() leaves no fd behind); the handle itself goes in the close callback.
  uv_poll_stop(ring->poll);
  os::CloseFd(ring->eventFd);
  ring->eventFd = -1;
  uv_close(reinterpret_cast<uv_handle_t*>(ring->poll), OnPollClosed);
}

// Node-API runs this when the ring's environment ends (worker.terminate(),
// the thread returning, process exit) — JS does not run any more then.
void OnEnvironmentCleanup(napi_async_cleanup_hook_handle handle, void* data) {
  auto* ring = static_cast<Ring*>(data);
  ring->cleanupHook = handle;
  Shutdown(ring);  // (a no-op when close() ran: OnPollClosed then removes the hook)
}

// The control block's ArrayBuffer was collected: JS cannot reach the ring any
// more, so nothing is in flight (the dispatcher, which JS holds the ring
// through, is referenced while anything is) unless the environment is ending.
void FinalizeControl(napi_env, void* data, void* hint) {
  auto* ring = static_cast<Ring*>(hint);
  Shutdown(ring);
  ring->finalized = true;
  free(ring->control);
  ring->control = nullptr;
  ring->counters = nullptr;
  ring->completions = nullptr;
  DeleteIfDone(ring);
}

// ---------------------------------------------------------------------------
// Creation
// ---------------------------------------------------------------------------

// Unwinds a ring whose creation failed part-way (before the poll handle existed).
void DestroyUnfinished(Ring* ring) {
  os::Unmap(ring->sqesMapping);
  os::Unmap(ring->ringsMapping);
  os::CloseFd(ring->ringFd);
  os::CloseFd(ring->eventFd);
  free(ring->control);
  delete ring;
}

// Registers an empty fixed-buffer table of `size` slots (filled later by
// uringRegister). Sparse registration is Linux 5.19; 5.13 takes a table of
// empty iovecs instead.
int RegisterTable(Ring* ring, uint32_t size) {
  io_uring_rsrc_register request = {};
  request.nr = size;
  request.flags = IORING_RSRC_REGISTER_SPARSE;
  int result = os::UringRegister(ring->ringFd, IORING_REGISTER_BUFFERS2, &request, sizeof request);
  if (result != -EINVAL) return result;
  std::vector<struct iovec> empty(size, iovec{nullptr, 0});
  return os::UringRegister(ring->ringFd, IORING_REGISTER_BUFFERS, empty.data(), size);
}

// uringCreate(entries, tableSize, dispatcher) -> [handle, sqEntries, completionCapacity]
// Preconditions (lib/uring/): entries in [1, 4096], tableSize in [0, 16384].
Napi::Value Create(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const unsigned entries = info[0].As<Napi::Number>().Uint32Value();
  const uint32_t tableSize = info[1].As<Napi::Number>().Uint32Value();
  assert(entries >= 1 && entries <= 4096);
  assert(tableSize <= 16384);
  Napi::Function dispatcher = info[2].As<Napi::Function>();

  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
    throw MakeError(env, "ERR_IOBUF_URING_UNAVAILABLE", "this runtime gives addons no libuv event loop");
  }
  auto* ring = new Ring();
  ring->env = env;
  io_uring_params params;
  ring->ringFd = Setup(entries, &params);
  if (ring->ringFd < 0) {
    int error = -ring->ringFd;
    delete ring;
    if (!MeansUnavailable(error)) throw MakeErrnoError(env, error, "io_uring_setup");
    Napi::Error failure =
        MakeErrnoError(env, error, "io_uring_setup", "ERR_IOBUF_URING_UNAVAILABLE", Explain(error));
    failure.Set("reason", Napi::String::New(env, Explain(error)));
    throw failure;
  }
  auto fail = [&](int error, const char* syscall, const std::string& detail = "") {
    DestroyUnfinished(ring);
    return MakeErrnoError(env, error, syscall, nullptr, detail);
  };
  if ((params.features & kRequiredFeatures) != kRequiredFeatures) {
    DestroyUnfinished(ring);
    Napi::Error failure =
        MakeError(env, "ERR_IOBUF_URING_UNAVAILABLE", std::string("ERR_IOBUF_URING_UNAVAILABLE: ") + kTooOld);
    failure.Set("reason", Napi::String::New(env, kTooOld));
    throw failure;
  }
  ring->sqEntries = params.sq_entries;
  ring->cqEntries = params.cq_entries;
  ring->operationLimit = std::min(params.sq_entries, params.cq_entries / 2);

  // One mapping holds both rings (IORING_FEAT_SINGLE_MMAP); the SQEs are another.
  const size_t sqBytes = params.sq_off.array + params.sq_entries * sizeof(unsigned);
  const size_t cqBytes = params.cq_off.cqes + params.cq_entries * sizeof(io_uring_cqe);
  if (os::Failure failure =
          os::MapShared(ring->ringFd, IORING_OFF_SQ_RING, std::max(sqBytes, cqBytes), &ring->ringsMapping)) {
    throw fail(failure.error, failure.syscall);
  }
  if (os::Failure failure = os::MapShared(ring->ringFd, IORING_OFF_SQES,
                                          params.sq_entries * sizeof(io_uring_sqe), &ring->sqesMapping)) {
    throw fail(failure.error, failure.syscall);
  }
  auto* rings = static_cast<uint8_t*>(ring->ringsMapping.base);
  ring->sqHead = reinterpret_cast<unsigned*>(rings + params.sq_off.head);
  ring->sqTail = reinterpret_cast<unsigned*>(rings + params.sq_off.tail);
  ring->sqMask = *reinterpret_cast<unsigned*>(rings + params.sq_off.ring_mask);
  auto* sqArray = reinterpret_cast<unsigned*>(rings + params.sq_off.array);
  for (unsigned i = 0; i < params.sq_entries; i++) sqArray[i] = i;  // SQE i is always at index i
  ring->sqes = static_cast<io_uring_sqe*>(ring->sqesMapping.base);
  ring->cqHead = reinterpret_cast<unsigned*>(rings + params.cq_off.head);
  ring->cqTail = reinterpret_cast<unsigned*>(rings + params.cq_off.tail);
  ring->cqMask = *reinterpret_cast<unsigned*>(rings + params.cq_off.ring_mask);
  ring->cqes = reinterpret_cast<io_uring_cqe*>(rings + params.cq_off.cqes);
  ring->sqTailLocal = *ring->sqTail;

  ring->eventFd = os::CreateEventFd();
  if (ring->eventFd < 0) throw fail(-ring->eventFd, "eventfd");
  if (int result = os::UringRegister(ring->ringFd, IORING_REGISTER_EVENTFD, &ring->eventFd, 1); result < 0) {
    throw fail(-result, "io_uring_register");
  }
  if (tableSize > 0) {
    if (int result = RegisterTable(ring, tableSize); result < 0) throw fail(-result, "io_uring_register");
    ring->tableSize = tableSize;
  }

  ring->completionCapacity = params.cq_entries;
  const size_t controlBytes = kUringControlHeaderBytes + kCounterCount * sizeof(double) +
                              2 * sizeof(int32_t) * ring->completionCapacity;
  void* control = nullptr;
  if (posix_memalign(&control, 64, controlBytes) != 0) throw fail(ENOMEM, "posix_memalign");
  memset(control, 0, controlBytes);
  ring->control = static_cast<uint8_t*>(control);
  *reinterpret_cast<Ring**>(ring->control) = ring;
  ring->counters = reinterpret_cast<double*>(ring->control + kUringControlHeaderBytes);
  ring->completions = reinterpret_cast<int32_t*>(ring->counters + kCounterCount);

  napi_value handle;
  if (napi_create_external_arraybuffer(env, ring->control, controlBytes, FinalizeControl, ring, &handle) !=
      napi_ok) {
    DestroyUnfinished(ring);
    throw MakeError(env, "ENOMEM", "cannot create the ring's control block");
  }
  // From here the ArrayBuffer's finalizer owns the control block and Shutdown the rest.
  napi_create_reference(env, dispatcher, 0, &ring->dispatcher);
  ring->poll = new uv_poll_t();
  ring->poll->data = ring;
  uv_poll_init(loop, ring->poll, ring->eventFd);
  uv_poll_start(ring->poll, UV_READABLE, OnReadable);
  uv_unref(reinterpret_cast<uv_handle_t*>(ring->poll));
  napi_add_async_cleanup_hook(env, OnEnvironmentCleanup, ring, &ring->cleanupHook);

  Napi::Array result = Napi::Array::New(env, 3);
  result.Set(0u, Napi::Value(env, handle));
  result.Set(1u, Napi::Number::New(env, params.sq_entries));
  result.Set(2u, Napi::Number::New(env, ring->completionCapacity));
  return result;
}

// ---------------------------------------------------------------------------
// Bindings: operations
// ---------------------------------------------------------------------------

// A view's bytes: data and length (0 and null for an empty view).
// Throws ERR_IOBUF_DETACHED when its ArrayBuffer is detached.
void ViewBytes(napi_env env, napi_value view, uint8_t** data, size_t* length) {
  bool isTypedArray = false;
  napi_is_typedarray(env, view, &isTypedArray);
  napi_value arrayBuffer = nullptr;
  void* raw = nullptr;
  size_t bytes = 0;
  if (isTypedArray) {
    napi_typedarray_type type;
    size_t elements = 0;
    NAPI_THROW_IF_FAILED_VOID(
        env, napi_get_typedarray_info(env, view, &type, &elements, &raw, &arrayBuffer, nullptr));
    size_t elementSize = 1;
    switch (type) {
      case napi_int16_array:
      case napi_uint16_array: elementSize = 2; break;
      case napi_int32_array:
      case napi_uint32_array:
      case napi_float32_array: elementSize = 4; break;
      case napi_float64_array:
      case napi_bigint64_array:
      case napi_biguint64_array: elementSize = 8; break;
      default: break;
    }
    bytes = elements * elementSize;
  } else {
    NAPI_THROW_IF_FAILED_VOID(env, napi_get_dataview_info(env, view, &bytes, &raw, &arrayBuffer, nullptr));
  }
  if (raw == nullptr || bytes == 0) {
    bool detached = false;
    napi_is_detached_arraybuffer(env, arrayBuffer, &detached);
    if (detached)
      throw MakeError(env, "ERR_IOBUF_DETACHED", "The buffer was freed or its ArrayBuffer detached");
    bytes = 0;
  }
  *data = static_cast<uint8_t*>(raw);
  *length = bytes;
}

uint64_t OffsetOf(double position) {
  return position < 0 ? ~uint64_t{0} : static_cast<uint64_t>(position);  // -1: the file position
}

// Accepts a prepared operation: into the SQ ring, or the backlog when the
// kernel has `operationLimit` already. Returns the submission result.
uint32_t Accept(Ring* ring, uint32_t slot, uint32_t flags) {
  if (!ring->backlog.empty() || !SubmitOperation(ring, slot)) {
    ring->operations[slot]->state = Operation::State::kQueued;
    ring->backlog.push_back(slot);
  }
  ring->live++;
  ring->counters[kOperations]++;
  if ((flags & kSubmitFixed) != 0) ring->counters[kFixedOps]++;
  if ((flags & kSubmitInPlace) != 0) ring->counters[kInPlaceOps]++;
  if ((flags & kSubmitBounced) != 0) ring->counters[kBouncedOps]++;
  UpdateReference(ring);
  return (slot << kSubmitSlotShift) | flags;
}

// uringTransfer(handle, op, fd, view, position) -> (slot << 3) | flags
// A read or write of the whole view at `position` (-1: the file position).
// The hot path: raw Node-API, fixed argument slots. Preconditions
// (lib/uring/): op is kRead or kWrite, fd an int32 >= 0, view a TypedArray
// or DataView, position an integer in [-1, 2^53).
napi_value Transfer(napi_env rawEnv, napi_callback_info info) {
  Napi::Env env(rawEnv);
  Ring* ring = nullptr;
  uint32_t slot = UINT32_MAX;
  try {
    size_t argc = 5;
    napi_value argv[5];
    napi_get_cb_info(rawEnv, info, &argc, argv, nullptr, nullptr);
    ring = RingOf(rawEnv, argv[0]);
    if (ring == nullptr || ring->shutDown) throw ClosedError(env);
    int32_t op = 0;
    int32_t fd = 0;
    double position = 0;
    napi_get_value_int32(rawEnv, argv[1], &op);
    napi_get_value_int32(rawEnv, argv[2], &fd);
    napi_get_value_double(rawEnv, argv[4], &position);
    uint8_t* data = nullptr;
    size_t length = 0;
    ViewBytes(rawEnv, argv[3], &data, &length);
    if (length > kMaxTransfer) length = kMaxTransfer;

    slot = AllocateSlot(ring);
    Operation& operation = *ring->operations[slot];
    operation.op = static_cast<UringOp>(op);
    operation.fd = fd;
    operation.offset = OffsetOf(position);
    operation.length = static_cast<uint32_t>(length);
    operation.bufferIndex = -1;
    uint32_t flags = Lend(env, ring, &operation, data, length, 0, true, &operation.address);
    napi_value result;
    napi_create_uint32(rawEnv, Accept(ring, slot, flags), &result);
    return result;
  } catch (const Napi::Error& error) {
    if (slot != UINT32_MAX) Release(ring, slot);
    error.ThrowAsJavaScriptException();
    return nullptr;
  }
}

// uringVectored(handle, op, fd, bounds, count, position) -> (slot << 3) | flags
// readv/writev over entries [0, count) of an IoVecArray (its private bounds
// buffer is its handle), checked and copied now: the kernel gets the copy.
// Preconditions (lib/uring/): op is kReadv or kWritev, count <= IOV_MAX,
// the array's views were checked and the array is lent until settled.
Napi::Value Vectored(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Ring* ring = RingOf(env, info[0]);
  if (ring == nullptr || ring->shutDown) throw ClosedError(env);
  const auto op = static_cast<UringOp>(info[1].As<Napi::Number>().Int32Value());
  const int fd = info[2].As<Napi::Number>().Int32Value();
  const uint32_t count = info[4].As<Napi::Number>().Uint32Value();
  const double position = info[5].As<Napi::Number>().DoubleValue();
  assert(op == UringOp::kReadv || op == UringOp::kWritev);
  assert(fd >= 0);
  const struct iovec* entries = CheckedEntries(env, info[3], count);

  uint32_t slot = AllocateSlot(ring);
  Operation& operation = *ring->operations[slot];
  operation.op = op;
  operation.fd = fd;
  operation.offset = OffsetOf(position);
  operation.bufferIndex = -1;
  operation.entries.assign(entries, entries + count);
  uint32_t flags = 0;
  try {
    size_t at = 0;
    for (struct iovec& entry : operation.entries) {
      uint8_t* kernelAddress = nullptr;
      flags |= Lend(env, ring, &operation, static_cast<uint8_t*>(entry.iov_base), entry.iov_len, at, false,
                    &kernelAddress);
      entry.iov_base = kernelAddress;
      at += entry.iov_len;
    }
  } catch (...) {
    Release(ring, slot);
    throw;
  }
  // Registered memory in a vectored call is used in place (there is no
  // READV_FIXED before Linux 6.15); it stays pinned by the registration.
  if ((flags & kSubmitFixed) != 0) flags = (flags & ~kSubmitFixed) | kSubmitInPlace;
  return Napi::Number::New(env, Accept(ring, slot, flags));
}

// uringFsync(handle, fd, datasync) -> (slot << 3)
Napi::Value Fsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Ring* ring = RingOf(env, info[0]);
  if (ring == nullptr || ring->shutDown) throw ClosedError(env);
  uint32_t slot = AllocateSlot(ring);
  Operation& operation = *ring->operations[slot];
  operation.op = UringOp::kFsync;
  operation.fd = info[1].As<Napi::Number>().Int32Value();
  operation.offset = 0;
  operation.fsyncFlags = info[2].As<Napi::Boolean>().Value() ? IORING_FSYNC_DATASYNC : 0;
  return Napi::Number::New(env, Accept(ring, slot, 0));
}

// uringSubmit(handle): one io_uring_enter for every SQE published since the
// last one (lib/uring/ calls it once per tick in which operations started).
napi_value Submit(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  Ring* ring = RingOf(env, argv[0]);
  if (ring != nullptr && !ring->shutDown) Flush(ring);
  return nullptr;
}

// Writes {slot, -ECANCELED} for a queued operation that never reached the
// kernel, releasing it. Returns false when the operation is not queued.
bool DropQueued(Ring* ring, uint32_t slot, uint32_t index) {
  Operation& operation = *ring->operations[slot];
  if (operation.state != Operation::State::kQueued) return false;
  ring->backlog.erase(std::find(ring->backlog.begin(), ring->backlog.end(), slot));
  ring->live--;
  Release(ring, slot);
  ring->completions[2 * index] = static_cast<int32_t>(slot);
  ring->completions[2 * index + 1] = -ECANCELED;
  return true;
}

// uringCancel(handle, slot) -> completions written (0 or 1)
// A queued operation is dropped now: {slot, -ECANCELED} is written as
// completion 0 and 1 returned (lib/uring/ dispatches it). A submitted one
// gets an ASYNC_CANCEL (sent at the next flush) and completes later.
Napi::Value Cancel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Ring* ring = RingOf(env, info[0]);
  const uint32_t slot = info[1].As<Napi::Number>().Uint32Value();
  if (ring == nullptr || ring->shutDown || slot >= ring->operations.size()) return Napi::Number::New(env, 0);
  if (DropQueued(ring, slot, 0)) {
    UpdateReference(ring);
    return Napi::Number::New(env, 1);
  }
  RequestCancel(ring, slot);
  return Napi::Number::New(env, 0);
}

// uringCancelAll(handle) -> completions written: every queued operation is
// dropped (up to the completion capacity per call: call again until 0), and
// every submitted one gets an ASYNC_CANCEL.
Napi::Value CancelAll(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Ring* ring = RingOf(env, info[0]);
  if (ring == nullptr || ring->shutDown) return Napi::Number::New(env, 0);
  uint32_t count = 0;
  while (!ring->backlog.empty() && count < ring->completionCapacity) {
    DropQueued(ring, ring->backlog.front(), count++);
  }
  for (uint32_t slot = 0; slot < ring->operations.size(); slot++) RequestCancel(ring, slot);
  UpdateReference(ring);
  return Napi::Number::New(env, count);
}

// uringCopyOut(handle, slot, view | intact) -> bytes copied, or -1
// For a completed bounced read: copies what the kernel read from the bounce
// buffers to the user's memory and releases the operation. `view` (a single
// read) must still be attached at the address it had at submission, else
// nothing is copied (-1). For readv, a boolean: whether lib/uring/ found
// every view of the array still attached and unchanged (the array holds
// them); false releases without copying.
Napi::Value CopyOut(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Ring* ring = RingOf(env, info[0]);
  const uint32_t slot = info[1].As<Napi::Number>().Uint32Value();
  if (ring == nullptr || slot >= ring->operations.size()) return Napi::Number::New(env, -1);
  Operation& operation = *ring->operations[slot];
  if (operation.state != Operation::State::kCompleted) return Napi::Number::New(env, -1);
  bool intact = true;
  if (info[2].IsBoolean()) {
    intact = info[2].As<Napi::Boolean>().Value();
  } else {
    uint8_t* data = nullptr;
    size_t length = 0;
    try {
      ViewBytes(env, info[2], &data, &length);
    } catch (const Napi::Error&) {
      intact = false;  // detached
    }
    intact = intact && operation.bounces.size() == 1 && data == operation.bounces[0].user &&
             length >= operation.bounces[0].length;
  }
  double copied = -1;
  if (intact) {
    copied = 0;
    const auto total = static_cast<size_t>(operation.result);
    for (const Bounce& bounce : operation.bounces) {
      if (bounce.at >= total) continue;
      size_t bytes = std::min(bounce.length, total - bounce.at);
      memcpy(bounce.user, bounce.bounce, bytes);
      copied += static_cast<double>(bytes);
    }
  }
  Release(ring, slot);
  return Napi::Number::New(env, copied);
}

// uringRegister(handle, entries: ArrayBuffer, first, count) -> [registered, error | null]
// IORING_REGISTER_BUFFERS_UPDATE of table slots [first, first + count) with
// entries [first, first + count) of `entries` (a `struct iovec[]`: the whole
// of pool.registration()'s buffer). Each entry
// must be a native iobuf allocation (a pool slab); it is pinned until the
// ring is closed. Entries beyond the table are not registered. The kernel
// registers in order and stops at the first failure (ENOMEM beyond
// RLIMIT_MEMLOCK), reporting only how many it did: `registered` is that
// count, `error` why it stopped (the entries after it are not registered).
Napi::Value Register(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Ring* ring = RingOf(env, info[0]);
  if (ring == nullptr || ring->shutDown) throw ClosedError(env);
  auto entriesBuffer = info[1].As<Napi::ArrayBuffer>();
  const uint32_t first = info[2].As<Napi::Number>().Uint32Value();
  uint32_t count = info[3].As<Napi::Number>().Uint32Value();
  const size_t available = entriesBuffer.ByteLength() / sizeof(struct iovec);
  if (first >= available || count > available - first) count = 0;
  count = first >= ring->tableSize ? 0 : std::min(count, ring->tableSize - first);
  // Entry i of the table is entry i of the array: this call registers entries [first, first + count).
  const auto* entries = static_cast<const struct iovec*>(entriesBuffer.Data()) + (count > 0 ? first : 0);

  // One pin per entry, in order (the entries are distinct slabs).
  std::vector<Allocation*> pins;
  for (uint32_t i = 0; i < count; i++) {
    size_t before = pins.size();
    PinAllocations(&entries[i], 1, &pins);
    if (pins.size() == before) {
      UnpinAllocations(pins);
      throw MakeError(env, "ERR_IOBUF_FOREIGN_BUFFER",
                      "A registered buffer must be native iobuf memory (a pool slab)");
    }
  }
  uint32_t done = 0;
  int error = 0;
  while (done < count) {
    io_uring_rsrc_update2 update = {};
    update.offset = first + done;
    update.data = reinterpret_cast<uint64_t>(entries + done);
    update.nr = count - done;
    int result = os::UringRegister(ring->ringFd, IORING_REGISTER_BUFFERS_UPDATE, &update, sizeof update);
    if (result < 0) {
      error = -result;
      break;
    }
    if (result == 0) {  // no progress and no error: never spin
      error = EIO;
      break;
    }
    done += static_cast<uint32_t>(result);
  }
  UnpinAllocations(std::vector<Allocation*>(pins.begin() + done, pins.end()));
  ring->registeredPins.insert(ring->registeredPins.end(), pins.begin(), pins.begin() + done);
  for (uint32_t i = 0; i < done; i++) {
    auto start = reinterpret_cast<uintptr_t>(entries[i].iov_base);
    RegisteredBuffer buffer = {start, start + entries[i].iov_len, first + i};
    ring->registered.insert(std::upper_bound(ring->registered.begin(), ring->registered.end(), buffer,
                                             [](const RegisteredBuffer& a, const RegisteredBuffer& b) {
                                               return a.start < b.start;
                                             }),
                            buffer);
  }
  Napi::Array result = Napi::Array::New(env, 2);
  result.Set(0u, Napi::Number::New(env, done));
  if (error == 0) {
    result.Set(1u, env.Null());
  } else {
    result.Set(1u,
               MakeErrnoError(env, error, "io_uring_register", nullptr,
                              error == ENOMEM ? "registered buffers count against RLIMIT_MEMLOCK; raise it "
                                                "(ulimit -l) or give the process CAP_IPC_LOCK"
                                              : "")
                   .Value());
  }
  return result;
}

// uringClose(handle): shuts the ring down now. lib/uring/ calls it once
// nothing is in flight; were anything left, it would be cancelled and waited
// for here, blocking this thread.
Napi::Value Close(const Napi::CallbackInfo& info) {
  Ring* ring = RingOf(info.Env(), info[0]);
  if (ring != nullptr) Shutdown(ring);
  return info.Env().Undefined();
}

// uringError(errno, syscall) -> IobufError with code (the errno's name), errno (negative), syscall.
Napi::Value Error(const Napi::CallbackInfo& info) {
  return MakeErrnoError(info.Env(), info[0].As<Napi::Number>().Int32Value(),
                        info[1].As<Napi::String>().Utf8Value().c_str())
      .Value();
}

void SetRaw(Napi::Env env, Napi::Object exports, const char* name, napi_callback callback) {
  napi_value function;
  NAPI_THROW_IF_FAILED_VOID(env,
                            napi_create_function(env, name, NAPI_AUTO_LENGTH, callback, nullptr, &function));
  exports.Set(name, Napi::Value(env, function));
}

// ---------------------------------------------------------------------------
// Memory advice for registered buffers (the pool's slabs, lib/uring/registration.ts)
// ---------------------------------------------------------------------------

// adviseDontFork(arrayBuffer): MADV_DONTFORK over the whole (page-aligned)
// ArrayBuffer, so that a fork() while io_uring holds the pages pinned does
// not turn them copy-on-write under the ring.
//
// A hugetlb mapping can only be advised in whole huge pages, and a slab over
// one (acquireMany's slabs are a multiple of the slot stride, not of 2 MiB)
// may end inside its last huge page: madvise then says EINVAL. The mapping
// itself is whole huge pages from a huge-page-aligned base (os::MapHugetlb),
// so the range is rounded up to the huge page size for hugetlb memory only.
Napi::Value AdviseDontFork(const Napi::CallbackInfo& info) {
  auto arrayBuffer = info[0].As<Napi::ArrayBuffer>();
  void* data = arrayBuffer.Data();
  size_t length = arrayBuffer.ByteLength();
  os::Failure failure = os::AdviseDontFork(data, length);
  if (failure && failure.error == EINVAL &&
      os::QueryPageKind(reinterpret_cast<uintptr_t>(data)) == os::PageKind::kHugetlb) {
    const size_t huge = os::HugePageSize();
    failure = os::AdviseDontFork(data, (length + huge - 1) & ~(huge - 1));
  }
  if (failure) throw MakeErrnoError(info.Env(), failure.error, failure.syscall);
  return info.Env().Undefined();
}

}  // namespace

void InitUring(Napi::Env env, Napi::Object exports) {
  exports.Set("uringProbe", Napi::Function::New(env, Probe, "uringProbe"));
  exports.Set("uringCreate", Napi::Function::New(env, Create, "uringCreate"));
  SetRaw(env, exports, "uringTransfer", Transfer);
  exports.Set("uringVectored", Napi::Function::New(env, Vectored, "uringVectored"));
  exports.Set("uringFsync", Napi::Function::New(env, Fsync, "uringFsync"));
  SetRaw(env, exports, "uringSubmit", Submit);
  exports.Set("uringCancel", Napi::Function::New(env, Cancel, "uringCancel"));
  exports.Set("uringCancelAll", Napi::Function::New(env, CancelAll, "uringCancelAll"));
  exports.Set("uringCopyOut", Napi::Function::New(env, CopyOut, "uringCopyOut"));
  exports.Set("uringRegister", Napi::Function::New(env, Register, "uringRegister"));
  exports.Set("uringClose", Napi::Function::New(env, Close, "uringClose"));
  exports.Set("uringError", Napi::Function::New(env, Error, "uringError"));
  exports.Set("adviseDontFork", Napi::Function::New(env, AdviseDontFork, "adviseDontFork"));
}

}  // namespace iobuf
