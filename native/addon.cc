// Registers the parts of the addon and the environment's cleanup hook.
#include "addon.h"

#include "errors.h"

#ifdef IOBUF_ASAN
#include <sanitizer/lsan_interface.h>
#endif

namespace iobuf {
namespace {

Napi::Value SetErrorClass(const Napi::CallbackInfo& info) {
  AddonData::Of(info.Env())->errorClass = Napi::Persistent(info[0].As<Napi::Function>());
  return info.Env().Undefined();
}

// errnoName(errno) -> "ENOMEM", or undefined for a number Linux does not
// define: the name the addon gives a failed syscall's `code` (errors.cc).
// Not public; the tests check the table against os.constants.errno.
Napi::Value ErrnoName(const Napi::CallbackInfo& info) {
  const char* name = ErrnoNameOf(info[0].As<Napi::Number>().Int32Value());
  if (name == nullptr) return info.Env().Undefined();
  return Napi::String::New(info.Env(), name);
}

// setMaxBufferLength(length): the longest Buffer this runtime makes (lib/memory.ts, at load).
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

// Runs when the environment ends, however it ends (JavaScript does not run
// after worker.terminate(); this does). Registered after InitPool made the
// environment's wake function, so it runs before Node's own cleanup of it
// (cleanup hooks run last-registered first).
void Cleanup(void* arg) {
  auto* data = static_cast<AddonData*>(arg);
  data->tearingDown.store(true);
  PoolEnvironmentCleanup(data);
  RepayEnvironmentLoans(data);
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData();
  data->env = env;
  env.SetInstanceData(data);
  exports.Set("setErrorClass", Napi::Function::New(env, SetErrorClass, "setErrorClass"));
  exports.Set("errnoName", Napi::Function::New(env, ErrnoName, "errnoName"));
  exports.Set("setMaxBufferLength", Napi::Function::New(env, SetMaxBufferLength, "setMaxBufferLength"));
#ifdef IOBUF_ASAN
  exports.Set("leakCheck", Napi::Function::New(env, LeakCheck, "leakCheck"));
#endif
  InitMemory(env, exports);
  InitViews(env, exports);
  InitPool(env, exports);
  InitIoVec(env, exports);
  InitUring(env, exports);
  NAPI_THROW_IF_FAILED(env, napi_add_env_cleanup_hook(env, Cleanup, data), exports);
  return exports;
}

}  // namespace iobuf

// The macro pastes its second argument into a symbol name: it must be unqualified.
static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return iobuf::Init(env, exports); }
NODE_API_MODULE(iobuf, InitAddon)
