// Per-environment state. Each Node environment (the main thread and every
// worker) loads the addon once and gets its own AddonData; JS references
// never live in C++ statics.
#pragma once

#include <napi.h>

namespace iobuf {

struct AddonData {
  Napi::FunctionReference errorClass;  // lib/errors.ts IobufError
  // The longest Buffer this runtime can make (buffer.constants.MAX_LENGTH,
  // set by lib/binding.ts at load): 2^32 on Node 20 and Bun, 2^53 - 1 on
  // Node 22 and later. Until it is set, the smallest of them.
  double maxBufferLength = 4294967296.0;

  static AddonData* Of(Napi::Env env) { return env.GetInstanceData<AddonData>(); }
};

// One Init per part; each adds its functions to `exports`.
void InitMemory(Napi::Env env, Napi::Object exports);
void InitPool(Napi::Env env, Napi::Object exports);
void InitIoVec(Napi::Env env, Napi::Object exports);

}  // namespace iobuf
