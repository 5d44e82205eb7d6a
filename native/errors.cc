#include "errors.h"

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
