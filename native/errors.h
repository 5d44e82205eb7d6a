// Errors thrown by the addon. Every state or OS failure becomes an instance of
// the TypeScript IobufError class (registered by lib/binding.ts at load), with
// a stable string `code`, and `errno` (negative, as Node reports it) and
// `syscall` when the kernel refused.
#pragma once

#include <napi.h>

#include <string>

namespace iobuf {

// The symbolic name of a positive errno ("ENOMEM"), or null for a number
// Linux does not define.
const char* ErrnoNameOf(int error);

// `new IobufError(message)` with `.code = code`.
Napi::Error MakeError(Napi::Env env, const char* code, const std::string& message);

// An error for a failed syscall. `code` defaults to the errno's name
// ("ENOMEM"); the message reads like Node's: "ENOMEM: Cannot allocate memory, mmap".
Napi::Error MakeErrnoError(Napi::Env env, int error, const char* syscall,
                           const char* code = nullptr, const std::string& detail = "");

}  // namespace iobuf
