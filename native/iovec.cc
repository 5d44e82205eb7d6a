// The iovec part's native side (layout and checks: iovec.h). lib/iovec/
// validates every argument, keeps the views alive and checks that they are
// still attached; this file checks the entries against their bounds and makes
// the syscalls, on the JS thread (sync) or on the libuv thread pool (async).
#include "iovec.h"

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include "addon.h"
#include "errors.h"
#include "memory.h"
#include "os.h"

namespace iobuf {
namespace {

// ---------------------------------------------------------------------------
// State: allocation, shared ownership, close
// ---------------------------------------------------------------------------

void FreeBlocks(IoVecState* state) {
  free(state->entries);
  free(state->boundsBlock);
  state->entries = nullptr;
  state->boundsBlock = nullptr;
  state->bounds = nullptr;
}

// The state of the array whose private bounds ArrayBuffer (its handle) is
// `bounds`; null once close() detached it.
IoVecState* StateOf(napi_env env, napi_value bounds) {
  void* data = nullptr;
  if (napi_get_arraybuffer_info(env, bounds, &data, nullptr) != napi_ok || data == nullptr) return nullptr;
  return *static_cast<IoVecState**>(data);
}

Napi::Error ClosedError(Napi::Env env) {
  return MakeError(env, "ERR_IOBUF_IOVEC_CLOSED", "This IoVecArray is closed");
}

// Finalizer of either ArrayBuffer: the second one frees the state.
void DropReference(napi_env, void*, void* hint) {
  auto* state = static_cast<IoVecState*>(hint);
  if (--state->references == 0) {
    FreeBlocks(state);
    delete state;
  }
}

void* AllocateZeroed(size_t bytes) {
  void* memory = nullptr;
  // A cache line: entries never straddle one, and the kernel copies them in one go.
  if (posix_memalign(&memory, 64, bytes) != 0) return nullptr;
  memset(memory, 0, bytes);
  return memory;
}

// iovecCreate(capacity) -> [entries: ArrayBuffer, bounds: ArrayBuffer (the handle), address]
// Precondition (lib/iovec/array.ts checks): 1 <= capacity <= kMaxCapacity.
Napi::Value Create(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t capacity = info[0].As<Napi::Number>().Uint32Value();
  assert(capacity >= 1 && capacity <= kMaxCapacity);
  auto* state = new IoVecState();
  state->capacity = capacity;
  state->entries = static_cast<struct iovec*>(AllocateZeroed(capacity * sizeof(struct iovec)));
  const size_t boundsBytes = kBoundsHeaderBytes + capacity * sizeof(IoVecBounds);
  state->boundsBlock = AllocateZeroed(boundsBytes);
  if (state->entries == nullptr || state->boundsBlock == nullptr) {
    FreeBlocks(state);
    delete state;
    throw MakeErrnoError(env, ENOMEM, "posix_memalign");
  }
  // Raw Node-API: node-addon-api's external ArrayBuffer finalizers want one
  // owner per buffer; here the two share one state.
  *static_cast<IoVecState**>(state->boundsBlock) = state;
  state->bounds =
      reinterpret_cast<IoVecBounds*>(static_cast<uint8_t*>(state->boundsBlock) + kBoundsHeaderBytes);
  napi_value entries;
  napi_value bounds;
  napi_status status = napi_create_external_arraybuffer(env, state->entries, capacity * sizeof(struct iovec),
                                                        DropReference, state, &entries);
  if (status != napi_ok) {
    FreeBlocks(state);
    delete state;
    NAPI_THROW_IF_FAILED(env, status, Napi::Value());
  }
  status =
      napi_create_external_arraybuffer(env, state->boundsBlock, boundsBytes, DropReference, state, &bounds);
  if (status != napi_ok) {
    // The entries buffer holds one reference and will drop it when collected.
    state->references--;
    NAPI_THROW_IF_FAILED(env, status, Napi::Value());
  }
  Napi::Array result = Napi::Array::New(env, 3);
  result.Set(0u, Napi::Value(env, entries));
  result.Set(1u, Napi::Value(env, bounds));
  result.Set(2u, Napi::Number::New(env, static_cast<double>(reinterpret_cast<uintptr_t>(state->entries))));
  return result;
}

// iovecClose(bounds, entries): detach both ArrayBuffers (no view can reach
// the blocks any more), then free the blocks. The state itself lives on
// until both finalizers have run. Node runs them when the ArrayBuffers are
// collected; Bun runs them inside Detach(), so this call holds a reference
// of its own until it is done with the state.
Napi::Value Close(const Napi::CallbackInfo& info) {
  IoVecState* state = StateOf(info.Env(), info[0]);
  if (state == nullptr) return info.Env().Undefined();  // closed already
  // Bun runs an external ArrayBuffer's finalizer when it is detached (V8 at
  // garbage collection): hold a reference across the detaches, so that the
  // state outlives both finalizers until the blocks are freed here.
  state->references++;
  info[0].As<Napi::ArrayBuffer>().Detach();
  info[1].As<Napi::ArrayBuffer>().Detach();
  FreeBlocks(state);
  DropReference(info.Env(), nullptr, state);
  return info.Env().Undefined();
}

// ---------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------

// Index of the first entry in [0, count) that does not lie inside its bounds,
// or -1 when all do. Compared in unsigned 64-bit arithmetic; the bounds are
// integers below 2^53 (lib/iovec/ writes them from addresses and lengths).
int64_t FirstInvalid(const IoVecState* state, uint32_t count) {
  for (uint32_t i = 0; i < count; i++) {
    auto base = reinterpret_cast<uint64_t>(state->entries[i].iov_base);
    uint64_t length = state->entries[i].iov_len;
    auto start = static_cast<uint64_t>(state->bounds[i].start);
    auto end = static_cast<uint64_t>(state->bounds[i].end);
    if (base < start || base > end || length > end - base) return i;
  }
  return -1;
}

Napi::Error InvalidEntry(Napi::Env env, const IoVecState* state, int64_t index) {
  const struct iovec& entry = state->entries[index];
  char message[256];
  snprintf(message, sizeof message,
           "iovec entry %" PRId64 " (base 0x%" PRIxPTR
           ", length %zu) is not inside the view it was "
           "made from [0x%" PRIx64 ", 0x%" PRIx64 "); no syscall was made",
           index, reinterpret_cast<uintptr_t>(entry.iov_base), entry.iov_len,
           static_cast<uint64_t>(state->bounds[index].start),
           static_cast<uint64_t>(state->bounds[index].end));
  return MakeError(env, "ERR_IOBUF_IOVEC_INVALID", message);
}

// ---------------------------------------------------------------------------
// The transfers (any thread; no Node-API in here)
// ---------------------------------------------------------------------------

struct Outcome {
  long bytes = 0;  // transferred before the error, if any
  int error = 0;   // positive errno, 0 on success
  const char* syscall = nullptr;
};

const char* SyscallName(IoVecOp op) {
  switch (op) {
    case IoVecOp::kReadv: return "readv";
    case IoVecOp::kWritev:
    case IoVecOp::kWritevAll: return "writev";
    case IoVecOp::kPreadv: return "preadv";
    case IoVecOp::kPwritev:
    case IoVecOp::kPwritevAll: return "pwritev";
  }
  return "?";
}

bool WritesAll(IoVecOp op) { return op == IoVecOp::kWritevAll || op == IoVecOp::kPwritevAll; }

// One syscall over at most IOV_MAX entries: a call over more transfers the
// first IOV_MAX (a short transfer, which every caller must handle anyway).
long TransferOnce(IoVecOp op, int fd, const struct iovec* entries, uint32_t count, int64_t position) {
  int n = count > static_cast<uint32_t>(os::IoVecMax()) ? os::IoVecMax() : static_cast<int>(count);
  switch (op) {
    case IoVecOp::kReadv: return os::ReadV(fd, entries, n);
    case IoVecOp::kWritev:
    case IoVecOp::kWritevAll: return os::WriteV(fd, entries, n);
    case IoVecOp::kPreadv: return os::PreadV(fd, entries, n, position);
    case IoVecOp::kPwritev:
    case IoVecOp::kPwritevAll: return os::PwriteV(fd, entries, n, position);
  }
  return -EINVAL;
}

// writev/pwritev until every byte of entries[0, count) is out. Precondition:
// `entries` is the caller's own copy; it is advanced in place (whole entries
// dropped, the first trimmed) after each short write. On a non-blocking fd,
// EAGAIN waits in poll() for room: this blocks the calling thread (the JS
// thread for the sync calls, a libuv pool thread for the promise ones).
Outcome WriteAll(IoVecOp op, int fd, struct iovec* entries, uint32_t count, int64_t position) {
  assert(op == IoVecOp::kWritevAll || op == IoVecOp::kPwritevAll);
  assert(entries != nullptr || count == 0);
  Outcome outcome;
  const char* name = SyscallName(op);
  while (count > 0 && entries->iov_len == 0) entries++, count--;
  while (count > 0) {
    long written =
        TransferOnce(op, fd, entries, count, op == IoVecOp::kPwritevAll ? position + outcome.bytes : 0);
    if (written == -EAGAIN || written == -EWOULDBLOCK) {
      if (int waited = os::WaitWritable(fd); waited < 0) return {outcome.bytes, -waited, "poll"};
      continue;
    }
    if (written < 0) return {outcome.bytes, static_cast<int>(-written), name};
    if (written == 0) return {outcome.bytes, EIO, name};  // no progress and no error: never spin
    outcome.bytes += written;
    auto left = static_cast<size_t>(written);
    while (count > 0 && left >= entries->iov_len) {
      left -= entries->iov_len;
      entries++, count--;
    }
    if (count > 0) {
      entries->iov_base = static_cast<uint8_t*>(entries->iov_base) + left;
      entries->iov_len -= left;
      while (count > 0 && entries->iov_len == 0) entries++, count--;
    }
  }
  return outcome;
}

Outcome Transfer(IoVecOp op, int fd, struct iovec* entries, uint32_t count, int64_t position) {
  if (WritesAll(op)) return WriteAll(op, fd, entries, count, position);
  long result = TransferOnce(op, fd, entries, count, position);
  if (result < 0) return {0, static_cast<int>(-result), SyscallName(op)};
  return {result, 0, nullptr};
}

Napi::Error OutcomeError(Napi::Env env, IoVecOp op, const Outcome& outcome) {
  Napi::Error error = MakeErrnoError(env, outcome.error, outcome.syscall);
  if (WritesAll(op)) error.Set("bytesWritten", Napi::Number::New(env, static_cast<double>(outcome.bytes)));
  return error;
}

// ---------------------------------------------------------------------------
// Sync: iovecTransfer(bounds, op, fd, count, position) -> bytes
// ---------------------------------------------------------------------------

// The hot path (writevSync over a prepared array): raw Node-API, fixed
// argument slots, no allocation unless an All op needs a scratch copy.
// Preconditions (lib/iovec/): the array is open, count <= capacity, fd is
// an int32 >= 0, position an integer in [0, 2^53).
napi_value TransferSync(napi_env rawEnv, napi_callback_info info) {
  Napi::Env env(rawEnv);
  try {
    size_t argc = 5;
    napi_value argv[5];
    napi_get_cb_info(rawEnv, info, &argc, argv, nullptr, nullptr);
    int32_t op = 0;
    int32_t fd = 0;
    uint32_t count = 0;
    double position = 0;
    napi_get_value_int32(rawEnv, argv[1], &op);
    napi_get_value_int32(rawEnv, argv[2], &fd);
    napi_get_value_uint32(rawEnv, argv[3], &count);
    napi_get_value_double(rawEnv, argv[4], &position);
    IoVecState* state = StateOf(rawEnv, argv[0]);
    if (state == nullptr) throw ClosedError(env);
    if (count > state->capacity)
      throw MakeError(env, "ERR_IOBUF_INTERNAL", "count is above the array's capacity");
    auto kind = static_cast<IoVecOp>(op);

    if (int64_t bad = FirstInvalid(state, count); bad >= 0) throw InvalidEntry(env, state, bad);
    Outcome outcome;
    if (WritesAll(kind)) {
      // WriteAll advances its entries: give it a copy, the array is advanced by lib/iovec/.
      std::vector<struct iovec> scratch(state->entries, state->entries + count);
      outcome = Transfer(kind, fd, scratch.data(), count, static_cast<int64_t>(position));
    } else {
      outcome = Transfer(kind, fd, state->entries, count, static_cast<int64_t>(position));
    }
    if (outcome.error != 0) throw OutcomeError(env, kind, outcome);
    napi_value result;
    napi_create_double(rawEnv, static_cast<double>(outcome.bytes), &result);
    return result;
  } catch (const Napi::Error& error) {
    error.ThrowAsJavaScriptException();
    return nullptr;
  }
}

// ---------------------------------------------------------------------------
// Async: iovecTransferAsync(bounds, op, fd, count, position, views, done)
//        done(error | null, bytes) is called once, on this thread, unless the
//        environment is torn down first
// ---------------------------------------------------------------------------

// One transfer on the libuv thread pool. The entries are checked and copied
// on the JS thread when the work is queued: what the kernel sees is that
// snapshot, whatever JS writes into the array meanwhile.
//
// Lending. The memory stays the kernel's until the work is done, whatever JS
// does meanwhile:
// - native iobuf memory (pool slabs, allocAligned/allocHuge mappings) is
//   pinned: free(), a pool's forced close or a transfer of the ArrayBuffer
//   detach it at once, but the pages stay mapped until the work is done;
// - any other memory (V8's heap: Buffer.alloc, ArrayBuffers) can be freed by
//   JS at any moment — a transfer or postMessage moves it away — so the kernel
//   never uses it in place: each such entry goes through a native bounce
//   block (same offset in its page, for O_DIRECT). A write copies into it at
//   queue time; a read copies out on completion, on the JS thread, only into
//   a view that is still attached at the same address and length (else its
//   bytes are dropped and the call rejects with ERR_IOBUF_DETACHED).
// Memory of views JS holds elsewhere (lib/iovec/ keeps the array busy and
// the views reachable) is lent by the JS side too (lib/lending.ts).
//
// Completion runs on the JS thread of the environment that queued it. If
// that environment is being torn down (a terminated worker), nothing reaches
// JavaScript: the pins and bounce blocks are let go and the result dropped.
struct Bounce {
  uint32_t index;     // the entry
  void* block;        // posix_memalign'd; freed with the work
  uint8_t* original;  // where the entry pointed
  size_t length;
  double viewStart;  // the view's [start, end) when queued (the bounds)
  double viewEnd;
  napi_ref view;  // reads only: to check the view before copying out
};

bool Reads(IoVecOp op) { return op == IoVecOp::kReadv || op == IoVecOp::kPreadv; }

struct TransferWork {
  AddonData* data = nullptr;
  napi_async_work request = nullptr;
  // The JS callback (lib/iovec/ settles its promise there). A reference, not
  // a napi_deferred: a reference can be deleted in an environment that is
  // being torn down, where a deferred can only leak.
  napi_ref done = nullptr;
  IoVecOp op = IoVecOp::kReadv;
  int fd = -1;
  int64_t position = 0;
  std::vector<struct iovec> entries;
  std::vector<Allocation*> pinned;
  std::vector<Bounce> bounces;
  Outcome outcome;

