// Test scaffolding for scripts/ci-arm64.sh, not part of iobuf: lets Bun's musl
// build (the only musl JavaScript runtime with Node-API on the npm registry)
// run on Debian, which has musl's libc and loader but no musl libstdc++.
// Bun's musl build links libstdc++.so.6; Debian's (glibc-built) one works
// under musl's loader once these seven glibc-only symbols exist. Built with
// musl-gcc; its soname stands in for ld-linux-x86-64.so.2, which that
// libstdc++ names as a dependency.
#define _GNU_SOURCE
#include <locale.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/random.h>
#include <time.h>

// libstdc++ reads it to skip atomic reference counts in single-threaded
// processes; 0 ("maybe threaded") is always safe.
char __libc_single_threaded = 0;

uint32_t arc4random(void) {
  uint32_t value = 0;
  while (getrandom(&value, sizeof value, 0) != sizeof value) {}
  return value;
}

size_t __strftime_l(char* out, size_t size, const char* format, const struct tm* time, locale_t locale) {
  return strftime_l(out, size, format, time, locale);
}

// The destructors of thread_local objects, run when their thread ends
// (musl has no such hook: a pthread key's destructor runs them).
struct destructor { void (*run)(void*); void* object; struct destructor* next; };
static pthread_key_t destructorKey;
static pthread_once_t destructorOnce = PTHREAD_ONCE_INIT;
static void runDestructors(void* head) {
  for (struct destructor* entry = head; entry != NULL;) {
    struct destructor* next = entry->next;
    entry->run(entry->object);
    free(entry);
    entry = next;
  }
}
static void makeKey(void) { pthread_key_create(&destructorKey, runDestructors); }
int __cxa_thread_atexit_impl(void (*run)(void*), void* object, void* dso) {
  (void)dso;
  pthread_once(&destructorOnce, makeKey);
  struct destructor* entry = malloc(sizeof *entry);
  if (entry == NULL) return -1;
  entry->run = run;
  entry->object = object;
  entry->next = pthread_getspecific(destructorKey);
  pthread_setspecific(destructorKey, entry);
  return 0;
}

// "Not found": libgcc's unwinder then searches with dl_iterate_phdr, which musl has.
int _dl_find_object(void* address, void* result) { (void)address; (void)result; return -1; }
// libgcc_s's CPU feature probe for function multi-versioning: report nothing.
struct { unsigned vendor, type, subtype; unsigned features[1]; } __cpu_model;
int __cpu_indicator_init(void) { return 0; }
