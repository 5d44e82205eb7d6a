// The memory part: page-aligned, huge-page and locked allocations handed to JS
// as Buffers over native mappings.
//
// Ownership: a mapping belongs to the Buffer's ArrayBuffer. It is unmapped by
// whichever comes first: `free()` (which detaches the ArrayBuffer first, so
// no view can reach the memory afterwards) or the Buffer's finalizer.
#pragma once

#include <napi.h>

#include <cstddef>

namespace iobuf {

// Bits of the `flags` argument of mapAligned/mapHuge (lib/memory.ts mirrors them).
enum MapFlags : unsigned {
  kLock = 1u << 0,      // mlock the pages (RLIMIT_MEMLOCK applies)
  kDontFork = 1u << 1,  // MADV_DONTFORK: children do not inherit the pages
  kDontDump = 1u << 2,  // MADV_DONTDUMP: left out of core dumps
};

// How far allocHuge may fall back when hugetlb pages are not available.
enum class HugeFallback { kNone = 0, kTransparent = 1, kNormal = 2 };

}  // namespace iobuf
