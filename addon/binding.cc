// Module init: exports the natives. Each takes caller-owned buffers and does
// one packet's worth of work per call.
#include <napi.h>

#include "common.h"
#include "crc32c.h"
#include "packet_io.h"
#include "zero_page.h"

#include <string>
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

// One packet's page analysis (see AnalysePages).
struct PagesJob {
  const uint8_t* pages = nullptr;
  size_t page_size = 0;
  size_t count = 0;
  uint8_t* zero_out = nullptr;
  uint32_t* crc_out = nullptr;
  size_t zeros = 0;

  void Run() { zeros = AnalysePages(pages, page_size, count, zero_out, crc_out); }
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

// Runs a job with Run() -> int64_t on the libuv pool; the JS buffers passed to
// the call stay pinned until the callback has run.
template <typename Job>
class JobWorker : public Napi::AsyncWorker {
 public:
  JobWorker(const Napi::CallbackInfo& info, size_t nargs, const Job& job, Napi::Function cb, const char* name)
      : Napi::AsyncWorker(cb, name), job_(job) {
    for (size_t i = 0; i < nargs; i++) {
      if (info[i].IsObject()) pinned_.push_back(Napi::Persistent(info[i].As<Napi::Object>()));
    }
  }
  void Execute() override { result_ = job_.Run(); }
  void OnOK() override { Callback().Call({Env().Null(), Napi::Number::New(Env(), static_cast<double>(result_)), Extra()}); }

 private:
  Napi::Value Extra();
  Job job_;
  int64_t result_ = 0;
  std::vector<Napi::ObjectReference> pinned_;
};

template <>
Napi::Value JobWorker<ReadPacketJob>::Extra() { return Env().Undefined(); }
template <>
Napi::Value JobWorker<WritePacketJob>::Extra() { return Napi::Number::New(Env(), static_cast<double>(job_.bad_page)); }

bool RequireFunction(const Napi::CallbackInfo& info, size_t i) {
  if (info[i].IsFunction()) return true;
  Napi::TypeError::New(info.Env(), "Expected a function for callback").ThrowAsJavaScriptException();
  return false;
}

bool RequireUint32Array(const Napi::CallbackInfo& info, size_t i, const char* name, size_t min_len) {
  if (!info[i].IsTypedArray() || info[i].As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array) {
    Napi::TypeError::New(info.Env(), std::string("Expected a Uint32Array for ") + name).ThrowAsJavaScriptException();
    return false;
  }
  if (info[i].As<Napi::Uint32Array>().ElementLength() < min_len) {
    Napi::RangeError::New(info.Env(), std::string(name) + " is too short").ThrowAsJavaScriptException();
    return false;
  }
  return true;
}

/* readPacket(fd, position, length, slab, pageSize, pageCount, zeroOut|null, crcOut, cb(err, zerosOrCode)) */
Napi::Value JS_readPacket(const Napi::CallbackInfo& info) {
  ReadPacketJob job{};
  size_t fd, pos;
  if (!RequireArgs(info, 9) || !RequireSize(info, 0, "fd", &fd) || !RequireSize(info, 1, "position", &pos) ||
      !RequireSize(info, 2, "length", &job.length) || !RequireBytes(info, 3, "slab") ||
      !RequireSize(info, 4, "pageSize", &job.page_size) || !RequireSize(info, 5, "pageCount", &job.page_count) ||
      !RequireUint32Array(info, 7, "crcOut", job.page_count) || !RequireFunction(info, 8)) {
    return info.Env().Undefined();
  }
  auto slab = info[3].As<Napi::Uint8Array>();
  if (job.page_size == 0 || job.page_count > slab.ByteLength() / job.page_size ||
      job.length > job.page_count * job.page_size) {
    Napi::RangeError::New(info.Env(), "readPacket: slab too small for pageCount pages, or length beyond them")
        .ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  if (!info[6].IsNull()) {
    if (!RequireBytes(info, 6, "zeroOut")) return info.Env().Undefined();
    auto z = info[6].As<Napi::Uint8Array>();
    if (z.ByteLength() < job.page_count) {
      Napi::RangeError::New(info.Env(), "zeroOut is too short").ThrowAsJavaScriptException();
      return info.Env().Undefined();
    }
    job.zero_out = z.Data();
  }
  job.fd = static_cast<int>(fd);
  job.position = static_cast<int64_t>(pos);
  job.slab = slab.Data();
  job.crc_out = info[7].As<Napi::Uint32Array>().Data();
  (new JobWorker<ReadPacketJob>(info, 8, job, info[8].As<Napi::Function>(), "mfd.readPacket"))->Queue();
  return info.Env().Undefined();
}

/* writePacket(fd, pages, pageSize, offsets, normal, zero, blockSize, writeZeros, crcOut, cb(err, code, badPage)) */
Napi::Value JS_writePacket(const Napi::CallbackInfo& info) {
  WritePacketJob job{};
  size_t fd, block_size;
  if (!RequireArgs(info, 10) || !RequireSize(info, 0, "fd", &fd) || !RequireBytes(info, 1, "pages") ||
      !RequireSize(info, 2, "pageSize", &job.page_size) || !RequireSize(info, 4, "normal", &job.normal) ||
      !RequireSize(info, 5, "zero", &job.zero) || !RequireSize(info, 6, "blockSize", &block_size) ||
      !RequireUint32Array(info, 8, "crcOut", job.normal) || !RequireFunction(info, 9)) {
    return info.Env().Undefined();
  }
  if (!info[3].IsTypedArray() || info[3].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array) {
    Napi::TypeError::New(info.Env(), "Expected a Float64Array for offsets").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  auto pages = info[1].As<Napi::Uint8Array>();
  auto offsets = info[3].As<Napi::Float64Array>();
  if (job.page_size == 0 || job.normal > pages.ByteLength() / job.page_size ||
      job.normal + job.zero > offsets.ElementLength()) {
    Napi::RangeError::New(info.Env(), "writePacket: pages or offsets shorter than the page counts")
        .ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  // Offsets were range-checked in TS; check again here so no write can leave the block.
  for (size_t i = 0; i < job.normal + job.zero; i++) {
    const double o = offsets.Data()[i];
    if (!(o >= 0) || o >= static_cast<double>(block_size)) {
      Napi::RangeError::New(info.Env(), "writePacket: offset outside the block").ThrowAsJavaScriptException();
      return info.Env().Undefined();
    }
  }
  job.fd = static_cast<int>(fd);
  job.pages = pages.Data();
  job.offsets = offsets.Data();
  job.block_size = static_cast<int64_t>(block_size);
  job.write_zeros = info[7].ToBoolean().Value();
  job.crc_out = info[8].As<Napi::Uint32Array>().Data();
  (new JobWorker<WritePacketJob>(info, 9, job, info[9].As<Napi::Function>(), "mfd.writePacket"))->Queue();
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
  exports.Set("readPacket", Napi::Function::New(env, JS_readPacket, "readPacket"));
  exports.Set("writePacket", Napi::Function::New(env, JS_writePacket, "writePacket"));
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
