// The iovec part: `struct iovec[]` arrays in native memory that JS fills in
// place, and the vectored syscalls over them.
//
// Memory layout of one array of `capacity` entries (two native blocks, each
// exposed to JS as an external ArrayBuffer):
//
//   entries (public, IoVecArray#buffer; exactly `struct iovec[capacity]`)
//     byte 0        8             16            24            32
//          +------------+------------+------------+------------+---
//          | iov_base 0 | iov_len 0  | iov_base 1 | iov_len 1  | ...
//          +------------+------------+------------+------------+---
//     both fields little-endian 64-bit; JS writes each as two 32-bit halves.
//
//   bounds (private to lib/iovec/, which passes it to every call as the
//   array's handle; never handed to users)
//     byte 0        8            16           24           32
//          +------------+------+------------+------------+------------+---
//          | IoVecState*| pad  | start 0    | end 0      | start 1    | ...
//          +------------+------+------------+------------+------------+---
//     doubles from byte 16: [start, end) of the memory of the view entry i
//     was made from. The first slot finds the state (JS views start at 16).
//
// Users may write anything into `entries`. Before every syscall the native
// side checks, for each entry i < count, start_i <= iov_base_i and
// iov_base_i + iov_len_i <= end_i; one entry outside its bounds refuses the
// whole call with ERR_IOBUF_IOVEC_INVALID and no syscall is made. That the
// views themselves are still alive and attached is checked by lib/iovec/
// just before the call (it holds them; see the comment on checkViews there).
#pragma once

#include <napi.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>

namespace iobuf {

// The operations iovecTransfer/iovecTransferAsync take (lib/iovec/ mirrors them).
enum class IoVecOp : int32_t {
  kReadv = 0,
  kWritev = 1,
  kPreadv = 2,
  kPwritev = 3,
  kWritevAll = 4,   // writev until every byte is out (short writes, EAGAIN, > IOV_MAX)
  kPwritevAll = 5,  // the same with pwritev at position + bytes written so far
};

// [start, end) of the view an entry was made from (see the layout above).
struct IoVecBounds {
  double start;
  double end;
};

// Bytes before the first IoVecBounds in the bounds block: the state pointer and padding.
constexpr size_t kBoundsHeaderBytes = sizeof(IoVecBounds);

// The largest capacity of an array (lib/iovec/entries.ts MAX_IOVEC_CAPACITY).
constexpr uint32_t kMaxCapacity = 1u << 20;

// One array's native side. Its two blocks are owned jointly by the two
// ArrayBuffers over them: each one's finalizer drops a reference, and the
// last one frees everything (users may keep `buffer` alive longer than the
// IoVecArray). close() frees the blocks at once, after detaching both.
// (No napi External for a handle: Node 20 leaks an External's bookkeeping
// when a worker's environment ends with it uncollected.)
struct IoVecState {
  struct iovec* entries = nullptr;
  void* boundsBlock = nullptr;    // kBoundsHeaderBytes, then IoVecBounds[capacity]
  IoVecBounds* bounds = nullptr;  // = boundsBlock + kBoundsHeaderBytes
  uint32_t capacity = 0;
  int references = 2;
};

// For a part that hands an array to the kernel itself (native/uring.cc):
// entries [0, count) of the array whose handle is `bounds`, after checking
// each against its bounds as every iovec call does. Throws
// ERR_IOBUF_IOVEC_CLOSED or ERR_IOBUF_IOVEC_INVALID. Precondition (the
// caller's lib/ side): count <= capacity, and the views were checked
// (lib/iovec/ lends the array for that). The pointer is valid until JS runs
// again; copy what must outlive the call.
const struct iovec* CheckedEntries(Napi::Env env, napi_value bounds, uint32_t count);

}  // namespace iobuf
