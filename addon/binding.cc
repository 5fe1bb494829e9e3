// Module init: exports the natives. Each takes caller-owned buffers and does
// one packet's worth of work per call.
#include <napi.h>

#include "common.h"
#include "crc32c.h"
#include "zero_page.h"

#include <vector>

namespace mfd {
namespace {

/* scanZeroPages(pages, pageSize, pageCount, out) -> number of zero pages */
Napi::Value JS_scanZeroPages(const Napi::CallbackInfo& info) {
  size_t page_size, count;
  if (!RequireArgs(info, 4) || !RequireBytes(info, 0, "pages") ||
      !RequireSize(info, 1, "pageSize", &page_size) ||
      !RequireSize(info, 2, "pageCount", &count) || !RequireBytes(info, 3, "out")) {
    return info.Env().Undefined();
  }
  auto pages = info[0].As<Napi::Uint8Array>();
  auto out = info[3].As<Napi::Uint8Array>();
  if (page_size == 0 || count > pages.ByteLength() / page_size || out.ByteLength() < count) {
    Napi::RangeError::New(info.Env(), "scanZeroPages: buffers too small for pageCount pages")
        .ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  const size_t zeros = ScanZeroPages(pages.Data(), page_size, count, out.Data());
  return Napi::Number::New(info.Env(), static_cast<double>(zeros));
}

// One packet's page analysis: zero flags (when asked) and per-page CRC-32C
// (when asked). A page found zero gets the CRC of a zero page without being
// read again.
struct PagesJob {
  const uint8_t* pages = nullptr;
  size_t page_size = 0;
  size_t count = 0;
  uint8_t* zero_out = nullptr;
  uint32_t* crc_out = nullptr;
  size_t zeros = 0;

  void Run() {
    if (zero_out != nullptr) zeros = ScanZeroPages(pages, page_size, count, zero_out);
    if (crc_out == nullptr) return;
    if (zero_out == nullptr || zeros == 0) {
      Crc32cPages(pages, page_size, count, crc_out);
      return;
    }
    const uint32_t zero_crc = ZeroPageCrc(page_size);
    size_t i = 0;
    while (i < count) {
      if (zero_out[i]) {
        crc_out[i++] = zero_crc;
        continue;
      }
      size_t j = i;
      while (j < count && !zero_out[j]) j++;
      Crc32cPages(pages + i * page_size, page_size, j - i, crc_out + i);
      i = j;
    }
  }

  static uint32_t ZeroPageCrc(size_t page_size) {
    static thread_local size_t cached_size = 0;
    static thread_local uint32_t cached_crc = 0;
    if (cached_size != page_size) {
      std::vector<uint8_t> zero(page_size, 0);
      cached_crc = Crc32c(zero.data(), page_size);
      cached_size = page_size;
    }
    return cached_crc;
  }
};

// Parses (pages, pageSize, pageCount, zeroOut|null, crcOut|null); false after
// throwing when an argument is wrong or a buffer is too small.
bool ParsePagesJob(const Napi::CallbackInfo& info, PagesJob* job) {
  if (!RequireArgs(info, 5) || !RequireBytes(info, 0, "pages") ||
      !RequireSize(info, 1, "pageSize", &job->page_size) ||
      !RequireSize(info, 2, "pageCount", &job->count)) {
    return false;
  }
  auto pages = info[0].As<Napi::Uint8Array>();
  if (job->page_size == 0 || job->count > pages.ByteLength() / job->page_size) {
    Napi::RangeError::New(info.Env(), "analysePages: pages buffer too small for pageCount pages")
        .ThrowAsJavaScriptException();
    return false;
  }
  job->pages = pages.Data();
  if (!info[3].IsNull() && !info[3].IsUndefined()) {
    if (!RequireBytes(info, 3, "zeroOut")) return false;
    auto z = info[3].As<Napi::Uint8Array>();
    if (z.ByteLength() < job->count) {
      Napi::RangeError::New(info.Env(), "analysePages: zeroOut shorter than pageCount")
          .ThrowAsJavaScriptException();
      return false;
    }
    job->zero_out = z.Data();
  }
  if (!info[4].IsNull() && !info[4].IsUndefined()) {
    if (!info[4].IsTypedArray() ||
        info[4].As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array) {
      Napi::TypeError::New(info.Env(), "Expected a Uint32Array for crcOut")
          .ThrowAsJavaScriptException();
      return false;
    }
    auto c = info[4].As<Napi::Uint32Array>();
    if (c.ElementLength() < job->count) {
      Napi::RangeError::New(info.Env(), "analysePages: crcOut shorter than pageCount")
          .ThrowAsJavaScriptException();
      return false;
    }
    job->crc_out = c.Data();
  }
  return true;
}

/* analysePagesSync(pages, pageSize, pageCount, zeroOut|null, crcOut|null) -> zero pages */
Napi::Value JS_analysePagesSync(const Napi::CallbackInfo& info) {
  PagesJob job;
  if (!ParsePagesJob(info, &job)) return info.Env().Undefined();
  job.Run();
  return Napi::Number::New(info.Env(), static_cast<double>(job.zeros));
}

// Runs a PagesJob on the libuv pool. The JS buffers are pinned by references
// until the callback runs, so the raw pointers stay valid.
class PagesWorker : public Napi::AsyncWorker {
 public:
  PagesWorker(const Napi::CallbackInfo& info, const PagesJob& job, Napi::Function cb)
      : Napi::AsyncWorker(cb, "mfd.analysePages"), job_(job) {
    for (size_t i = 0; i < 5; i++) {
      if (info[i].IsObject()) pinned_.push_back(Napi::Persistent(info[i].As<Napi::Object>()));
    }
  }
  void Execute() override { job_.Run(); }
  void OnOK() override {
    Callback().Call({Env().Null(), Napi::Number::New(Env(), static_cast<double>(job_.zeros))});
  }

 private:
  PagesJob job_;
  std::vector<Napi::ObjectReference> pinned_;
};

/* analysePages(pages, pageSize, pageCount, zeroOut|null, crcOut|null, cb(err, zeros)) */
Napi::Value JS_analysePages(const Napi::CallbackInfo& info) {
  PagesJob job;
  if (!RequireArgs(info, 6) || !ParsePagesJob(info, &job)) return info.Env().Undefined();
  if (!info[5].IsFunction()) {
    Napi::TypeError::New(info.Env(), "Expected a function for callback").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  (new PagesWorker(info, job, info[5].As<Napi::Function>()))->Queue();
  return info.Env().Undefined();
}

/* crc32c(bytes) -> number */
Napi::Value JS_crc32c(const Napi::CallbackInfo& info) {
  if (!RequireArgs(info, 1) || !RequireBytes(info, 0, "bytes")) return info.Env().Undefined();
  auto b = info[0].As<Napi::Uint8Array>();
  return Napi::Number::New(info.Env(), Crc32c(b.Data(), b.ByteLength()));
}

/* zeroPageAccels() -> string[] (best first) */
Napi::Value JS_zeroPageAccels(const Napi::CallbackInfo& info) {
  size_t n = 0;
  const char* const* names = ZeroPageAccels(&n);
  auto arr = Napi::Array::New(info.Env(), n);
  for (size_t i = 0; i < n; i++) arr.Set(i, Napi::String::New(info.Env(), names[i]));
  return arr;
}

/* zeroPageAccel() -> the accelerator in use */
Napi::Value JS_zeroPageAccel(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), SelectedZeroPageAccel());
}

/* _setZeroPageAccel(name) -> boolean (test hook: loop over every accelerator) */
Napi::Value JS_setZeroPageAccel(const Napi::CallbackInfo& info) {
  if (!RequireArgs(info, 1)) return info.Env().Undefined();
  if (!info[0].IsString()) {
    Napi::TypeError::New(info.Env(), "Expected a string for name").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  return Napi::Boolean::New(info.Env(),
                            SelectZeroPageAccel(info[0].As<Napi::String>().Utf8Value().c_str()));
}

/* cpuFeatures() -> { avx2, avx512f, avx512bw, movdir64b, enqcmd, sse2 } */
Napi::Value JS_cpuFeatures(const Napi::CallbackInfo& info) {
  auto o = Napi::Object::New(info.Env());
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  o.Set("sse2", Napi::Boolean::New(info.Env(), __builtin_cpu_supports("sse2")));
  o.Set("avx2", Napi::Boolean::New(info.Env(), __builtin_cpu_supports("avx2")));
  o.Set("avx512f", Napi::Boolean::New(info.Env(), __builtin_cpu_supports("avx512f")));
  o.Set("avx512bw", Napi::Boolean::New(info.Env(), __builtin_cpu_supports("avx512bw")));
  // MOVDIR64B and ENQCMD: CPUID leaf 7, subleaf 0, ECX bits 28 and 29.
  unsigned int eax = 7, ebx = 0, ecx = 0, edx = 0;
  __asm__ volatile("cpuid" : "+a"(eax), "=b"(ebx), "+c"(ecx), "=d"(edx));
  o.Set("movdir64b", Napi::Boolean::New(info.Env(), (ecx >> 28) & 1));
  o.Set("enqcmd", Napi::Boolean::New(info.Env(), (ecx >> 29) & 1));
#endif
  return o;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("scanZeroPages", Napi::Function::New(env, JS_scanZeroPages, "scanZeroPages"));
  exports.Set("analysePages", Napi::Function::New(env, JS_analysePages, "analysePages"));
  exports.Set("analysePagesSync", Napi::Function::New(env, JS_analysePagesSync, "analysePagesSync"));
  exports.Set("crc32c", Napi::Function::New(env, JS_crc32c, "crc32c"));
  exports.Set("zeroPageAccels", Napi::Function::New(env, JS_zeroPageAccels, "zeroPageAccels"));
  exports.Set("zeroPageAccel", Napi::Function::New(env, JS_zeroPageAccel, "zeroPageAccel"));
  exports.Set("_setZeroPageAccel", Napi::Function::New(env, JS_setZeroPageAccel, "_setZeroPageAccel"));
  exports.Set("cpuFeatures", Napi::Function::New(env, JS_cpuFeatures, "cpuFeatures"));
  return exports;
}

}  // namespace
}  // namespace mfd

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  return mfd::Init(env, exports);
}

NODE_API_MODULE(mfd, InitModule)
