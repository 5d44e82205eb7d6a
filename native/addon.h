// Per-environment state. Each Node environment (the main thread and every
// worker) loads the addon once and gets its own AddonData; JS references
// never live in C++ statics.
#pragma once

#include <napi.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

namespace iobuf {

struct PoolMember;  // pool.cc: this thread's membership in one shared pool

struct AddonData {
  napi_env env = nullptr;              // the environment this data belongs to
  Napi::FunctionReference errorClass;  // lib/errors.ts IobufError
  // The longest Buffer this runtime can make (buffer.constants.MAX_LENGTH,
  // set by lib/binding.ts at load): 2^32 on Node 20 and Bun, 2^53 - 1 on
  // Node 22 and later. Until it is set, the smallest of them.
  double maxBufferLength = 4294967296.0;

  // Set by the environment's cleanup hook (a worker's return, process.exit,
  // an uncaught error or terminate()): from then on no JavaScript may run in
  // this environment, and completions that arrive late are dropped.
  std::atomic<bool> tearingDown{false};

  // Pools this thread has joined, indexed by member id (pool.cc).
  std::vector<std::unique_ptr<PoolMember>> poolMembers;
  // Wakes this thread's pools when another thread left one without a word
  // (pool.cc); null until lib/pool/ set a handler.
  napi_threadsafe_function poolWake = nullptr;
  Napi::FunctionReference poolWakeHandler;
  std::atomic<bool> poolWakePending{false};

  // Pins this environment's JavaScript took through lend() and has not
  // repaid (memory.cc): base address -> count. A thread that dies with
  // loans out (a socket write in flight) repays them in its cleanup hook,
  // once its sockets are closed and libuv no longer reads or writes them.
  std::unordered_map<uintptr_t, size_t> jsLoans;

  AddonData();
  ~AddonData();  // pool.cc, where PoolMember is complete
  static AddonData* Of(Napi::Env env) { return env.GetInstanceData<AddonData>(); }
};

// One Init per part; each adds its functions to `exports`.
void InitMemory(Napi::Env env, Napi::Object exports);
void InitViews(Napi::Env env, Napi::Object exports);
void InitPool(Napi::Env env, Napi::Object exports);
void InitIoVec(Napi::Env env, Napi::Object exports);
void InitUring(Napi::Env env, Napi::Object exports);

// The environment is going away (called from addon.cc's cleanup hook, on the
// environment's own thread, before Node closes its handles): a pool member
// that did not leave leaves now.
void PoolEnvironmentCleanup(AddonData* data);

// The environment is going away: repays the pins its JavaScript still holds (memory.cc).
void RepayEnvironmentLoans(AddonData* data);

}  // namespace iobuf
