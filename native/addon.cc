// Registers the parts of the addon. Nothing else lives here.
#include "addon.h"

namespace iobuf {
namespace {

Napi::Value SetErrorClass(const Napi::CallbackInfo& info) {
  AddonData::Of(info.Env())->errorClass = Napi::Persistent(info[0].As<Napi::Function>());
  return info.Env().Undefined();
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  env.SetInstanceData(new AddonData());
  exports.Set("setErrorClass", Napi::Function::New(env, SetErrorClass, "setErrorClass"));
  InitMemory(env, exports);
  InitPool(env, exports);
  return exports;
}

}  // namespace iobuf

// The macro pastes its second argument into a symbol name: it must be unqualified.
static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) {
  return iobuf::Init(env, exports);
}
NODE_API_MODULE(iobuf, InitAddon)
