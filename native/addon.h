// Per-environment state. Each Node environment (the main thread and every
// worker) loads the addon once and gets its own AddonData; JS references
// never live in C++ statics.
#pragma once

#include <napi.h>

namespace iobuf {

struct AddonData {
  Napi::FunctionReference errorClass;  // lib/errors.ts IobufError

  static AddonData* Of(Napi::Env env) { return env.GetInstanceData<AddonData>(); }
};

// One Init per part; each adds its functions to `exports`.
void InitMemory(Napi::Env env, Napi::Object exports);
void InitPool(Napi::Env env, Napi::Object exports);
void InitIoVec(Napi::Env env, Napi::Object exports);
void InitUring(Napi::Env env, Napi::Object exports);

}  // namespace iobuf
