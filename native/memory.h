// The memory part: page-aligned, huge-page and locked allocations handed to JS
// as Buffers over native mappings.
//
// Ownership: a mapping belongs to the Buffer's ArrayBuffer. It is given up by
// whichever comes first: `free()` (which detaches the ArrayBuffer first, so
// no view can reach the memory afterwards) or the Buffer's finalizer; it is
// unmapped then, or when the last pending promise call that pinned it is done.
#pragma once

#include <napi.h>

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace iobuf {

// Bits of the `flags` argument of mapAligned/mapHuge (lib/memory.ts mirrors them).
enum MapFlags : unsigned {
  kLock = 1u << 0,      // mlock the pages (RLIMIT_MEMLOCK applies)
  kDontFork = 1u << 1,  // MADV_DONTFORK: children do not inherit the pages
  kDontDump = 1u << 2,  // MADV_DONTDUMP: left out of core dumps
};

// How far allocHuge may fall back when hugetlb pages are not available.
enum class HugeFallback { kNone = 0, kTransparent = 1, kNormal = 2 };

// A native mapping handed out by mapAligned/mapHuge (memory.cc).
struct Allocation;

// Pins every native allocation that an entry with bytes in it starts in (the
// iovec part checked that each entry lies inside one view), appending each to
// `pinned`: until UnpinAllocations, free() and the finalizer detach but do
// not unmap it. Appends to `foreign` (when given) the index of every entry
// with bytes that lies in no native allocation: V8 heap memory, which JS can
// detach or transfer at any moment, so a borrower on another thread must not
// use it in place. Any thread; takes the registry mutex once.
void PinAllocations(const struct iovec* entries, uint32_t count, std::vector<Allocation*>* pinned,
                    std::vector<uint32_t>* foreign = nullptr);
void UnpinAllocations(const std::vector<Allocation*>& pinned);

}  // namespace iobuf
