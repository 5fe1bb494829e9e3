// The qpl method's software path, in QEMU's multifd-qpl wire format: for the
// packet's normal pages, a big-endian u32 length per page, then each page as
// raw DEFLATE (no zlib or gzip wrapper) with at most a 4 KiB history window,
// so IAA hardware can decode it, or the raw page when its deflate would not
// fit in page_size - 1 bytes (its length is then page_size); a random-looking
// page (LooksIncompressible) goes raw without the deflate attempt. The receiver side
// checks every length before it trusts it. Per page, QEMU's policy: the
// hardware engine when there is one (a busy queue retried 3 times), then the
// software path for that page, then the raw page; each call counts the pages
// per path so a run says which path ran. The software path is mfd's (zlib,
// below) or, when the caller asks and the addon has libqpl, QPL's own
// (qpl_path_software, QEMU's path without a device): same format, its bytes.
#include <napi.h>
#include <zlib.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "common.h"
#include "qpl_engine.h"
#include "test_natives.h"

namespace mfd {
namespace {

// One deflate and one inflate state per thread, reset per page.
struct Codecs {
  z_stream def{};
  z_stream inf{};
  bool def_ok = false;
  bool inf_ok = false;
  ~Codecs() {
    if (def_ok) deflateEnd(&def);
    if (inf_ok) inflateEnd(&inf);
  }
};
thread_local Codecs t_codecs;

// Retries of a busy hardware queue before the page takes the software path (QEMU's
// MAX_SUBMIT_RETRY_NUM).
constexpr int kBusyRetries = 3;

// The engine in use (null: software only). Engines are kept until exit, since
// a pool thread may still hold the previous one.
std::atomic<qpl::HwEngine*> g_engine{nullptr};
std::mutex g_engines_lock;
std::vector<std::unique_ptr<qpl::HwEngine>> g_engines;

void SetEngine(std::unique_ptr<qpl::HwEngine> e) {
  std::lock_guard<std::mutex> lock(g_engines_lock);
  g_engine.store(e.get());
  if (e) g_engines.push_back(std::move(e));
}

// libqpl's software path, opened on first use (null: not compiled; why says so).
qpl::HwEngine* LibSoftware(std::string* why) {
  static std::once_flag once;
  static std::unique_ptr<qpl::HwEngine> engine;
  static std::string reason;
  std::call_once(once, [] { engine = qpl::OpenQplSoftware(&reason); });
  *why = reason;
  return engine.get();
}

// The software path a call asks for (its optional last argument): 0 mfd's zlib, 1 libqpl's.
bool SoftwareArg(const Napi::CallbackInfo& info, size_t i, qpl::HwEngine** lib) {
  *lib = nullptr;
  if (info.Length() <= i || info[i].IsUndefined() ||
      (info[i].IsNumber() && info[i].As<Napi::Number>().Int32Value() == 0))
    return true;
  if (!info[i].IsNumber() || info[i].As<Napi::Number>().Int32Value() != 1) {
    Napi::TypeError::New(info.Env(), "Expected 0 (mfd) or 1 (libqpl) for the software path")
        .ThrowAsJavaScriptException();
    return false;
  }
  std::string why;
  *lib = LibSoftware(&why);
  if (*lib == nullptr) {
    ThrowCode(info.Env(), "ERR_QPL_UNAVAILABLE", "libqpl's software path: " + why);
    return false;
  }
  return true;
}

// Per-call counts: [hardware, software, raw, busy fallbacks, error fallbacks, busy retries,
// software-path library errors (libqpl's software job failed: the page went raw)], both directions.
constexpr size_t kCounts = 7;
enum { kHw, kSw, kRaw, kBusyFallback, kErrorFallback, kRetries, kSwError };

bool CountsArg(const Napi::CallbackInfo& info, size_t i, double** out) {
  if (!info[i].IsTypedArray() ||
      info[i].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array ||
      info[i].As<Napi::Float64Array>().ElementLength() < kCounts) {
    Napi::TypeError::New(info.Env(), "Expected a Float64Array(7) for counts")
        .ThrowAsJavaScriptException();
    return false;
  }
  *out = info[i].As<Napi::Float64Array>().Data();
  for (size_t k = 0; k < kCounts; k++) (*out)[k] = 0;
  return true;
}

// Runs an engine call with QEMU's busy policy; counts retries and the fallback reason.
template <typename Call>
qpl::HwStatus WithRetries(Call call, double* counts) {
  qpl::HwStatus s = qpl::HwStatus::kBusy;
  for (int attempt = 0; attempt <= kBusyRetries; attempt++) {
    s = call();
    if (s != qpl::HwStatus::kBusy) break;
    if (attempt < kBusyRetries) counts[kRetries]++;
  }
  if (s == qpl::HwStatus::kBusy) counts[kBusyFallback]++;
  if (s == qpl::HwStatus::kError) counts[kErrorFallback]++;
  return s;
}

void PutBe32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}

/* qplCompressPages(runs: Uint8Array[], pageSize, out, counts: Float64Array(7), software?: 0 | 1) ->
   payload bytes written to out (out needs 4 x pages + pages x pageSize bytes) */
Napi::Value QplCompressPages(const Napi::CallbackInfo& info) {
  size_t ps = 0;
  ByteSpans runs;
  double* counts = nullptr;
  if (!RequireArgs(info, 4) || !RequireByteList(info, 0, "runs", &runs) ||
      !RequireSize(info, 1, "pageSize", &ps) || !RequireBytes(info, 2, "out") ||
      !CountsArg(info, 3, &counts)) {
    return info.Env().Undefined();
  }
  qpl::HwEngine* lib = nullptr;
  if (!SoftwareArg(info, 4, &lib)) return info.Env().Undefined();
  size_t pages = 0;
  for (const auto& r : runs) {
    if (ps == 0 || r.second % ps != 0) {
      Napi::RangeError::New(info.Env(), "qplCompressPages: runs must be whole pages")
          .ThrowAsJavaScriptException();
      return info.Env().Undefined();
    }
    pages += r.second / ps;
  }
  auto out = info[2].As<Napi::Uint8Array>();
  if (out.ByteLength() < pages * (4 + ps)) {
    Napi::RangeError::New(info.Env(), "qplCompressPages: out too small")
        .ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  Codecs& c = t_codecs;
  if (!c.def_ok) {
    // Raw deflate (negative windowBits), 4 KiB window (2^12), level 1 as QEMU's qpl job uses.
    if (deflateInit2(&c.def, 1, Z_DEFLATED, -12, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
      ThrowCode(info.Env(), "ERR_QPL", "deflateInit2 failed");
      return info.Env().Undefined();
    }
    c.def_ok = true;
  }
  uint8_t* lengths = out.Data();
  uint8_t* body = out.Data() + 4 * pages;
  qpl::HwEngine* hw = g_engine.load();
  size_t k = 0;
  for (const auto& r : runs) {
    for (size_t off = 0; off < r.second; off += ps, k++) {
      const uint8_t* page = r.first + off;
      if (hw != nullptr) {
        size_t len = 0;
        int st = 0;
        const qpl::HwStatus hs =
            WithRetries([&] { return hw->Compress(page, ps, body, ps - 1, &len, &st); }, counts);
        if (hs == qpl::HwStatus::kOk || hs == qpl::HwStatus::kTooBig) {
          if (hs == qpl::HwStatus::kTooBig) {
            std::memcpy(body, page, ps);  // incompressible on the device: the raw page
            len = ps;
            counts[kRaw]++;
          } else {
            counts[kHw]++;
          }
          PutBe32(lengths + 4 * k, static_cast<uint32_t>(len));
          body += len;
          continue;
        }
        // Busy past the retries, or failed: this page takes the software path.
      }
      if (LooksIncompressible(page, ps)) {
        std::memcpy(body, page,
                    ps);  // random-looking: sent raw without a deflate that would not shrink it
        PutBe32(lengths + 4 * k, static_cast<uint32_t>(ps));
        body += ps;
        counts[kRaw]++;
        continue;
      }
      if (lib != nullptr) {
        // QEMU's software job: a page that does not fit in page_size - 1, or a failed job, goes
        // raw.
        size_t len = 0;
        int st = 0;
        const qpl::HwStatus ls = lib->Compress(page, ps, body, ps - 1, &len, &st);
        if (ls != qpl::HwStatus::kOk) {
          std::memcpy(body, page, ps);
          len = ps;
          counts[kRaw]++;
          if (ls != qpl::HwStatus::kTooBig) counts[kSwError]++;
        } else {
          counts[kSw]++;
        }
        PutBe32(lengths + 4 * k, static_cast<uint32_t>(len));
        body += len;
        continue;
      }
      deflateReset(&c.def);
      c.def.next_in = const_cast<Bytef*>(page);
      c.def.avail_in = static_cast<uInt>(ps);
      c.def.next_out = body;
      c.def.avail_out = static_cast<uInt>(ps - 1);
      const int rc = deflate(&c.def, Z_FINISH);
      size_t len;
      if (rc == Z_STREAM_END) {
        len = ps - 1 - c.def.avail_out;
        counts[kSw]++;
      } else {
        std::memcpy(body, page, ps);  // does not shrink: the raw page, length = page size
        len = ps;
        counts[kRaw]++;
      }
      PutBe32(lengths + 4 * k, static_cast<uint32_t>(len));
      body += len;
    }
  }
  return Napi::Number::New(info.Env(), static_cast<double>(body - out.Data()));
}

/* qplDecompressPages(payload, normalPages, pageSize, out, counts: Float64Array(7), software?: 0 |
   1) -> bytes written (normalPages x pageSize); throws with code ERR_PAYLOAD_SIZE /
   ERR_PAYLOAD_CORRUPT naming what is wrong */
Napi::Value QplDecompressPages(const Napi::CallbackInfo& info) {
  size_t normal = 0, ps = 0;
  double* counts = nullptr;
  if (!RequireArgs(info, 5) || !RequireBytes(info, 0, "payload") ||
      !RequireSize(info, 1, "normalPages", &normal) || !RequireSize(info, 2, "pageSize", &ps) ||
      !RequireBytes(info, 3, "out", normal * ps) || !CountsArg(info, 4, &counts)) {
    return info.Env().Undefined();
  }
  qpl::HwEngine* lib = nullptr;
  if (!SoftwareArg(info, 5, &lib)) return info.Env().Undefined();
  auto in = info[0].As<Napi::Uint8Array>();
  auto out = info[3].As<Napi::Uint8Array>();
  const size_t n = in.ByteLength();
  if (ps == 0 || 4 * normal > n) {
    ThrowCode(info.Env(), "ERR_PAYLOAD_SIZE",
              "payload of " + std::to_string(n) + " bytes cannot hold " + std::to_string(normal) +
                  " page lengths");
    return info.Env().Undefined();
  }
  size_t total = 4 * normal;
  for (size_t j = 0; j < normal; j++) {
    const uint32_t len = GetBe32(in.Data() + 4 * j);
    if (len == 0 || len > ps) {
      ThrowCode(info.Env(), "ERR_PAYLOAD_SIZE",
                "page " + std::to_string(j) + " length received " + std::to_string(len) +
                    ", expected 1.." + std::to_string(ps));
      return info.Env().Undefined();
    }
    total += len;
  }
  if (total != n) {
    ThrowCode(info.Env(), "ERR_PAYLOAD_SIZE",
              "page lengths add up to " + std::to_string(total) + " bytes, payload has " +
                  std::to_string(n));
    return info.Env().Undefined();
  }
  Codecs& c = t_codecs;
  if (!c.inf_ok) {
    if (inflateInit2(&c.inf, -15) != Z_OK) {
      ThrowCode(info.Env(), "ERR_QPL", "inflateInit2 failed");
      return info.Env().Undefined();
    }
    c.inf_ok = true;
  }
  const uint8_t* body = in.Data() + 4 * normal;
  for (size_t j = 0; j < normal; j++) {
    const uint32_t len = GetBe32(in.Data() + 4 * j);
    uint8_t* dst = out.Data() + j * ps;
    qpl::HwEngine* hw = g_engine.load();
    if (len == ps) {
      std::memcpy(dst, body, ps);
      counts[kRaw]++;
    } else if (hw != nullptr && WithRetries(
                                    [&] {
                                      int st = 0;
                                      return hw->Decompress(body, len, dst, ps, &st);
                                    },
                                    counts) == qpl::HwStatus::kOk) {
      counts[kHw]++;
    } else if (lib != nullptr) {
      // libqpl's software job: a page it cannot decode to exactly page_size bytes is corrupt (QEMU
      // fails the migration).
      int st = 0;
      if (lib->Decompress(body, len, dst, ps, &st) != qpl::HwStatus::kOk) {
        ThrowCode(info.Env(), "ERR_PAYLOAD_CORRUPT",
                  "page " + std::to_string(j) + ": raw deflate of " + std::to_string(len) +
                      " bytes refused by libqpl's software path (" +
                      (st == -1 ? std::string("not exactly one page")
                                : "QPL status " + std::to_string(st)) +
                      "), expected " + std::to_string(ps) + " bytes");
        return info.Env().Undefined();
      }
      counts[kSw]++;
    } else {
      counts[kSw]++;
      inflateReset(&c.inf);
      c.inf.next_in = const_cast<Bytef*>(body);
      c.inf.avail_in = len;
      c.inf.next_out = dst;
      c.inf.avail_out = static_cast<uInt>(ps);
      const int rc = inflate(&c.inf, Z_FINISH);
      if (rc != Z_STREAM_END || c.inf.avail_out != 0 || c.inf.avail_in != 0) {
        ThrowCode(info.Env(), "ERR_PAYLOAD_CORRUPT",
                  "page " + std::to_string(j) + ": raw deflate of " + std::to_string(len) +
                      " bytes decoded to " + std::to_string(ps - c.inf.avail_out) +
                      " bytes (inflate " + std::to_string(rc) + "), expected " +
                      std::to_string(ps));
        return info.Env().Undefined();
      }
    }
    body += len;
  }
  return Napi::Number::New(info.Env(), static_cast<double>(normal * ps));
}

Napi::Object EngineInfo(Napi::Env env, qpl::HwEngine* e) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("name", e->Name());
  o.Set("hardware", e->IsHardware());
  return o;
}

/* qplHardwareOpen() -> { ok, name?, hardware?, reason, status, version }: probes IAA once per
   process (QEMU's probe); status is qpl_init_job's (-1: not compiled) */
Napi::Value QplHardwareOpen(const Napi::CallbackInfo& info) {
  static std::once_flag once;
  static std::string why;
  static bool ok = false;
  static int status = -1;
  std::call_once(once, [] {
    std::unique_ptr<qpl::HwEngine> e = qpl::OpenQplHardware(&why, &status);
    ok = e != nullptr;
    if (ok) SetEngine(std::move(e));
  });
  qpl::HwEngine* e = g_engine.load();
  Napi::Object o = ok && e != nullptr ? EngineInfo(info.Env(), e) : Napi::Object::New(info.Env());
  o.Set("ok", ok);
  o.Set("reason", ok ? "qpl_init_job on the hardware path succeeded" : why);
  o.Set("status", status);
  o.Set("version", qpl::QplLibraryVersion());
  return o;
}

/* qplSoftwareOpen() -> { ok, reason }: whether libqpl's software path (qpl_path_software) can run
 * here */
Napi::Value QplSoftwareOpen(const Napi::CallbackInfo& info) {
  std::string why;
  const bool ok = LibSoftware(&why) != nullptr;
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("ok", ok);
  o.Set("reason", ok ? std::string("qpl_init_job on the software path succeeded") : why);
  return o;
}

/* _qplSetFakeEngine("busy=N,error_every=K" | null): installs the test engine
 * (addon/test/qpl_fake.cc, once a test has installed the test natives), or none */
Napi::Value QplSetFakeEngine(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || info[0].IsNull()) {
    SetEngine(nullptr);
    return info.Env().Undefined();
  }
  if (!info[0].IsString()) {
    Napi::TypeError::New(info.Env(), "Expected options or null").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  const TestNatives* t = InstalledTestNatives();
  if (t == nullptr) {
    ThrowCode(info.Env(), "ERR_QPL_UNAVAILABLE",
              "fake-iaa is test code, in mfd_test.node, which this process has not loaded");
    return info.Env().Undefined();
  }
  SetEngine(t->open_fake_qpl(info[0].As<Napi::String>()));
  return EngineInfo(info.Env(), g_engine.load());
}

/* qplEngine() -> { name, hardware } | null */
Napi::Value QplEngine(const Napi::CallbackInfo& info) {
  qpl::HwEngine* e = g_engine.load();
  return e == nullptr ? info.Env().Null() : Napi::Value(EngineInfo(info.Env(), e));
}

}  // namespace

void InitQplCodec(Napi::Env env, Napi::Object exports) {
  exports.Set("qplCompressPages", Napi::Function::New(env, QplCompressPages, "qplCompressPages"));
  exports.Set("qplDecompressPages",
              Napi::Function::New(env, QplDecompressPages, "qplDecompressPages"));
  exports.Set("qplHardwareOpen", Napi::Function::New(env, QplHardwareOpen, "qplHardwareOpen"));
  exports.Set("qplSoftwareOpen", Napi::Function::New(env, QplSoftwareOpen, "qplSoftwareOpen"));
  exports.Set("qplEngine", Napi::Function::New(env, QplEngine, "qplEngine"));
  exports.Set("_qplSetFakeEngine", Napi::Function::New(env, QplSetFakeEngine, "_qplSetFakeEngine"));
}

}  // namespace mfd
