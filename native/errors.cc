#include "errors.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "addon.h"

namespace iobuf {

namespace {

// Every errno of Linux by its symbolic name: the names glibc's
// strerrorname_np() gives (EAGAIN, not EWOULDBLOCK; EOPNOTSUPP, not ENOTSUP;
// EDEADLK, not EDEADLOCK). Written out here because strerrorname_np exists
// only in glibc 2.32 and later: musl has none, and calling it would make the
// addon refuse to load on any older glibc.
// clang-format off
#define IOBUF_ERRNO_NAMES(X) \
  X(EPERM) X(ENOENT) X(ESRCH) X(EINTR) X(EIO) X(ENXIO) X(E2BIG) X(ENOEXEC) X(EBADF) X(ECHILD) \
  X(EAGAIN) X(ENOMEM) X(EACCES) X(EFAULT) X(ENOTBLK) X(EBUSY) X(EEXIST) X(EXDEV) X(ENODEV) \
  X(ENOTDIR) X(EISDIR) X(EINVAL) X(ENFILE) X(EMFILE) X(ENOTTY) X(ETXTBSY) X(EFBIG) X(ENOSPC) \
  X(ESPIPE) X(EROFS) X(EMLINK) X(EPIPE) X(EDOM) X(ERANGE) X(EDEADLK) X(ENAMETOOLONG) X(ENOLCK) \
  X(ENOSYS) X(ENOTEMPTY) X(ELOOP) X(ENOMSG) X(EIDRM) X(ECHRNG) X(EL2NSYNC) X(EL3HLT) X(EL3RST) \
  X(ELNRNG) X(EUNATCH) X(ENOCSI) X(EL2HLT) X(EBADE) X(EBADR) X(EXFULL) X(ENOANO) X(EBADRQC) \
  X(EBADSLT) X(EBFONT) X(ENOSTR) X(ENODATA) X(ETIME) X(ENOSR) X(ENONET) X(ENOPKG) X(EREMOTE) \
  X(ENOLINK) X(EADV) X(ESRMNT) X(ECOMM) X(EPROTO) X(EMULTIHOP) X(EDOTDOT) X(EBADMSG) X(EOVERFLOW) \
  X(ENOTUNIQ) X(EBADFD) X(EREMCHG) X(ELIBACC) X(ELIBBAD) X(ELIBSCN) X(ELIBMAX) X(ELIBEXEC) \
  X(EILSEQ) X(ERESTART) X(ESTRPIPE) X(EUSERS) X(ENOTSOCK) X(EDESTADDRREQ) X(EMSGSIZE) X(EPROTOTYPE) \
  X(ENOPROTOOPT) X(EPROTONOSUPPORT) X(ESOCKTNOSUPPORT) X(EOPNOTSUPP) X(EPFNOSUPPORT) \
  X(EAFNOSUPPORT) X(EADDRINUSE) X(EADDRNOTAVAIL) X(ENETDOWN) X(ENETUNREACH) X(ENETRESET) \
  X(ECONNABORTED) X(ECONNRESET) X(ENOBUFS) X(EISCONN) X(ENOTCONN) X(ESHUTDOWN) X(ETOOMANYREFS) \
  X(ETIMEDOUT) X(ECONNREFUSED) X(EHOSTDOWN) X(EHOSTUNREACH) X(EALREADY) X(EINPROGRESS) X(ESTALE) \
  X(EUCLEAN) X(ENOTNAM) X(ENAVAIL) X(EISNAM) X(EREMOTEIO) X(EDQUOT) X(ENOMEDIUM) X(EMEDIUMTYPE) \
  X(ECANCELED) X(ENOKEY) X(EKEYEXPIRED) X(EKEYREVOKED) X(EKEYREJECTED) X(EOWNERDEAD) \
  X(ENOTRECOVERABLE) X(ERFKILL) X(EHWPOISON)
// clang-format on

struct ErrnoName {
  int value;
  const char* name;
};

#define IOBUF_ERRNO_ENTRY(name) {name, #name},
constexpr ErrnoName kErrnoNames[] = {IOBUF_ERRNO_NAMES(IOBUF_ERRNO_ENTRY)};
#undef IOBUF_ERRNO_ENTRY
#undef IOBUF_ERRNO_NAMES

}  // namespace

const char* ErrnoNameOf(int error) {
  for (const ErrnoName& entry : kErrnoNames) {
    if (entry.value == error) return entry.name;
  }
  return nullptr;
}

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
  snprintf(message, sizeof message,
           "Expected at most %.0f bytes (the largest Buffer) for %s but received %.0f", limit, name, length);
  Napi::Error error = Napi::RangeError::New(env, message);
  error.Set("code", Napi::String::New(env, "ERR_OUT_OF_RANGE"));
  throw error;
}

Napi::Error MakeErrnoError(Napi::Env env, int error, const char* syscall, const char* code,
                           const std::string& detail) {
  const char* name = ErrnoNameOf(error);
  if (name == nullptr) name = "EUNKNOWN";
  std::string message = std::string(code != nullptr ? code : name) + ": " + strerror(error) + ", " + syscall;
  if (!detail.empty()) message += " (" + detail + ")";
  Napi::Error result = MakeError(env, code != nullptr ? code : name, message);
  result.Set("errno", Napi::Number::New(env, -error));
  result.Set("syscall", Napi::String::New(env, syscall));
  return result;
}

}  // namespace iobuf
