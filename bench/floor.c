// The C floor of the syscall- and memcpy-bound benchmark rows: the same
// system call (or copy) on the same kind of memory as the Node competitors
// beside it, with nothing in between. Compiled by the benchmarks themselves
// (bench/harness.mjs ensureFloorBinary: `cc -O2` into bench/.build/floor) and
// run as one more competitor of a table, in a process of its own like every
// trial. Prints one JSON line, read by the harness:
//   {"value": …, "extras": {…}}   or   {"skip": "reason"}
//
//   floor writev SAMPLES SAMPLE_MS WARMUP_MS
//       writev of 16 × 4 KiB to /dev/null from one 4 KiB-aligned 64 KiB
//       region (a pool slab's layout), the iovec array prepared once.
//       value: median ns per call.
//   floor memcpy SIZE SAMPLES SAMPLE_MS WARMUP_MS
//       memcpy of SIZE bytes from offset 4 of a read buffer (a payload after
//       its 4-byte length) to the start of a 4 KiB-aligned buffer (a pooled
//       frame). value: median ns per copy.
//   floor pread FILE SIZE READ_SIZE MEMORY SAMPLES
//       O_DIRECT pread of FILE front to back in READ_SIZE calls into one
//       READ_SIZE buffer of MEMORY: '4k' (4 KiB pages, THP refused), 'thp'
//       (2 MiB-aligned, MADV_HUGEPAGE) or 'hugetlb' (MAP_HUGETLB). The page
//       cache is dropped before each pass when allowed (root). value: median
//       GB/s (bytes per ns), open and close included as in the Node passes.
//
// The timing loop is bench/harness.mjs timeOps's: warm up for WARMUP_MS,
// size a batch to last SAMPLE_MS, take SAMPLES batches, report the median
// time per op and the median CPU time per op (extras.cpuNs).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define ENTRIES 16
#define ENTRY_SIZE 4096
#define HUGE_PAGE (2u << 20)