  ~TransferWork() {
    UnpinAllocations(pinned);
    for (Bounce& bounce : bounces) free(bounce.block);
  }
};

void ExecuteTransfer(napi_env, void* arg) {
  auto* work = static_cast<TransferWork*>(arg);
  work->outcome = Transfer(work->op, work->fd, work->entries.data(),
                           static_cast<uint32_t>(work->entries.size()), work->position);
}

// The current [data, data + byteLength) of a view, or {0, 0} once detached.
std::pair<double, double> ViewRange(napi_env env, napi_value view) {
  void* data = nullptr;
  size_t length = 0;
  bool isTypedArray = false;
  napi_is_typedarray(env, view, &isTypedArray);
  if (isTypedArray) {
    napi_typedarray_type type;
    size_t elements = 0;
    if (napi_get_typedarray_info(env, view, &type, &elements, &data, nullptr, nullptr) != napi_ok)
      return {0, 0};
    size_t width = type == napi_float64_array || type == napi_bigint64_array || type == napi_biguint64_array
                       ? 8
                   : type == napi_int32_array || type == napi_uint32_array || type == napi_float32_array ? 4
                   : type == napi_int16_array || type == napi_uint16_array                               ? 2
                                                                                                         : 1;
    length = elements * width;
  } else if (napi_get_dataview_info(env, view, &length, &data, nullptr, nullptr) != napi_ok) {
    return {0, 0};
  }
  auto start = static_cast<double>(reinterpret_cast<uintptr_t>(data));
  return {start, data == nullptr ? 0 : start + static_cast<double>(length)};
}

// A read landed in bounce blocks: copy each entry's share of `bytes` out to
// its view, if the view is still where it was. Returns the index of the first
// entry whose bytes were dropped, or -1.
int64_t CopyOut(napi_env env, TransferWork* work, long bytes) {
  int64_t dropped = -1;
  size_t left = static_cast<size_t>(bytes);
  size_t next = 0;  // the next bounce to look at
  for (uint32_t i = 0; i < work->entries.size() && left > 0; i++) {
    size_t share = std::min(left, work->entries[i].iov_len);
    left -= share;
    if (next < work->bounces.size() && work->bounces[next].index == i) {
      Bounce& bounce = work->bounces[next++];
      napi_value view = nullptr;
      std::pair<double, double> range{0, 0};
      if (napi_get_reference_value(env, bounce.view, &view) == napi_ok && view != nullptr)
        range = ViewRange(env, view);
      if (share > 0 && range.first == bounce.viewStart && range.second == bounce.viewEnd) {
        memcpy(bounce.original, work->entries[i].iov_base, share);
      } else if (share > 0 && dropped < 0) {
        dropped = i;
      }
    }
  }
  return dropped;
}

// Settles the promise (unless the environment is going away). The work's
// pins and bounce blocks go with it (its destructor), after this returns.
void SettleTransfer(napi_env env, napi_status status, TransferWork* work);

void CompleteTransfer(napi_env env, napi_status status, void* arg) {
  std::unique_ptr<TransferWork> work(static_cast<TransferWork*>(arg));
  SettleTransfer(env, status, work.get());
  napi_delete_async_work(env, work->request);
  napi_delete_reference(env, work->done);
  for (Bounce& bounce : work->bounces) {
    if (bounce.view != nullptr) napi_delete_reference(env, bounce.view);
  }
}

// Calls the JS callback with (error, bytes).
void CallDone(napi_env env, TransferWork* work, napi_value error, double bytes) {
  napi_value done = nullptr;
  if (napi_get_reference_value(env, work->done, &done) != napi_ok || done == nullptr) return;
  napi_value argv[2];
  napi_value undefined;
  napi_get_undefined(env, &undefined);
  if (error != nullptr)
    argv[0] = error;
  else
    napi_get_null(env, &argv[0]);
  napi_create_double(env, bytes, &argv[1]);
  napi_call_function(env, undefined, done, 2, argv, nullptr);
}

void SettleTransfer(napi_env env, napi_status status, TransferWork* work) {
  if (work->data->tearingDown.load() || status != napi_ok) return;  // nobody to tell
  // Never let a C++ exception out of a libuv callback (that aborts the process).
  try {
    Napi::Env napiEnv(env);
    if (work->outcome.error != 0) {
      CallDone(env, work, OutcomeError(napiEnv, work->op, work->outcome).Value(), 0);
      return;
    }
    if (Reads(work->op) && !work->bounces.empty()) {
      if (int64_t dropped = CopyOut(env, work, work->outcome.bytes); dropped >= 0) {
        char message[200];
        snprintf(message, sizeof message,
                 "The view of iovec entry %" PRId64
                 " was detached or transferred while the read was pending; "
                 "the %ld bytes read for it were dropped",
                 dropped, work->outcome.bytes);
        Napi::Error error = MakeError(napiEnv, "ERR_IOBUF_DETACHED", message);
        error.Set("bytesRead", Napi::Number::New(napiEnv, static_cast<double>(work->outcome.bytes)));
        CallDone(env, work, error.Value(), 0);
        return;
      }
    }
    CallDone(env, work, nullptr, static_cast<double>(work->outcome.bytes));
  } catch (...) {
    // The environment could not take the result (it is going away): drop it.
  }
}

Napi::Value TransferAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  IoVecState* state = StateOf(env, info[0]);
  if (state == nullptr) throw ClosedError(env);
  auto op = static_cast<IoVecOp>(info[1].As<Napi::Number>().Int32Value());
  int fd = info[2].As<Napi::Number>().Int32Value();
  uint32_t count = info[3].As<Napi::Number>().Uint32Value();
  auto position = static_cast<int64_t>(info[4].As<Napi::Number>().DoubleValue());
  if (count > state->capacity)
    throw MakeError(env, "ERR_IOBUF_INTERNAL", "count is above the array's capacity");
  if (int64_t bad = FirstInvalid(state, count); bad >= 0) throw InvalidEntry(env, state, bad);

