// The pool part's native side. The pool itself lives in lib/pool.ts (its hot
// path must not cross into native code); native code only makes and unmakes
// the per-acquire views that strict mode hands out.
#include "addon.h"
#include "errors.h"

namespace iobuf {
namespace {

// viewOf(slab: ArrayBuffer, offset, length) -> Buffer over slab memory with an
// ArrayBuffer of its own, so that detaching it (strict release) leaves the
// slab and every other view untouched.
// Precondition (checked by lib/pool.ts): offset + length <= slab.byteLength.
// The new ArrayBuffer has no finalizer and does not own the memory: the
// caller keeps the slab's ArrayBuffer reachable from the view for as long as
// the view lives (lib/pool.ts stores it on the view's ArrayBuffer).
Napi::Value ViewOf(const Napi::CallbackInfo& info) {
  auto slab = info[0].As<Napi::ArrayBuffer>();
  auto offset = static_cast<size_t>(info[1].As<Napi::Number>().Int64Value());
  auto length = static_cast<size_t>(info[2].As<Napi::Number>().Int64Value());
  auto* data = static_cast<uint8_t*>(slab.Data()) + offset;
  CheckBufferLength(info.Env(), static_cast<double>(length), "length");
  return Napi::Buffer<uint8_t>::New(info.Env(), data, length);
}

// detach(arrayBuffer): every view of it reads as empty from now on.
Napi::Value Detach(const Napi::CallbackInfo& info) {
  info[0].As<Napi::ArrayBuffer>().Detach();
  return info.Env().Undefined();
}

}  // namespace

void InitPool(Napi::Env env, Napi::Object exports) {
  exports.Set("viewOf", Napi::Function::New(env, ViewOf, "viewOf"));
  exports.Set("detach", Napi::Function::New(env, Detach, "detach"));
}

}  // namespace iobuf
