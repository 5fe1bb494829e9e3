// The test addon, mfd_test.node: the stand-ins tests use in place of devices
// this machine may not have (a DSA work queue, an IAA engine), built as an
// addon of its own that the product never loads. Its one export, `natives`,
// is the table a test hands to the product (_installTestNatives).
#include <napi.h>

#include <cstdint>

#include "fakes.h"
#include "packet_io.h"
#include "test_natives.h"

namespace mfd {
namespace {

TestNatives g_natives{TestNatives::kMagic, TestNatives::kVersion, nullptr, dsa::OpenFakeQueue,
                      qpl::OpenFakeEngine};

}  // namespace

// The SIGBUS guard the fake DSA queue reads pages under is the product's
// (packet_io.cc), which installs the one handler a process may have: it is
// handed over with the table, and this addon never links packet_io.cc.
int64_t RunGuarded(int64_t (*fn)(void*), void* arg) { return g_natives.run_guarded(fn, arg); }

}  // namespace mfd

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  exports.Set("natives", Napi::External<mfd::TestNatives>::New(env, &mfd::g_natives));
  return exports;
}

NODE_API_MODULE(mfd_test, InitModule)