static double now_ns(clockid_t clock) {
  struct timespec ts;
  clock_gettime(clock, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int compare_doubles(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return (x > y) - (x < y);
}

static double median(double* values, int count) {
  qsort(values, (size_t)count, sizeof(double), compare_doubles);
  return count % 2 ? values[count / 2] : (values[count / 2 - 1] + values[count / 2]) / 2;
}

static void skip(const char* reason) {
  printf("{\"skip\":\"%s\"}\n", reason);
  exit(0);
}

static void fail(const char* what) {
  printf("{\"error\":\"%s: %s\"}\n", what, strerror(errno));
  exit(0);
}

// ---------------------------------------------------------------------------
// The timing loop (timeOps)
// ---------------------------------------------------------------------------

typedef int (*op_fn)(void* state);

static void time_ops(op_fn op, void* state, int samples, double sample_ms, double warmup_ms) {
  double start = now_ns(CLOCK_MONOTONIC);
  double ops = 0;
  while (now_ns(CLOCK_MONOTONIC) - start < warmup_ms * 1e6) {
    for (int i = 0; i < 64; i++) {
      if (op(state) != 0) fail("op");
    }
    ops += 64;
  }
  double per_op = (now_ns(CLOCK_MONOTONIC) - start) / ops;
  long batch = (long)(sample_ms * 1e6 / per_op) + 1;
  double* wall = calloc((size_t)samples, sizeof(double));
  double* cpu = calloc((size_t)samples, sizeof(double));
  for (int s = 0; s < samples; s++) {
    double cpu_start = now_ns(CLOCK_PROCESS_CPUTIME_ID);
    double wall_start = now_ns(CLOCK_MONOTONIC);
    for (long i = 0; i < batch; i++) {
      if (op(state) != 0) fail("op");
    }
    wall[s] = (now_ns(CLOCK_MONOTONIC) - wall_start) / (double)batch;
    cpu[s] = (now_ns(CLOCK_PROCESS_CPUTIME_ID) - cpu_start) / (double)batch;
  }
  printf("{\"value\":%.3f,\"extras\":{\"cpuNs\":%.3f}}\n", median(wall, samples), median(cpu, samples));
}

// ---------------------------------------------------------------------------
// writev
// ---------------------------------------------------------------------------

struct writev_state {
  int fd;
  struct iovec iov[ENTRIES];
};

static int writev_op(void* state) {
  struct writev_state* w = state;
  return writev(w->fd, w->iov, ENTRIES) == ENTRIES * ENTRY_SIZE ? 0 : -1;
}

static void run_writev(int samples, double sample_ms, double warmup_ms) {
  struct writev_state w;
  uint8_t* region = NULL;
  if (posix_memalign((void**)&region, 4096, ENTRIES * ENTRY_SIZE) != 0) fail("posix_memalign");
  for (int i = 0; i < ENTRIES; i++) {
    memset(region + i * ENTRY_SIZE, i, ENTRY_SIZE);
    w.iov[i].iov_base = region + i * ENTRY_SIZE;
    w.iov[i].iov_len = ENTRY_SIZE;
  }
  w.fd = open("/dev/null", O_WRONLY);
  if (w.fd < 0) fail("open /dev/null");
  time_ops(writev_op, &w, samples, sample_ms, warmup_ms);
}

// ---------------------------------------------------------------------------
// memcpy
// ---------------------------------------------------------------------------

struct memcpy_state {
  uint8_t* source;
  uint8_t* target;
  size_t size;
};

// Called through a volatile pointer so the compiler can neither inline a
// fixed-size copy nor drop a copy whose result nobody reads.
static void* (*volatile copy)(void*, const void*, size_t) = memcpy;

static int memcpy_op(void* state) {
  struct memcpy_state* m = state;
  copy(m->target, m->source + 4, m->size);
  __asm__ volatile("" ::: "memory");
  return 0;
}

static void run_memcpy(size_t size, int samples, double sample_ms, double warmup_ms) {
  struct memcpy_state m = { .size = size };
  size_t source_size = size + 4 > 65536 ? size + 4 : 65536;
  if (posix_memalign((void**)&m.source, 64, source_size) != 0) fail("posix_memalign");
  if (posix_memalign((void**)&m.target, 4096, size) != 0) fail("posix_memalign");
  memset(m.source, 7, source_size);
  memset(m.target, 0, size);
  time_ops(memcpy_op, &m, samples, sample_ms, warmup_ms);
}

// ---------------------------------------------------------------------------
// O_DIRECT pread
// ---------------------------------------------------------------------------

// AnonHugePages (kB) of the mapping that holds `address`, from /proc/self/smaps.
static long anon_huge_kb(const void* address) {
  FILE* smaps = fopen("/proc/self/smaps", "r");
  if (smaps == NULL) return -1;
  char line[512];
  int inside = 0;
  long found = -1;
  while (fgets(line, sizeof line, smaps) != NULL) {
    unsigned long from, to;
    if (sscanf(line, "%lx-%lx ", &from, &to) == 2) {  // a mapping's first line; its fields follow
      if (inside) break;
      inside = (uintptr_t)address >= from && (uintptr_t)address < to;
      continue;
    }
    long kb;
    if (inside && sscanf(line, "AnonHugePages: %ld kB", &kb) == 1) found = kb;
  }
  fclose(smaps);
  return found;
}

static uint8_t* alloc_memory(const char* kind, size_t size, char* pages, size_t pages_size) {
  uint8_t* buffer;
  if (strcmp(kind, "hugetlb") == 0) {
    size_t rounded = (size + HUGE_PAGE - 1) & ~(size_t)(HUGE_PAGE - 1);
    buffer = mmap(NULL, rounded, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
    if (buffer == MAP_FAILED) skip("no hugetlb pages reserved (MAP_HUGETLB failed)");
    memset(buffer, 0, size);
    snprintf(pages, pages_size, "hugetlb");
    return buffer;
  }
  // 2 MiB-aligned so THP can back it (and so the two kinds differ only in page size).
  size_t rounded = (size + HUGE_PAGE - 1) & ~(size_t)(HUGE_PAGE - 1);
  uint8_t* mapping = mmap(NULL, rounded + HUGE_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mapping == MAP_FAILED) fail("mmap");
  buffer = (uint8_t*)(((uintptr_t)mapping + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
  int thp = strcmp(kind, "thp") == 0;
  if (madvise(buffer, rounded, thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE) != 0) fail("madvise");
  memset(buffer, 0, size);  // fault the pages in before timing, as the Node trials do
  long huge = anon_huge_kb(buffer);
  snprintf(pages, pages_size, "%s", huge > 0 ? "thp" : "4 KiB");
  return buffer;
}

static int drop_caches(void) {
  sync();
  int fd = open("/proc/sys/vm/drop_caches", O_WRONLY);
  if (fd < 0) return 0;
  int ok = write(fd, "3", 1) == 1;
  close(fd);
  return ok;
}

static void run_pread(const char* file, size_t size, size_t read_size, const char* kind, int samples) {
  char pages[32];
  uint8_t* buffer = alloc_memory(kind, read_size, pages, sizeof pages);
  double* results = calloc((size_t)samples, sizeof(double));
  int dropped = 1;
  for (int s = 0; s < samples; s++) {
    dropped = drop_caches() && dropped;
    double start = now_ns(CLOCK_MONOTONIC);
    int fd = open(file, O_RDONLY | O_DIRECT);
    if (fd < 0) fail("open O_DIRECT");
    size_t total = 0;
    for (;;) {
      ssize_t n = pread(fd, buffer, read_size, (off_t)total);
      if (n < 0) fail("pread");
      total += (size_t)n;
      if ((size_t)n < read_size) break;
    }
    close(fd);
    double ns = now_ns(CLOCK_MONOTONIC) - start;
    if (total != size) {
      errno = EIO;
      fail("short file");
    }
    results[s] = (double)size / ns;
  }
  printf("{\"value\":%.4f,\"note\":\"pages: %s%s\"}\n", median(results, samples), pages,
         dropped ? "" : "; page cache NOT dropped (needs root)");
}

int main(int argc, char** argv) {
  if (argc >= 5 && strcmp(argv[1], "writev") == 0) {
    run_writev(atoi(argv[2]), atof(argv[3]), atof(argv[4]));
  } else if (argc >= 6 && strcmp(argv[1], "memcpy") == 0) {
    run_memcpy((size_t)atol(argv[2]), atoi(argv[3]), atof(argv[4]), atof(argv[5]));
  } else if (argc >= 7 && strcmp(argv[1], "pread") == 0) {
    run_pread(argv[2], (size_t)atol(argv[3]), (size_t)atol(argv[4]), argv[5], atoi(argv[6]));
  } else {
    fprintf(stderr, "usage: floor writev SAMPLES SAMPLE_MS WARMUP_MS\n"
                    "       floor memcpy SIZE SAMPLES SAMPLE_MS WARMUP_MS\n"
                    "       floor pread FILE SIZE READ_SIZE 4k|thp|hugetlb SAMPLES\n");
    return 2;
  }
  return 0;
}
