#include "errors.h"

#include <cstdio>
#include <cstring>

#include "addon.h"

namespace iobuf {

Napi::Error MakeError(Napi::Env env, const char* code, const std::string& message) {
  Napi::Object error;
  AddonData* data = AddonData::Of(env);
  if (data != nullptr && !data->errorClass.IsEmpty()) {
    error = data->errorClass.New({Napi::String::New(env, message)});
  } else {
    error = Napi::Error::New(env, message).Value();
  }
  error.Set("code", Napi::String::New(env, code));
  return Napi::Error(env, error);
}

void CheckBufferLength(Napi::Env env, double length, const char* name) {
  const double limit = AddonData::Of(env)->maxBufferLength;
  if (length <= limit) return;
  char message[160];
  snprintf(message, sizeof message, "Expected at most %.0f bytes (the largest Buffer) for %s but received %.0f",
           limit, name, length);
  Napi::Error error = Napi::RangeError::New(env, message);
  error.Set("code", Napi::String::New(env, "ERR_OUT_OF_RANGE"));
  throw error;
}

Napi::Error MakeErrnoError(Napi::Env env, int error, const char* syscall, const char* code,
                           const std::string& detail) {
  const char* name = strerrorname_np(error);
  if (name == nullptr) name = "EUNKNOWN";
  std::string message = std::string(code != nullptr ? code : name) + ": " + strerror(error) +
                        ", " + syscall;
  if (!detail.empty()) message += " (" + detail + ")";
  Napi::Error result = MakeError(env, code != nullptr ? code : name, message);
  result.Set("errno", Napi::Number::New(env, -error));
  result.Set("syscall", Napi::String::New(env, syscall));
  return result;
}

}  // namespace iobuf
