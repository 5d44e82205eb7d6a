// ArrayBuffer and view operations that every part uses: the address of an
// ArrayBuffer's or a view's memory, a Buffer over existing memory, detach, and
// the payload copy of the frames part. None of them allocates memory of its
// own or knows which part the memory belongs to (memory.cc keeps that).
#include <napi.h>

#include <cassert>
#include <cstdint>
#include <cstring>
#include <string>

#include "addon.h"
#include "errors.h"

namespace iobuf {
namespace {

// ---------------------------------------------------------------------------
// Addresses. Addresses fit in 47 bits (57 with 5-level paging), so a double
// holds them exactly.
// ---------------------------------------------------------------------------

// addressOf(arrayBuffer) -> number: the data address, 0 when detached.
Napi::Value AddressOf(const Napi::CallbackInfo& info) {
  void* data = info[0].As<Napi::ArrayBuffer>().Data();
  return Napi::Number::New(info.Env(), static_cast<double>(reinterpret_cast<uintptr_t>(data)));
}

// viewAddress(view) -> the address of the view's first byte (0 when its
// buffer is detached). For a small typed array that V8 keeps inside its own
// heap, asking for the data moves the bytes out to a backing store that
// never moves again; the address stays true while the view is reachable.
Napi::Value ViewAddress(const Napi::CallbackInfo& info) {
  napi_env env = info.Env();
  napi_value view = info[0];
  void* data = nullptr;
  bool isTypedArray = false;
  napi_is_typedarray(env, view, &isTypedArray);
  if (isTypedArray) {
    NAPI_THROW_IF_FAILED(env, napi_get_typedarray_info(env, view, nullptr, nullptr, &data, nullptr, nullptr),
                         Napi::Value());
  } else {
    NAPI_THROW_IF_FAILED(env, napi_get_dataview_info(env, view, nullptr, &data, nullptr, nullptr),
                         Napi::Value());
  }
  return Napi::Number::New(env, static_cast<double>(reinterpret_cast<uintptr_t>(data)));
}

// ---------------------------------------------------------------------------
// Views over existing memory, and detach (the pool's strict mode)
// ---------------------------------------------------------------------------

Napi::Error OutOfRange(Napi::Env env, const std::string& message) {
  Napi::Error error = Napi::RangeError::New(env, message);
  error.Set("code", Napi::String::New(env, "ERR_OUT_OF_RANGE"));
  return error;
}

// viewOf(slab: ArrayBuffer, offset, length) -> Buffer over slab bytes
// [offset, offset + length) with an ArrayBuffer of its own, so that detaching
// it (strict release) leaves the slab and every other view untouched. The
// range is checked here against the slab as it is now (attached, its length),
// whatever the caller believes. The new ArrayBuffer has no finalizer and does
// not own the memory: the caller keeps the slab's ArrayBuffer reachable from
// the view for as long as the view lives (lib/pool/ stores it on it).
Napi::Value ViewOf(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto slab = info[0].As<Napi::ArrayBuffer>();
  double offset = info[1].As<Napi::Number>().DoubleValue();
  double length = info[2].As<Napi::Number>().DoubleValue();
  auto* data = static_cast<uint8_t*>(slab.Data());
  double size = static_cast<double>(slab.ByteLength());
  if (data == nullptr) throw MakeError(env, "ERR_IOBUF_DETACHED", "The slab was detached");
  CheckBufferLength(env, length, "length");
  if (!(offset >= 0 && length >= 0 && offset + length <= size)) {
    throw OutOfRange(env, "Expected a view inside the slab's " + std::to_string(slab.ByteLength()) +
                              " bytes for offset + length but received " + std::to_string(offset + length));
  }
  return Napi::Buffer<uint8_t>::New(env, data + static_cast<size_t>(offset), static_cast<size_t>(length));
}

// detach(arrayBuffer): every view of it reads as empty from now on.
Napi::Value Detach(const Napi::CallbackInfo& info) {
  info[0].As<Napi::ArrayBuffer>().Detach();
  return info.Env().Undefined();
}

// ---------------------------------------------------------------------------
// The payload copy
// ---------------------------------------------------------------------------

// copyBytes(source, target, targetStart, sourceStart, sourceEnd) -> bytes
// copied: memmove of source[sourceStart, sourceEnd) to target[targetStart…),
// clamped to both views (Buffer#copy's semantics). Exists because Node 20's
// Buffer#copy from an offset allocates a view of the source range per call,
// which is garbage per received frame (lib/frames/parser.ts). Plain Node-API on
// purpose: this runs once per frame, and the C++ wrappers add ~5 ns.
// Precondition (lib/memory.ts checks): both are Uint8Arrays, the offsets
// integers >= 0. Detached views have length 0 and copy nothing.
napi_value CopyBytes(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  void* source = nullptr;
  void* target = nullptr;
  size_t sourceLength = 0;
  size_t targetLength = 0;
  napi_status sourceStatus =
      napi_get_typedarray_info(env, argv[0], nullptr, &sourceLength, &source, nullptr, nullptr);
  napi_status targetStatus =
      napi_get_typedarray_info(env, argv[1], nullptr, &targetLength, &target, nullptr, nullptr);
  assert(sourceStatus == napi_ok && targetStatus == napi_ok);
  (void)sourceStatus;
  (void)targetStatus;
  double targetStart = 0, sourceStart = 0, sourceEnd = 0;
  napi_get_value_double(env, argv[2], &targetStart);
  napi_get_value_double(env, argv[3], &sourceStart);
  napi_get_value_double(env, argv[4], &sourceEnd);
  size_t copied = 0;
  if (targetStart >= 0 && sourceStart >= 0 && sourceEnd > sourceStart &&
      targetStart < static_cast<double>(targetLength) && sourceStart < static_cast<double>(sourceLength)) {
    auto from = static_cast<size_t>(sourceStart);
    auto to = static_cast<size_t>(targetStart);
    size_t end =
        sourceEnd < static_cast<double>(sourceLength) ? static_cast<size_t>(sourceEnd) : sourceLength;
    copied = end - from;
    if (copied > targetLength - to) copied = targetLength - to;
    memmove(static_cast<uint8_t*>(target) + to, static_cast<uint8_t*>(source) + from, copied);
  }
  napi_value result;
  napi_create_double(env, static_cast<double>(copied), &result);
  return result;
}

}  // namespace

void InitViews(Napi::Env env, Napi::Object exports) {
  exports.Set("addressOf", Napi::Function::New(env, AddressOf, "addressOf"));
  exports.Set("viewAddress", Napi::Function::New(env, ViewAddress, "viewAddress"));
  exports.Set("viewOf", Napi::Function::New(env, ViewOf, "viewOf"));
  exports.Set("detach", Napi::Function::New(env, Detach, "detach"));
  napi_value copyBytes;
  napi_create_function(env, "copyBytes", NAPI_AUTO_LENGTH, CopyBytes, nullptr, &copyBytes);
  exports.Set("copyBytes", Napi::Value(env, copyBytes));
}

}  // namespace iobuf