  auto work = std::make_unique<TransferWork>();
  work->data = AddonData::Of(env);
  work->op = op;
  work->fd = fd;
  work->position = position;
  work->entries.assign(state->entries, state->entries + count);
  std::vector<uint32_t> foreign;
  PinAllocations(work->entries.data(), count, &work->pinned, &foreign);
  if (!foreign.empty()) {
    Napi::Value views = info[5];
    const size_t page = os::PageSize();
    for (uint32_t index : foreign) {
      struct iovec& entry = work->entries[index];
      auto* original = static_cast<uint8_t*>(entry.iov_base);
      size_t offset = reinterpret_cast<uintptr_t>(original) & (page - 1);
      void* block = nullptr;
      if (posix_memalign(&block, page, (offset + entry.iov_len + page - 1) & ~(page - 1)) != 0) {
        throw MakeErrnoError(env, ENOMEM, "posix_memalign", nullptr, "bounce block for heap memory");
      }
      Bounce bounce{
          index,  block, original, entry.iov_len, state->bounds[index].start, state->bounds[index].end,
          nullptr};
      work->bounces.push_back(bounce);
      entry.iov_base = static_cast<uint8_t*>(block) + offset;
      if (Reads(op)) {
        napi_value view = views.IsArray() ? views.As<Napi::Array>().Get(index) : env.Undefined();
        if (view != nullptr && Napi::Value(env, view).IsObject()) {
          napi_create_reference(env, view, 1, &work->bounces.back().view);
        }
      } else {
        memcpy(entry.iov_base, original, entry.iov_len);
      }
    }
  }
  NAPI_THROW_IF_FAILED(env, napi_create_reference(env, info[6], 1, &work->done), Napi::Value());
  napi_value name = Napi::String::New(env, "iobuf.iovec");
  NAPI_THROW_IF_FAILED(env,
                       napi_create_async_work(env, nullptr, name, ExecuteTransfer, CompleteTransfer,
                                              work.get(), &work->request),
                       Napi::Value());
  if (napi_status status = napi_queue_async_work(env, work->request); status != napi_ok) {
    napi_delete_async_work(env, work->request);
    napi_delete_reference(env, work->done);
    NAPI_THROW_IF_FAILED(env, status, Napi::Value());
  }
  work.release();  // CompleteTransfer owns it now
  return env.Undefined();
}

}  // namespace

