// Linux implementation of os.h.
#include "os.h"

#include <linux/io_uring.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <climits>
#include <cstdio>
#include <cstring>

namespace iobuf::os {

namespace {

// Reads the first number that follows `key` in a small text file such as
// /proc/meminfo; returns `fallback` when the file or the key is missing.
size_t ReadNumberAfter(const char* path, const char* key, size_t fallback) {
  FILE* file = fopen(path, "re");
  if (file == nullptr) return fallback;
  char line[256];
  size_t result = fallback;
  size_t keyLength = strlen(key);
  while (fgets(line, sizeof line, file) != nullptr) {
    if (strncmp(line, key, keyLength) == 0) {
      unsigned long long value;
      if (sscanf(line + keyLength, " %llu", &value) == 1) result = value;
      break;
    }
  }
  fclose(file);
  return result;
}

Failure Fail(const char* syscall) { return Failure{syscall, errno}; }

Failure Advise(const Mapping& mapping, int advice) {
  if (madvise(mapping.base, mapping.mapLength, advice) != 0) return Fail("madvise");
  return {};
}

}  // namespace

size_t PageSize() {
  static const size_t size = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return size;
}

size_t HugePageSize() {
  static const size_t size = [] {
    size_t kib = ReadNumberAfter("/proc/meminfo", "Hugepagesize:", 0);
    if (kib != 0) return kib * 1024;
    return TransparentHugePageSize();
  }();
  return size;
}

size_t TransparentHugePageSize() {
  static const size_t size = [] {
    size_t bytes = ReadNumberAfter("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size", "", 0);
    if (bytes != 0) return bytes;
    size_t kib = ReadNumberAfter("/proc/meminfo", "Hugepagesize:", 0);
    return kib != 0 ? kib * 1024 : PageSize();
  }();
  return size;
}

size_t CacheLineSize() {
  static const size_t size = [] {
#ifdef _SC_LEVEL1_DCACHE_LINESIZE  // glibc; musl's sysconf has no cache queries
    long line = sysconf(_SC_LEVEL1_DCACHE_LINESIZE);
    if (line > 0) return static_cast<size_t>(line);
#endif
    // sysfs lists cpu0's caches as index0, index1, …; the order differs
    // between architectures, so look for the level-1 data (or unified) one.
    for (int index = 0; index < 8; index++) {
      char directory[80];
      char path[128];
      char type[32] = {0};
      snprintf(directory, sizeof directory, "/sys/devices/system/cpu/cpu0/cache/index%d", index);
      snprintf(path, sizeof path, "%s/level", directory);
      if (ReadNumberAfter(path, "", 0) != 1) continue;
      snprintf(path, sizeof path, "%s/type", directory);
      FILE* file = fopen(path, "re");
      if (file == nullptr) continue;
      bool read = fgets(type, sizeof type, file) != nullptr;
      fclose(file);
      if (!read || (strncmp(type, "Data", 4) != 0 && strncmp(type, "Unified", 7) != 0)) continue;
      snprintf(path, sizeof path, "%s/coherency_line_size", directory);
      size_t line = ReadNumberAfter(path, "", 0);
      if (line != 0) return line;
    }
    return size_t{64};
  }();
  return size;
}

Failure MapAligned(size_t size, size_t alignment, Mapping* out) {
  const size_t page = PageSize();
  const size_t length = (size + page - 1) & ~(page - 1);
  const size_t slack = alignment > page ? alignment : 0;
  void* raw = mmap(nullptr, length + slack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return Fail("mmap");
  uintptr_t start = reinterpret_cast<uintptr_t>(raw);
  uintptr_t aligned = (start + alignment - 1) & ~(uintptr_t{alignment} - 1);
  // Trim: [start, aligned) and [aligned + length, start + length + slack).
  if (aligned > start) munmap(raw, aligned - start);
  uintptr_t end = start + length + slack;
  if (end > aligned + length) munmap(reinterpret_cast<void*>(aligned + length), end - aligned - length);
  out->base = reinterpret_cast<void*>(aligned);
  out->mapLength = length;
  return {};
}

Failure MapHugetlb(size_t size, Mapping* out) {
  const size_t huge = HugePageSize();
  const size_t length = (size + huge - 1) & ~(huge - 1);
  void* raw = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
  if (raw == MAP_FAILED) return Fail("mmap");
  out->base = raw;
  out->mapLength = length;
  return {};
}

bool TransparentHugePagesEnabled() {
  FILE* file = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "re");
  if (file == nullptr) return false;
  char text[128] = {0};
  size_t read = fread(text, 1, sizeof text - 1, file);
  fclose(file);
  text[read] = '\0';
  // The selected mode is in brackets: "always [madvise] never".
  return strstr(text, "[never]") == nullptr && strchr(text, '[') != nullptr;
}

Failure AdviseHugePages(const Mapping& mapping) { return Advise(mapping, MADV_HUGEPAGE); }
Failure AdviseDontFork(const Mapping& mapping) { return Advise(mapping, MADV_DONTFORK); }
Failure AdviseDontDump(const Mapping& mapping) { return Advise(mapping, MADV_DONTDUMP); }

Failure Lock(const Mapping& mapping) {
  if (mlock(mapping.base, mapping.mapLength) != 0) return Fail("mlock");
  return {};
}

void Unmap(const Mapping& mapping) {
  if (mapping.base != nullptr) munmap(mapping.base, mapping.mapLength);
}

PageKind QueryPageKind(uintptr_t address) {
  FILE* file = fopen("/proc/self/smaps", "re");
  if (file == nullptr) return PageKind::kUnknown;
  // smaps is a sequence of blocks: a header line "start-end perms ..." and
  // then "Key: value kB" lines. Find the block whose range holds `address`.
  char line[512];
  bool inside = false;
  size_t kernelPageKib = 0;
  size_t anonHugeKib = 0;
  while (fgets(line, sizeof line, file) != nullptr) {
    uintptr_t start, end;
    // Only header lines parse as "hex-hex" ("AnonHugePages:" stops after "A").
    if (sscanf(line, "%" SCNxPTR "-%" SCNxPTR, &start, &end) == 2) {
      if (inside) break;  // left the block we wanted
      inside = address >= start && address < end;
      continue;
    }
    if (!inside) continue;
    unsigned long long value;
    if (sscanf(line, "KernelPageSize: %llu kB", &value) == 1) kernelPageKib = value;
    if (sscanf(line, "AnonHugePages: %llu kB", &value) == 1) anonHugeKib = value;
  }
  fclose(file);
  if (!inside) return PageKind::kUnknown;
  if (kernelPageKib * 1024 > PageSize()) return PageKind::kHugetlb;
  if (anonHugeKib > 0) return PageKind::kTransparentHuge;
  return PageKind::kNormal;
}

// ---------------------------------------------------------------------------
// Vectored I/O
// ---------------------------------------------------------------------------

namespace {

// Runs `call` again while it fails with EINTR; returns its result or -errno.
template <typename Call>
long RetryInterrupted(Call call) {
  for (;;) {
    ssize_t result = call();
    if (result >= 0) return static_cast<long>(result);
    if (errno != EINTR) return -errno;
  }
}

}  // namespace

int IoVecMax() {
  static const int max = [] {
    long value = sysconf(_SC_IOV_MAX);
    return value > 0 ? static_cast<int>(value) : IOV_MAX;
  }();
  return max;
}

long ReadV(int fd, const struct iovec* entries, int count) {
  return RetryInterrupted([&] { return readv(fd, entries, count); });
}

long WriteV(int fd, const struct iovec* entries, int count) {
  return RetryInterrupted([&] { return writev(fd, entries, count); });
}

long PreadV(int fd, const struct iovec* entries, int count, int64_t position) {
  return RetryInterrupted([&] { return preadv(fd, entries, count, static_cast<off_t>(position)); });
}

long PwriteV(int fd, const struct iovec* entries, int count, int64_t position) {
  return RetryInterrupted([&] { return pwritev(fd, entries, count, static_cast<off_t>(position)); });
}

int WaitWritable(int fd) {
  struct pollfd entry = {fd, POLLOUT, 0};
  for (;;) {
    int ready = poll(&entry, 1, -1);
    if (ready > 0) return 0;  // writable, or POLLERR/POLLHUP: the next write reports it
    if (ready < 0 && errno != EINTR) return -errno;
  }
}

Failure AdviseDontFork(void* address, size_t length) {
  if (madvise(address, length, MADV_DONTFORK) != 0) return Fail("madvise");
  return {};
}

// ---------------------------------------------------------------------------
// io_uring
// ---------------------------------------------------------------------------

// glibc has no wrappers for these; the numbers come from the kernel headers
// (the same on every architecture since 5.1: 425, 426, 427).
#if !defined(__NR_io_uring_setup) || !defined(__NR_io_uring_enter) || !defined(__NR_io_uring_register)
#error "the kernel headers do not define the io_uring syscall numbers"
#endif

int UringSetup(unsigned entries, struct io_uring_params* params) {
  long result = syscall(__NR_io_uring_setup, entries, params);
  return result < 0 ? -errno : static_cast<int>(result);
}

int UringEnter(int fd, unsigned toSubmit, unsigned minComplete, unsigned flags, const void* argument,
               size_t argumentSize) {
  long result = syscall(__NR_io_uring_enter, fd, toSubmit, minComplete, flags, argument, argumentSize);
  return result < 0 ? -errno : static_cast<int>(result);
}

int UringRegister(int fd, unsigned opcode, const void* argument, unsigned count) {
  long result = syscall(__NR_io_uring_register, fd, opcode, argument, count);
  return result < 0 ? -errno : static_cast<int>(result);
}

Failure MapShared(int fd, int64_t offset, size_t length, Mapping* out) {
  void* address = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
                       static_cast<off_t>(offset));
  if (address == MAP_FAILED) return Fail("mmap");
  out->base = address;
  out->mapLength = length;
  return {};
}

int CreateEventFd() {
  int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  return fd < 0 ? -errno : fd;
}

void DrainEventFd(int fd) {
  eventfd_t value;
  while (eventfd_read(fd, &value) != 0 && errno == EINTR) {
  }
}

void CloseFd(int fd) {
  if (fd >= 0) close(fd);
}

long ReadSysctl(const char* path, long fallback) {
  FILE* file = fopen(path, "re");
  if (file == nullptr) return fallback;
  long value = fallback;
  if (fscanf(file, "%ld", &value) != 1) value = fallback;
  fclose(file);
  return value;
}

}  // namespace iobuf::os
