// The pool part's native side. The pool itself lives in lib/pool/ (its hot
// path must not cross into native code). Native code keeps what must survive
// a thread that dies without running JavaScript (worker.terminate()): each
// thread's membership in a shared pool — the pages it reserved, the tickets
// it holds, its statistics region — so that the environment's cleanup hook
// can give them back. (Strict mode's per-acquire views: views.cc.)
#include "pool.h"

#include <algorithm>
#include <mutex>
#include <string>

#include "addon.h"
#include "errors.h"

namespace iobuf {

namespace layout = pool_layout;

// One thread's membership in one shared pool. Only its own thread touches it
// (JS calls and the environment's cleanup hook both run there).
struct PoolMember {
  napi_ref keepAlive = nullptr;  // the Int32Array over the shared block: keeps it mapped
  int32_t* words = nullptr;      // the shared block, as Int32 words
  int32_t region = -1;           // this thread's statistics region
  int32_t pages = 0;             // pages this thread reserved and has not given back
  std::vector<int32_t> tickets;  // tickets this thread took and has not finished
};

AddonData::AddonData() = default;
AddonData::~AddonData() = default;

namespace {

// ---------------------------------------------------------------------------
// Shared words. The block is a SharedArrayBuffer that JS reads with Atomics;
// these are the same sequentially consistent operations on the same memory.
// ---------------------------------------------------------------------------

int32_t Load(int32_t* words, int index) { return __atomic_load_n(&words[index], __ATOMIC_SEQ_CST); }
void Store(int32_t* words, int index, int32_t value) {
  __atomic_store_n(&words[index], value, __ATOMIC_SEQ_CST);
}
// Wrapping int32 addition, as Atomics.add does.
void Add(int32_t* words, int index, int32_t delta) {
  __atomic_fetch_add(reinterpret_cast<uint32_t*>(&words[index]), static_cast<uint32_t>(delta),
                     __ATOMIC_SEQ_CST);
}
bool CompareExchange(int32_t* words, int index, int32_t expected, int32_t desired) {
  return __atomic_compare_exchange_n(&words[index], &expected, desired, false, __ATOMIC_SEQ_CST,
                                     __ATOMIC_SEQ_CST);
}
int32_t Plus(int32_t value, uint32_t delta) {
  return static_cast<int32_t>(static_cast<uint32_t>(value) + delta);
}
int RingWord(int32_t ticket) {
  return layout::kControlWords + (static_cast<uint32_t>(ticket) & (layout::kRing - 1));
}

// Ticket `ticket` is done (served, gave up, or its thread is gone): mark it in
// the ring and move the head past every done ticket.
void FinishTicket(int32_t* words, int32_t ticket) {
  Store(words, RingWord(ticket), Plus(ticket, 1));
  Add(words, layout::kWaiters, -1);
  for (;;) {
    int32_t head = Load(words, layout::kHeadTicket);
    if (head == Load(words, layout::kNextTicket)) break;
    if (Load(words, RingWord(head)) != Plus(head, 1)) break;
    CompareExchange(words, layout::kHeadTicket, head, Plus(head, 1));
  }
}

// Everything a member holds goes back; the caller wakes the waiters.
void Depart(PoolMember* member) {
  int32_t* words = member->words;
  if (member->pages != 0) Add(words, layout::kReservedPages, -member->pages);
  member->pages = 0;
  for (int32_t ticket : member->tickets) FinishTicket(words, ticket);
  member->tickets.clear();
  Add(words, layout::kThreads, -1);
  Store(words, layout::kRegionStates + member->region, 0);
  Add(words, layout::kEpoch, 1);
}

// ---------------------------------------------------------------------------
// Environments that can be woken. When a thread departs without JavaScript
// (terminate), the others must look at the queue again, but only JavaScript
// can wake an Atomics.wait/waitAsync: each environment has a thread-safe
// function that runs lib/pool/'s wake handler on its own thread.
// ---------------------------------------------------------------------------

std::mutex environmentsMutex;
auto* environments = new std::vector<AddonData*>();

void CallWakeHandler(napi_env env, napi_value, void* context, void*) {
  auto* data = static_cast<AddonData*>(context);
  data->poolWakePending.store(false);
  if (env == nullptr || data->tearingDown.load() || data->poolWakeHandler.IsEmpty()) return;
  napi_value handler = data->poolWakeHandler.Value();
  napi_value undefined;
  napi_get_undefined(env, &undefined);
  napi_call_function(env, undefined, handler, 0, nullptr, nullptr);
}

void WakeOtherEnvironments(AddonData* self) {
  std::lock_guard<std::mutex> lock(environmentsMutex);
  for (AddonData* other : *environments) {
    if (other == self || other->poolWake == nullptr || other->poolWakePending.exchange(true)) continue;
    napi_call_threadsafe_function(other->poolWake, nullptr, napi_tsfn_nonblocking);
  }
}

// ---------------------------------------------------------------------------
// Membership bindings (lib/pool/ calls these on its slow paths only)
// ---------------------------------------------------------------------------

Napi::Error InvalidBlock(Napi::Env env, const std::string& why) {
  Napi::Error error = Napi::TypeError::New(
      env, "Expected a BufferPool handle for handle but received one whose shared block " + why);
  error.Set("code", Napi::String::New(env, "ERR_INVALID_ARG_VALUE"));
  return error;
}

// The shared block behind an Int32Array over the whole SharedArrayBuffer,
// checked against the layout (a forged or foreign block is refused here, so
// every later access stays inside it).
int32_t* CheckedBlock(Napi::Env env, Napi::Value value) {
  if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
    throw InvalidBlock(env, "is not an Int32Array");
  }
  auto array = value.As<Napi::Int32Array>();
  if (array.ByteOffset() != 0 || array.ElementLength() < static_cast<size_t>(layout::kControlWords)) {
    throw InvalidBlock(env, "is too small");
  }
  int32_t* words = array.Data();
  if (Load(words, layout::kMagicWord) != layout::kMagic) throw InvalidBlock(env, "is not a BufferPool's");
  if (Load(words, layout::kVersionWord) != layout::kVersion) {
    throw InvalidBlock(env, "has layout version " + std::to_string(Load(words, layout::kVersionWord)) +
                                " (this iobuf uses " + std::to_string(layout::kVersion) + ")");
  }
  int32_t rows = Load(words, layout::kClassRows);
  if (rows < layout::kMinClassRows || rows > layout::kMaxClassRows ||
      array.ByteLength() != layout::BlockBytes(rows)) {
    throw InvalidBlock(env, "has the wrong size for its class rows");
  }
  return words;
}

PoolMember* MemberOf(const Napi::CallbackInfo& info) {
  AddonData* data = AddonData::Of(info.Env());
  double id = info[0].As<Napi::Number>().DoubleValue();
  if (!(id >= 0 && id < static_cast<double>(data->poolMembers.size())) ||
      data->poolMembers[static_cast<size_t>(id)] == nullptr) {
    throw MakeError(info.Env(), "ERR_IOBUF_POOL_CLOSED", "This thread is not a member of that pool");
  }
  return data->poolMembers[static_cast<size_t>(id)].get();
}

// poolJoin(block: Int32Array) -> [memberId, regionIndex]
Napi::Value Join(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int32_t* words = CheckedBlock(env, info[0]);
  int region = -1;
  for (int i = 0; i < layout::kMaxThreads && region < 0; i++) {
    if (CompareExchange(words, layout::kRegionStates + i, 0, 1)) region = i;
  }
  if (region < 0) {
    throw MakeError(
        env, "ERR_IOBUF_UNSUPPORTED",
        "A pool is shared by at most " + std::to_string(layout::kMaxThreads) + " threads at once");
  }
  auto member = std::make_unique<PoolMember>();
  member->words = words;
  member->region = region;
  if (napi_create_reference(env, info[0], 1, &member->keepAlive) != napi_ok) {
    Store(words, layout::kRegionStates + region, 0);
    throw Napi::Error::New(env);
  }
  Add(words, layout::kThreads, 1);
  AddonData* data = AddonData::Of(env);
  auto free = std::find(data->poolMembers.begin(), data->poolMembers.end(), nullptr);
  size_t id = free - data->poolMembers.begin();
  if (free == data->poolMembers.end())
    data->poolMembers.push_back(std::move(member));
  else
    *free = std::move(member);
  Napi::Array result = Napi::Array::New(env, 2);
  result.Set(0u, Napi::Number::New(env, static_cast<double>(id)));
  result.Set(1u, Napi::Number::New(env, region));
  return result;
}

// poolLeave(memberId): gives back whatever the member still holds.
Napi::Value Leave(const Napi::CallbackInfo& info) {
  PoolMember* member = MemberOf(info);
  Depart(member);
  napi_delete_reference(info.Env(), member->keepAlive);
  AddonData* data = AddonData::Of(info.Env());
  for (auto& slot : data->poolMembers) {
    if (slot.get() == member) slot.reset();
  }
  return info.Env().Undefined();
}

// poolReserve(memberId, pages) -> boolean: takes `pages` from the budget if they fit.
Napi::Value Reserve(const Napi::CallbackInfo& info) {
  PoolMember* member = MemberOf(info);
  int32_t pages = info[1].As<Napi::Number>().Int32Value();
  int32_t* words = member->words;
  for (;;) {
    int32_t reserved = Load(words, layout::kReservedPages);
    int64_t total = static_cast<int64_t>(reserved) + pages;
    if (pages < 0 || total > Load(words, layout::kMaxPages)) return Napi::Boolean::New(info.Env(), false);
    if (!CompareExchange(words, layout::kReservedPages, reserved, static_cast<int32_t>(total))) continue;
    member->pages += pages;
    int32_t high = Load(words, layout::kHighWaterPages);
    while (total > high &&
           !CompareExchange(words, layout::kHighWaterPages, high, static_cast<int32_t>(total))) {
      high = Load(words, layout::kHighWaterPages);
    }
    return Napi::Boolean::New(info.Env(), true);
  }
}

// poolUnreserve(memberId, pages): gives pages back (the caller notifies waiters).
Napi::Value Unreserve(const Napi::CallbackInfo& info) {
  PoolMember* member = MemberOf(info);
  int32_t pages = info[1].As<Napi::Number>().Int32Value();
  if (pages < 0 || pages > member->pages) {
    throw MakeError(info.Env(), "ERR_IOBUF_INTERNAL",
                    "poolUnreserve: " + std::to_string(pages) + " pages, but this thread holds " +
                        std::to_string(member->pages));
  }
  member->pages -= pages;
  Add(member->words, layout::kReservedPages, -pages);
  Add(member->words, layout::kEpoch, 1);
  return info.Env().Undefined();
}

// poolTakeTicket(memberId) -> ticket (an int32), or null when kRing tickets are out.
Napi::Value TakeTicket(const Napi::CallbackInfo& info) {
  PoolMember* member = MemberOf(info);
  int32_t* words = member->words;
  for (;;) {
    int32_t next = Load(words, layout::kNextTicket);
    uint32_t out = static_cast<uint32_t>(next) - static_cast<uint32_t>(Load(words, layout::kHeadTicket));
    if (out >= static_cast<uint32_t>(layout::kRing)) return info.Env().Null();
    if (!CompareExchange(words, layout::kNextTicket, next, Plus(next, 1))) continue;
    member->tickets.push_back(next);
    Add(words, layout::kWaiters, 1);
    Add(words, layout::kEpoch, 1);
    return Napi::Number::New(info.Env(), next);
  }
}

// poolFinishTicket(memberId, ticket): the ticket was served or gave up.
Napi::Value FinishTicketBinding(const Napi::CallbackInfo& info) {
  PoolMember* member = MemberOf(info);
  int32_t ticket = info[1].As<Napi::Number>().Int32Value();
  auto held = std::find(member->tickets.begin(), member->tickets.end(), ticket);
  if (held == member->tickets.end()) {
    throw MakeError(info.Env(), "ERR_IOBUF_INTERNAL",
                    "poolFinishTicket: this thread does not hold that ticket");
  }
  member->tickets.erase(held);
  FinishTicket(member->words, ticket);
  Add(member->words, layout::kEpoch, 1);
  return info.Env().Undefined();
}

// poolSetWakeHandler(fn): what runs on this thread when another thread departed without JavaScript.
Napi::Value SetWakeHandler(const Napi::CallbackInfo& info) {
  AddonData::Of(info.Env())->poolWakeHandler = Napi::Persistent(info[0].As<Napi::Function>());
  return info.Env().Undefined();
}

Napi::Object LayoutConstants(Napi::Env env) {
  Napi::Object constants = Napi::Object::New(env);
  constants.Set("magic", layout::kMagic);
  constants.Set("version", layout::kVersion);
  constants.Set("controlWords", layout::kControlWords);
  constants.Set("ring", layout::kRing);
  constants.Set("maxThreads", layout::kMaxThreads);
  constants.Set("regionStates", layout::kRegionStates);
  constants.Set("statsOffset", static_cast<double>(layout::StatsOffset()));
  constants.Set("classFields", layout::kClassFields);
  constants.Set("threadFields", layout::kThreadFields);
  Napi::Object words = Napi::Object::New(env);
  words.Set("closed", static_cast<int>(layout::kClosed));
  words.Set("reservedPages", static_cast<int>(layout::kReservedPages));
  words.Set("maxPages", static_cast<int>(layout::kMaxPages));
  words.Set("epoch", static_cast<int>(layout::kEpoch));
  words.Set("nextTicket", static_cast<int>(layout::kNextTicket));
  words.Set("headTicket", static_cast<int>(layout::kHeadTicket));
  words.Set("threads", static_cast<int>(layout::kThreads));
  words.Set("highWaterPages", static_cast<int>(layout::kHighWaterPages));
  words.Set("waiters", static_cast<int>(layout::kWaiters));
  words.Set("classRows", static_cast<int>(layout::kClassRows));
  constants.Set("words", words);
  return constants;
}

}  // namespace

