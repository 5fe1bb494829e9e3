// The product's side of the test natives (addon/test_natives.h): the one
// export through which a test installs them. Nothing here loads them.
#include "test_natives.h"

#include <napi.h>

#include <atomic>

#include "common.h"
#include "packet_io.h"

namespace mfd {
namespace {

std::atomic<const TestNatives*> g_test_natives{nullptr};

/* _installTestNatives(table): the table mfd_test.node exports as `natives` (tests only) */
Napi::Value InstallTestNatives(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsExternal()) {
    Napi::TypeError::New(info.Env(), "Expected the test addon's natives table")
        .ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  auto* t = info[0].As<Napi::External<TestNatives>>().Data();
  if (t == nullptr || t->magic != TestNatives::kMagic || t->version != TestNatives::kVersion) {
    Napi::TypeError::New(info.Env(),
                         "The test addon was built from another tree (its natives table does not "
                         "match): rebuild both")
        .ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  t->run_guarded = RunGuarded;
  g_test_natives.store(t);
  return info.Env().Undefined();
}

}  // namespace

const TestNatives* InstalledTestNatives() { return g_test_natives.load(); }

void InitTestNatives(Napi::Env env, Napi::Object exports) {
  exports.Set("_installTestNatives",
              Napi::Function::New(env, InstallTestNatives, "_installTestNatives"));
}

}  // namespace mfd
