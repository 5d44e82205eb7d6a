// The uring part: IoRing, file I/O through io_uring on the event loop of the
// JS thread that made the ring.
//
// How an operation travels (lib/uring/ is the other half):
//
//   JS read()/write()/…  ──► an SQE in the submission ring (no syscall)
//   end of the tick      ──► one io_uring_enter for every SQE of the tick
//   the kernel completes ──► a CQE, and the ring's eventfd counts up
//   libuv (uv_poll on the eventfd, on the ring's thread) ──► the CQEs are
//   reaped into the control block and one JS call settles them all.
//
// The poll handle holds the loop open only while operations are in flight,
// so a program with an idle ring can exit.
//
// Memory lent to the kernel (DESIGN.md, Lending): from submission until its
// CQE is reaped an operation's memory stays mapped and is not reused,
// whatever JS does meanwhile (free(), a pool's close({ force }), a transfer
// of the ArrayBuffer, the end of the worker thread):
// - registered memory (the ring's pool's slabs, READ_FIXED/WRITE_FIXED): the
//   ring pins the slabs' allocations (native/memory.h) from registration
//   until the ring is closed;
// - other native iobuf allocations (allocAligned's mapped ones, allocHuge,
//   dedicated pool allocations, slabs not registered yet): pinned for the
//   operation, used in place;
// - anything else (V8-heap memory: Buffer.alloc, allocAligned's heap path, a
//   Buffer from Node's pool): copied through a native bounce buffer owned by
//   the operation — in at submission for writes; out at completion for reads,
//   and only after lib/uring/ showed, on the JS thread, that the view is
//   still attached at the same address.
// A worker's environment cleanup hook cancels what the kernel still has and
// waits for it before anything is unpinned or freed.
//
// The control block: the ring's handle in JS, an external ArrayBuffer.
//
//   byte 0        8        16                       16 + 8 * kCounterCount
//        +--------+--------+------------------------+------------------------------------
//        | Ring*  |  pad   | double counters[]      | int32 {slot, result}[capacity]
//        +--------+--------+------------------------+------------------------------------
//
// Ring* is null once the ring is shut down (every call then says closed). The
// counters are written natively and read by IoRing#stats(). The completion
// pairs are filled right before each call of the JS dispatcher, which reads
// the first `count` of them.
#pragma once

#include <cstddef>
#include <cstdint>

namespace iobuf {

// What an operation does (lib/uring/ mirrors these).
enum class UringOp : int32_t {
  kRead = 0,
  kWrite = 1,
  kReadv = 2,
  kWritev = 3,
  kFsync = 4,
};

// The counters of the control block, in order (lib/uring/ mirrors these).
enum UringCounter : uint32_t {
  kOperations = 0,   // operations accepted
  kEnterCalls = 1,   // io_uring_enter syscalls made to submit
  kWakeups = 2,      // times the eventfd woke the loop
  kCompletions = 3,  // operations completed (reaped)
  kFixedOps = 4,     // READ_FIXED / WRITE_FIXED into registered memory
  kInPlaceOps = 5,   // operations on unregistered native memory, pinned
  kBouncedOps = 6,   // operations through a bounce buffer (V8-heap memory)
  kCancels = 7,      // ASYNC_CANCEL requests made
  kCounterCount = 8,
};

// Bytes before the counters: the Ring pointer and padding.
constexpr size_t kUringControlHeaderBytes = 16;

// Low bits of what a submission returns: (slot << kSubmitSlotShift) | flags.
enum UringSubmitFlags : uint32_t {
  kSubmitFixed = 1,    // a registered buffer (READ_FIXED/WRITE_FIXED)
  kSubmitBounced = 2,  // at least one bounce buffer: a read needs uringCopyOut at completion
  kSubmitInPlace = 4,  // native memory, pinned, used in place
};
constexpr uint32_t kSubmitSlotShift = 3;

}  // namespace iobuf
