// The OS layer: every syscall the addon makes goes through this header.
// Nothing here knows about Node-API; failures return a negative errno so the
// callers can turn them into JS errors with `code`, `errno` and `syscall`.
#pragma once

#include <cstddef>
#include <cstdint>

struct iovec;
struct io_uring_params;

namespace iobuf::os {

// Sizes as this kernel reports them, never assumed: arm64 kernels run with
// 4, 16 or 64 KiB base pages, whose huge pages are 2 MiB, 32 MiB or 512 MiB.
size_t PageSize();  // sysconf(_SC_PAGESIZE)
// The default hugetlb page size (what MAP_HUGETLB maps): /proc/meminfo
// Hugepagesize, else the THP size.
size_t HugePageSize();
// The PMD size THP uses (/sys/kernel/mm/transparent_hugepage/hpage_pmd_size),
// else the hugetlb size, else PageSize() when the kernel offers neither.
size_t TransparentHugePageSize();
size_t CacheLineSize();  // the L1 data cache line; 64 when nothing says

// One anonymous mapping. `base`/`mapLength` is what munmap must be given;
// `data` is the first usable byte (== base once the mapping has been trimmed).
struct Mapping {
  void* base = nullptr;
  size_t mapLength = 0;
};

// A failed call: the syscall's name and its errno (positive, as in <errno.h>).
struct Failure {
  const char* syscall = nullptr;
  int error = 0;
  explicit operator bool() const { return syscall != nullptr; }
};

// Anonymous read/write mapping of at least `size` bytes whose start is a
// multiple of `alignment` (a power of two >= the page size). Over-maps by
// `alignment` and unmaps the unaligned head and the tail.
Failure MapAligned(size_t size, size_t alignment, Mapping* out);

// Explicit huge pages (MAP_HUGETLB); `size` is rounded up to the huge page
// size. Fails with ENOMEM when the kernel has too few hugetlb pages reserved.
Failure MapHugetlb(size_t size, Mapping* out);

// True when the kernel may back MADV_HUGEPAGE regions with transparent huge
// pages (/sys/kernel/mm/transparent_hugepage/enabled is not "never").
bool TransparentHugePagesEnabled();

Failure AdviseHugePages(const Mapping& mapping);  // madvise(MADV_HUGEPAGE)
Failure AdviseDontFork(const Mapping& mapping);   // madvise(MADV_DONTFORK)
Failure AdviseDontDump(const Mapping& mapping);   // madvise(MADV_DONTDUMP)
Failure Lock(const Mapping& mapping);             // mlock
void Unmap(const Mapping& mapping);               // munmap; cannot fail for a mapping we made

enum class PageKind { kNormal, kTransparentHuge, kHugetlb, kUnknown };

// What the kernel reports (in /proc/self/smaps) for the mapping that holds
// `address`: hugetlb when its KernelPageSize is above the base page size,
// transparent-huge when it holds AnonHugePages, normal otherwise. kUnknown
// when no mapping holds the address or smaps cannot be read.
PageKind QueryPageKind(uintptr_t address);

// ---------------------------------------------------------------------------
// Vectored I/O (the iovec part). Each returns the bytes transferred (>= 0) or
// a negative errno; EINTR is retried here, so it never reaches a caller.
// `count` must not exceed IoVecMax(); the kernel says EINVAL otherwise.
// ---------------------------------------------------------------------------

int IoVecMax();  // IOV_MAX: the most entries one readv/writev takes (1024 on Linux)
long ReadV(int fd, const struct iovec* entries, int count);
long WriteV(int fd, const struct iovec* entries, int count);
long PreadV(int fd, const struct iovec* entries, int count, int64_t position);
long PwriteV(int fd, const struct iovec* entries, int count, int64_t position);

// Blocks until `fd` is writable (poll POLLOUT), for callers that were told
// EAGAIN on a non-blocking fd and must deliver every byte. 0 or a negative errno.
int WaitWritable(int fd);

// madvise(MADV_DONTFORK) over [address, address + length), which must be page-aligned.
Failure AdviseDontFork(void* address, size_t length);

// ---------------------------------------------------------------------------
// io_uring (the uring part), through the raw syscalls: no liburing, so a
// prebuilt binary needs nothing on the user's machine but the kernel. Each
// returns what the kernel returned (>= 0) or a negative errno; EINTR is
// returned, not retried (the callers decide: a wait may be interrupted).
// ---------------------------------------------------------------------------

int UringSetup(unsigned entries, struct io_uring_params* params);  // the ring's fd
int UringEnter(int fd, unsigned toSubmit, unsigned minComplete, unsigned flags, const void* argument,
               size_t argumentSize);
int UringRegister(int fd, unsigned opcode, const void* argument, unsigned count);

// A shared mapping of `length` bytes of `fd` at `offset` (the io_uring rings
// and SQE array), populated up front.
Failure MapShared(int fd, int64_t offset, size_t length, Mapping* out);

// A non-blocking, close-on-exec eventfd (counter 0), or a negative errno.
int CreateEventFd();
// Reads the eventfd's counter (resetting it to 0); nothing when it is 0.
void DrainEventFd(int fd);
void CloseFd(int fd);

// The number in a /proc/sys file (e.g. /proc/sys/kernel/io_uring_disabled),
// or `fallback` when the file is missing or unreadable.
long ReadSysctl(const char* path, long fallback);

}  // namespace iobuf::os
