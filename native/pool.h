// The pool part's shared block: the layout every thread sharing a BufferPool
// reads and writes, mirrored by lib/pool/shared.ts and lib/portable.ts
// (test/native.constants.test.ts checks they agree, through the constants
// InitPool exports and this file's text).
//
// One SharedArrayBuffer, made by the owning thread's `new BufferPool`:
//
//   Int32 words
//   [0, 16)                      control words (Word below)
//   [16, 16 + kRing)             ticket ring: ring[t & (kRing-1)] == t + 1 once ticket t is done
//   [16 + kRing, … + kMaxThreads) region states: 1 while a thread's statistics region is taken
//   Float64, from byte StatsOffset()
//   kMaxThreads regions of RegionLength(classRows) doubles, each written only
//   by the thread that holds it (plain stores), read by anyone for stats()
//
// Tickets and counters are int32 and wrap: every comparison is of differences
// (uint32), never of magnitudes, so 2^32 waits are as good as the first.
#pragma once

#include <cstddef>
#include <cstdint>

namespace iobuf::pool_layout {

constexpr int32_t kMagic = 0x696f6266;  // "iobf"
constexpr int32_t kVersion = 2;         // bumped whenever anything below changes

enum Word : int {
  kMagicWord = 0,
  kVersionWord = 1,
  kClosed = 2,         // 1 once the owning thread began close()
  kReservedPages = 3,  // pages taken from the OS, all threads
  kMaxPages = 4,       // the budget, in pages
  kEpoch = 5,          // bumped (and notified) whenever waiters should look again
  kNextTicket = 6,
  kHeadTicket = 7,      // the oldest ticket not yet done
  kThreads = 8,         // threads joined now
  kHighWaterPages = 9,  // most pages ever reserved at once
  kWaiters = 10,        // tickets taken and not yet done, all threads
  kClassRows = 11,      // size classes + 1 (the oversize row)
};

constexpr int kControlWords = 16;
constexpr int kRing = 1 << 14;
constexpr int kMaxThreads = 64;
constexpr int kRegionStates = kControlWords + kRing;  // first region-state word

// Per class row, then per thread, in a region (doubles): lib/pool/shared.ts Field, ThreadField.
constexpr int kClassFields = 8;
constexpr int kThreadFields = 5 + 512;
constexpr int kMinClassRows = 2;
constexpr int kMaxClassRows = 65;

constexpr size_t StatsOffset() { return (kControlWords + kRing + kMaxThreads) * 4; }
constexpr size_t RegionLength(int classRows) { return classRows * kClassFields + kThreadFields; }
constexpr size_t BlockBytes(int classRows) {
  return StatsOffset() + kMaxThreads * RegionLength(classRows) * 8;
}

static_assert(StatsOffset() % 8 == 0, "the statistics regions must be 8-byte aligned");

}  // namespace iobuf::pool_layout
