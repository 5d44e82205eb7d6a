// Registers the parts of the addon. Nothing else lives here.
#include "addon.h"

#ifdef IOBUF_ASAN
#include <sanitizer/lsan_interface.h>
#endif

namespace iobuf {
namespace {

Napi::Value SetErrorClass(const Napi::CallbackInfo& info) {
  AddonData::Of(info.Env())->errorClass = Napi::Persistent(info[0].As<Napi::Function>());
  return info.Env().Undefined();
}

Napi::Value SetMaxBufferLength(const Napi::CallbackInfo& info) {
  AddonData::Of(info.Env())->maxBufferLength = info[0].As<Napi::Number>().DoubleValue();
  return info.Env().Undefined();
}

#ifdef IOBUF_ASAN
// Sanitizer builds only (test/setup/asan.ts): vitest kills its workers before
// LeakSanitizer's exit-time check, so the tests ask for one. Nonzero = leaks
// found (they are printed to stderr).
Napi::Value LeakCheck(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), __lsan_do_recoverable_leak_check());
}
#endif

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  env.SetInstanceData(new AddonData());
  exports.Set("setErrorClass", Napi::Function::New(env, SetErrorClass, "setErrorClass"));
  exports.Set("setMaxBufferLength", Napi::Function::New(env, SetMaxBufferLength, "setMaxBufferLength"));
#ifdef IOBUF_ASAN
  exports.Set("leakCheck", Napi::Function::New(env, LeakCheck, "leakCheck"));
#endif
  InitMemory(env, exports);
  InitPool(env, exports);
  InitIoVec(env, exports);
  return exports;
}

}  // namespace iobuf

// The macro pastes its second argument into a symbol name: it must be unqualified.
static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) {
  return iobuf::Init(env, exports);
}
NODE_API_MODULE(iobuf, InitAddon)
