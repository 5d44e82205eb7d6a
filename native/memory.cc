// The memory part's native side. lib/memory.ts validates every argument
// before calling in here; these functions trust sizes and alignments.
#include "memory.h"

#include <cstring>

#include <cerrno>
#include <map>
#include <mutex>

#include "addon.h"
#include "errors.h"
#include "os.h"

namespace iobuf {

// ---------------------------------------------------------------------------
// Registry of native mappings, ordered by the address JS sees as the
// ArrayBuffer's data (so that an address inside one finds it). Process-wide
// (workers share the address space); everything here is guarded by one mutex.
// A record stays in the registry for as long as its pages are mapped.
//
// Pins (the native half of lending; lib/lending.ts is the JS half): memory
// lent to the kernel or to libuv — a promise call of the iovec part, a socket
// read or write, an io_uring operation — is pinned for as long as the
// borrower may touch it. free() (or the finalizer) of a pinned allocation
// detaches at once but leaves the pages mapped until the last unpin: the
// kernel may still be reading or writing them, and an unmapped range could be
// reused by a new mapping. This holds whatever JS does meanwhile (a transfer
// of the ArrayBuffer, a forced close, a terminated worker). A record is
// deleted once its finalizer ran and no pin is left.
// ---------------------------------------------------------------------------

struct Allocation {
  os::Mapping mapping;
  size_t pins = 0;     // borrowers using it now
  bool freed = false;  // free() or the finalizer gave it up
  bool unmapped = false;
  bool finalized = false;  // the Buffer's finalizer ran
};

namespace {

std::mutex registryMutex;
auto* registry = new std::map<uintptr_t, Allocation*>();

uintptr_t BaseOf(const Allocation* allocation) {
  return reinterpret_cast<uintptr_t>(allocation->mapping.base);
}

void Register(Allocation* allocation) {
  std::lock_guard<std::mutex> lock(registryMutex);
  (*registry)[BaseOf(allocation)] = allocation;
}

// Under registryMutex: unmaps a freed allocation that no borrower pins.
void UnmapIfIdleLocked(Allocation* allocation) {
  if (!allocation->freed || allocation->pins != 0 || allocation->unmapped) return;
  registry->erase(BaseOf(allocation));
  os::Unmap(allocation->mapping);
  allocation->unmapped = true;
}

// Under registryMutex: gives the allocation up; unmapped now, or at the last unpin.
void ReleaseLocked(Allocation* allocation) {
  allocation->freed = true;
  UnmapIfIdleLocked(allocation);
}

// Under registryMutex: the mapped allocation whose pages hold `address`, or null.
Allocation* FindLocked(uintptr_t address) {
  auto found = registry->upper_bound(address);
  if (found == registry->begin()) return nullptr;
  --found;
  Allocation* allocation = found->second;
  return address - found->first < allocation->mapping.mapLength ? allocation : nullptr;
}

// Under registryMutex: one pin less; the last one of a freed allocation unmaps it.
void UnpinLocked(Allocation* allocation) {
  allocation->pins--;
  UnmapIfIdleLocked(allocation);
  if (allocation->pins == 0 && allocation->finalized) delete allocation;
}

void FinalizeAllocation(Napi::Env, uint8_t*, Allocation* allocation) {
  std::lock_guard<std::mutex> lock(registryMutex);
  ReleaseLocked(allocation);
  allocation->finalized = true;
  if (allocation->pins == 0) delete allocation;
}

// Applies lock/dontFork/dontDump and wraps the mapping in a Buffer of exactly
// `size` bytes. On failure the mapping is unmapped before the error is thrown.
Napi::Value Publish(Napi::Env env, const os::Mapping& mapping, size_t size, unsigned flags) {
  os::Failure failure;
  if ((flags & kDontFork) != 0 && !failure) failure = os::AdviseDontFork(mapping);
  if ((flags & kDontDump) != 0 && !failure) failure = os::AdviseDontDump(mapping);
  if ((flags & kLock) != 0 && !failure) failure = os::Lock(mapping);
  if (failure) {
    os::Unmap(mapping);
    std::string detail = failure.error == ENOMEM && (flags & kLock) != 0
                             ? "locking beyond RLIMIT_MEMLOCK needs CAP_IPC_LOCK"
                             : "";
    throw MakeErrnoError(env, failure.error, failure.syscall, nullptr, detail);
  }
  auto* allocation = new Allocation{mapping};
  Register(allocation);
  // Raw Node-API rather than Napi::Buffer::New, whose failure path frees its
  // finalizer data while Node (20) may still run the finalizer later. The
  // callers checked the length (CheckBufferLength), which rules out the one
  // failure seen; after any other, whether the finalizer runs differs between
  // Node versions, so the allocation is left to it: at worst a leak, never
  // an unmap of a range that may have been mapped again.
  napi_value buffer;
  napi_status status = napi_create_external_buffer(
      env, size, mapping.base,
      [](napi_env finalizeEnv, void* data, void* hint) {
        FinalizeAllocation(Napi::Env(finalizeEnv), static_cast<uint8_t*>(data),
                           static_cast<Allocation*>(hint));
      },
      allocation, &buffer);
  if (status != napi_ok) throw Napi::Error::New(env);
  return Napi::Value(env, buffer);
}

size_t SizeArgument(const Napi::CallbackInfo& info, size_t index) {
  return static_cast<size_t>(info[index].As<Napi::Number>().Int64Value());
}

// ---------------------------------------------------------------------------
// Bindings
// ---------------------------------------------------------------------------

// mapAligned(size, alignment, flags) -> Buffer over a fresh, zeroed mapping.
Napi::Value MapAligned(const Napi::CallbackInfo& info) {
  CheckBufferLength(info.Env(), info[0].As<Napi::Number>().DoubleValue(), "size");
  size_t size = SizeArgument(info, 0);
  size_t alignment = SizeArgument(info, 1);
  unsigned flags = info[2].As<Napi::Number>().Uint32Value();
  if (alignment < os::PageSize()) alignment = os::PageSize();
  os::Mapping mapping;
  if (os::Failure failure = os::MapAligned(size, alignment, &mapping)) {
    throw MakeErrnoError(info.Env(), failure.error, failure.syscall);
  }
  return Publish(info.Env(), mapping, size, flags);
}

// mapHuge(size, fallback, flags) -> Buffer: hugetlb, else THP, else normal
// pages, as far as `fallback` allows.
Napi::Value MapHuge(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckBufferLength(env, info[0].As<Napi::Number>().DoubleValue(), "size");
  size_t size = SizeArgument(info, 0);
  auto fallback = static_cast<HugeFallback>(info[1].As<Napi::Number>().Int32Value());
  unsigned flags = info[2].As<Napi::Number>().Uint32Value();

  os::Mapping mapping;
  os::Failure hugetlb = os::MapHugetlb(size, &mapping);
  if (!hugetlb) return Publish(env, mapping, size, flags);
  if (fallback == HugeFallback::kNone) {
    throw MakeErrnoError(env, hugetlb.error, hugetlb.syscall, "ERR_IOBUF_HUGE_PAGES_UNAVAILABLE",
                         "no hugetlb pages free; reserve them in /proc/sys/vm/nr_hugepages");
  }
  const bool transparent = os::TransparentHugePagesEnabled();
  if (!transparent && fallback == HugeFallback::kTransparent) {
    throw MakeErrnoError(env, hugetlb.error, hugetlb.syscall, "ERR_IOBUF_HUGE_PAGES_UNAVAILABLE",
                         "no hugetlb pages free and transparent huge pages are disabled");
  }
  // THP needs a region aligned to its own size (which may differ from the
  // hugetlb size); normal pages are the same mapping without the advice.
  const size_t huge = os::TransparentHugePageSize();
  size_t length = (size + huge - 1) & ~(huge - 1);
  if (os::Failure failure = os::MapAligned(length, huge, &mapping)) {
    throw MakeErrnoError(env, failure.error, failure.syscall);
  }
  if (transparent) {
    if (os::Failure failure = os::AdviseHugePages(mapping)) {
      os::Unmap(mapping);
      throw MakeErrnoError(env, failure.error, failure.syscall);
    }
  }
  return Publish(env, mapping, size, flags);
}

// free(arrayBuffer): detaches it (every view reads as empty from now on) and,
// for a native mapping, unmaps it — at once, or when the last borrower that
// pinned it is done (see Pins above). Heap-backed ArrayBuffers are freed by
// V8 when detached. lib/memory.ts has checked that the ArrayBuffer is one of
// ours, still attached, and not lent (lent memory is freed when it comes
// back); the pin holds even if that check was wrong.
Napi::Value Free(const Napi::CallbackInfo& info) {
  Napi::ArrayBuffer arrayBuffer = info[0].As<Napi::ArrayBuffer>();
  auto data = reinterpret_cast<uintptr_t>(arrayBuffer.Data());
  // Order matters: detach first, so no JS view can reach the pages we unmap.
  arrayBuffer.Detach();
  if (data == 0) return info.Env().Undefined();
  std::lock_guard<std::mutex> lock(registryMutex);
  auto found = registry->find(data);
  if (found != registry->end() && !found->second->freed) ReleaseLocked(found->second);
  return info.Env().Undefined();
}

// lend(arrayBuffer) -> token: pins the native allocation that holds the
// ArrayBuffer's first byte, for a borrower driven from JS (a socket's read
// buffer, a queued socket write). The token (the allocation's base address)
// goes to repay() exactly once. 0 when the memory is not a native iobuf
// allocation (V8 heap memory): nothing to pin.
Napi::Value Lend(const Napi::CallbackInfo& info) {
  auto data = reinterpret_cast<uintptr_t>(info[0].As<Napi::ArrayBuffer>().Data());
  double token = 0;
  if (data != 0) {
    std::lock_guard<std::mutex> lock(registryMutex);
    if (Allocation* allocation = FindLocked(data); allocation != nullptr && !allocation->freed) {
      allocation->pins++;
      AddonData::Of(info.Env())->jsLoans[BaseOf(allocation)]++;
      token = static_cast<double>(BaseOf(allocation));
    }
  }
  return Napi::Number::New(info.Env(), token);
}

// repay(token): the borrower is done with what lend() pinned.
Napi::Value Repay(const Napi::CallbackInfo& info) {
  auto base = static_cast<uintptr_t>(info[0].As<Napi::Number>().DoubleValue());
  auto& loans = AddonData::Of(info.Env())->jsLoans;
  auto loan = loans.find(base);
  std::lock_guard<std::mutex> lock(registryMutex);
  auto found = registry->find(base);
  if (loan == loans.end() || found == registry->end() || found->second->pins == 0) {
    throw MakeError(info.Env(), "ERR_IOBUF_INTERNAL", "repay() of memory that is not lent");
  }
  if (--loan->second == 0) loans.erase(loan);
  UnpinLocked(found->second);
  return info.Env().Undefined();
}

// pageKind(address) -> 'hugetlb' | 'thp' | 'normal' | 'unknown'
Napi::Value PageKind(const Napi::CallbackInfo& info) {
  auto address = static_cast<uintptr_t>(info[0].As<Napi::Number>().DoubleValue());
  const char* kind = "unknown";
  switch (os::QueryPageKind(address)) {
    case os::PageKind::kHugetlb: kind = "hugetlb"; break;
    case os::PageKind::kTransparentHuge: kind = "thp"; break;
    case os::PageKind::kNormal: kind = "normal"; break;
    case os::PageKind::kUnknown: break;
  }
  return Napi::String::New(info.Env(), kind);
}

}  // namespace

void PinAllocations(const struct iovec* entries, uint32_t count, std::vector<Allocation*>* pinned,
                    std::vector<uint32_t>* foreign) {
  std::lock_guard<std::mutex> lock(registryMutex);
  for (uint32_t i = 0; i < count; i++) {
    if (entries[i].iov_len == 0) continue;
    Allocation* allocation = FindLocked(reinterpret_cast<uintptr_t>(entries[i].iov_base));
    if (allocation == nullptr) {
      if (foreign != nullptr) foreign->push_back(i);
      continue;
    }
    if (!pinned->empty() && pinned->back() == allocation) continue;
    allocation->pins++;
    pinned->push_back(allocation);
  }
}

void UnpinAllocations(const std::vector<Allocation*>& pinned) {
  if (pinned.empty()) return;
  std::lock_guard<std::mutex> lock(registryMutex);
  for (Allocation* allocation : pinned) UnpinLocked(allocation);
}

void RepayEnvironmentLoans(AddonData* data) {
  std::lock_guard<std::mutex> lock(registryMutex);
  for (auto [base, count] : data->jsLoans) {
    auto found = registry->find(base);
    if (found == registry->end()) continue;
    Allocation* allocation = found->second;
    for (size_t i = 0; i < count && allocation->pins > 0; i++) {
      bool last = allocation->pins == 1;
      UnpinLocked(allocation);
      if (last) break;  // unpinned for good (and maybe deleted)
    }
  }
  data->jsLoans.clear();
}

void InitMemory(Napi::Env env, Napi::Object exports) {
  exports.Set("pageSize", Napi::Number::New(env, static_cast<double>(os::PageSize())));
  exports.Set("hugePageSize", Napi::Number::New(env, static_cast<double>(os::HugePageSize())));
  exports.Set("cacheLineSize", Napi::Number::New(env, static_cast<double>(os::CacheLineSize())));
  exports.Set("mapAligned", Napi::Function::New(env, MapAligned, "mapAligned"));
  exports.Set("mapHuge", Napi::Function::New(env, MapHuge, "mapHuge"));
  exports.Set("free", Napi::Function::New(env, Free, "free"));
  exports.Set("lend", Napi::Function::New(env, Lend, "lend"));
  exports.Set("repay", Napi::Function::New(env, Repay, "repay"));
  exports.Set("pageKind", Napi::Function::New(env, PageKind, "pageKind"));
}

}  // namespace iobuf