void PoolEnvironmentCleanup(AddonData* data) {
  {
    std::lock_guard<std::mutex> lock(environmentsMutex);
    environments->erase(std::remove(environments->begin(), environments->end(), data), environments->end());
  }
  bool departed = false;
  for (auto& member : data->poolMembers) {
    if (member == nullptr) continue;
    Depart(member.get());
    napi_delete_reference(data->env, member->keepAlive);
    member.reset();
    departed = true;
  }
  if (departed) WakeOtherEnvironments(data);
  if (data->poolWake != nullptr) napi_release_threadsafe_function(data->poolWake, napi_tsfn_abort);
  data->poolWake = nullptr;
}

void InitPool(Napi::Env env, Napi::Object exports) {
  exports.Set("poolJoin", Napi::Function::New(env, Join, "poolJoin"));
  exports.Set("poolLeave", Napi::Function::New(env, Leave, "poolLeave"));
  exports.Set("poolReserve", Napi::Function::New(env, Reserve, "poolReserve"));
  exports.Set("poolUnreserve", Napi::Function::New(env, Unreserve, "poolUnreserve"));
  exports.Set("poolTakeTicket", Napi::Function::New(env, TakeTicket, "poolTakeTicket"));
  exports.Set("poolFinishTicket", Napi::Function::New(env, FinishTicketBinding, "poolFinishTicket"));
  exports.Set("poolSetWakeHandler", Napi::Function::New(env, SetWakeHandler, "poolSetWakeHandler"));
  exports.Set("poolLayout", LayoutConstants(env));

  // The wake function (see "Environments that can be woken"). Unref'd: it
  // never keeps a thread alive. Made before addon.cc registers its cleanup
  // hook, so that hook runs (and takes this environment out of the list)
  // before Node's own cleanup closes the function.
  AddonData* data = AddonData::Of(env);
  napi_value name = Napi::String::New(env, "iobuf.pool.wake");
  NAPI_THROW_IF_FAILED_VOID(
      env, napi_create_threadsafe_function(env, nullptr, nullptr, name, 0, 1, nullptr, nullptr, data,
                                           CallWakeHandler, &data->poolWake));
  napi_unref_threadsafe_function(env, data->poolWake);
  std::lock_guard<std::mutex> lock(environmentsMutex);
  environments->push_back(data);
}

}  // namespace iobuf