const struct iovec* CheckedEntries(Napi::Env env, napi_value bounds, uint32_t count) {
  IoVecState* state = StateOf(env, bounds);
  if (state == nullptr) throw ClosedError(env);
  if (int64_t bad = FirstInvalid(state, count); bad >= 0) throw InvalidEntry(env, state, bad);
  return state->entries;
}

void InitIoVec(Napi::Env env, Napi::Object exports) {
  exports.Set("iovMax", Napi::Number::New(env, os::IoVecMax()));
  exports.Set("iovecEntryBytes", Napi::Number::New(env, static_cast<double>(sizeof(struct iovec))));
  // The numbers lib/iovec/entries.ts mirrors (test/native.constants.test.ts compares them).
  Napi::Object layout = Napi::Object::New(env);
  layout.Set("entryBytes", static_cast<double>(sizeof(struct iovec)));
  layout.Set("boundsHeaderBytes", static_cast<double>(kBoundsHeaderBytes));
  layout.Set("maxCapacity", static_cast<double>(kMaxCapacity));
  Napi::Object ops = Napi::Object::New(env);
  ops.Set("readv", static_cast<int>(IoVecOp::kReadv));
  ops.Set("writev", static_cast<int>(IoVecOp::kWritev));
  ops.Set("preadv", static_cast<int>(IoVecOp::kPreadv));
  ops.Set("pwritev", static_cast<int>(IoVecOp::kPwritev));
  ops.Set("writevAll", static_cast<int>(IoVecOp::kWritevAll));
  ops.Set("pwritevAll", static_cast<int>(IoVecOp::kPwritevAll));
  layout.Set("ops", ops);
  exports.Set("iovecLayout", layout);
  exports.Set("iovecCreate", Napi::Function::New(env, Create, "iovecCreate"));
  exports.Set("iovecClose", Napi::Function::New(env, Close, "iovecClose"));
  napi_value transfer;
  NAPI_THROW_IF_FAILED_VOID(
      env, napi_create_function(env, "iovecTransfer", NAPI_AUTO_LENGTH, TransferSync, nullptr, &transfer));
  exports.Set("iovecTransfer", Napi::Value(env, transfer));
  exports.Set("iovecTransferAsync", Napi::Function::New(env, TransferAsync, "iovecTransferAsync"));
}

}  // namespace iobuf
