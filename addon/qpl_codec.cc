// The qpl method's software path, in QEMU's multifd-qpl wire format: for the
// packet's normal pages, a big-endian u32 length per page, then each page as
// raw DEFLATE (no zlib or gzip wrapper) with at most a 4 KiB history window,
// so IAA hardware can decode it, or the raw page when its deflate would not
// fit in page_size - 1 bytes (its length is then page_size). The receiver side
// checks every length before it trusts it. This is the path used when no IAA
// hardware (libqpl) is present, which is always the case in this build.
#include <napi.h>
#include <zlib.h>

#include <cstring>
#include <string>

#include "common.h"

namespace mfd {
namespace {

void ThrowCode(Napi::Env env, const char* code, const std::string& msg) {
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("code", Napi::String::New(env, code));
  e.ThrowAsJavaScriptException();
}

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

void PutBe32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}

uint32_t GetBe32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

/* qplCompressPages(runs: Uint8Array[], pageSize, out) -> payload bytes written to out
   (out needs 4 x pages + pages x pageSize bytes) */
Napi::Value QplCompressPages(const Napi::CallbackInfo& info) {
  size_t ps = 0;
  ByteSpans runs;
  if (!RequireArgs(info, 3) || !RequireByteList(info, 0, "runs", &runs) || !RequireSize(info, 1, "pageSize", &ps) ||
      !RequireBytes(info, 2, "out")) {
    return info.Env().Undefined();
  }
  size_t pages = 0;
  for (const auto& r : runs) {
    if (ps == 0 || r.second % ps != 0) {
      Napi::RangeError::New(info.Env(), "qplCompressPages: runs must be whole pages").ThrowAsJavaScriptException();
      return info.Env().Undefined();
    }
    pages += r.second / ps;
  }
  auto out = info[2].As<Napi::Uint8Array>();
  if (out.ByteLength() < pages * (4 + ps)) {
    Napi::RangeError::New(info.Env(), "qplCompressPages: out too small").ThrowAsJavaScriptException();
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
  size_t k = 0;
  for (const auto& r : runs) {
    for (size_t off = 0; off < r.second; off += ps, k++) {
      const uint8_t* page = r.first + off;
      deflateReset(&c.def);
      c.def.next_in = const_cast<Bytef*>(page);
      c.def.avail_in = static_cast<uInt>(ps);
      c.def.next_out = body;
      c.def.avail_out = static_cast<uInt>(ps - 1);
      const int rc = deflate(&c.def, Z_FINISH);
      size_t len;
      if (rc == Z_STREAM_END) {
        len = ps - 1 - c.def.avail_out;
      } else {
        std::memcpy(body, page, ps);  // does not shrink: the raw page, length = page size
        len = ps;
      }
      PutBe32(lengths + 4 * k, static_cast<uint32_t>(len));
      body += len;
    }
  }
  return Napi::Number::New(info.Env(), static_cast<double>(body - out.Data()));
}

/* qplDecompressPages(payload, normalPages, pageSize, out) -> bytes written (normalPages x pageSize);
   throws with code ERR_PAYLOAD_SIZE / ERR_PAYLOAD_CORRUPT naming what is wrong */
Napi::Value QplDecompressPages(const Napi::CallbackInfo& info) {
  size_t normal = 0, ps = 0;
  if (!RequireArgs(info, 4) || !RequireBytes(info, 0, "payload") || !RequireSize(info, 1, "normalPages", &normal) ||
      !RequireSize(info, 2, "pageSize", &ps) || !RequireBytes(info, 3, "out", normal * ps)) {
    return info.Env().Undefined();
  }
  auto in = info[0].As<Napi::Uint8Array>();
  auto out = info[3].As<Napi::Uint8Array>();
  const size_t n = in.ByteLength();
  if (ps == 0 || 4 * normal > n) {
    ThrowCode(info.Env(), "ERR_PAYLOAD_SIZE", "payload of " + std::to_string(n) + " bytes cannot hold " + std::to_string(normal) + " page lengths");
    return info.Env().Undefined();
  }
  size_t total = 4 * normal;
  for (size_t j = 0; j < normal; j++) {
    const uint32_t len = GetBe32(in.Data() + 4 * j);
    if (len == 0 || len > ps) {
      ThrowCode(info.Env(), "ERR_PAYLOAD_SIZE", "page " + std::to_string(j) + " length received " + std::to_string(len) + ", expected 1.." + std::to_string(ps));
      return info.Env().Undefined();
    }
    total += len;
  }
  if (total != n) {
    ThrowCode(info.Env(), "ERR_PAYLOAD_SIZE", "page lengths add up to " + std::to_string(total) + " bytes, payload has " + std::to_string(n));
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
    if (len == ps) {
      std::memcpy(dst, body, ps);
    } else {
      inflateReset(&c.inf);
      c.inf.next_in = const_cast<Bytef*>(body);
      c.inf.avail_in = len;
      c.inf.next_out = dst;
      c.inf.avail_out = static_cast<uInt>(ps);
      const int rc = inflate(&c.inf, Z_FINISH);
      if (rc != Z_STREAM_END || c.inf.avail_out != 0 || c.inf.avail_in != 0) {
        ThrowCode(info.Env(), "ERR_PAYLOAD_CORRUPT",
                  "page " + std::to_string(j) + ": raw deflate of " + std::to_string(len) + " bytes decoded to " +
                      std::to_string(ps - c.inf.avail_out) + " bytes (inflate " + std::to_string(rc) + "), expected " + std::to_string(ps));
        return info.Env().Undefined();
      }
    }
    body += len;
  }
  return Napi::Number::New(info.Env(), static_cast<double>(normal * ps));
}

}  // namespace

void InitQplCodec(Napi::Env env, Napi::Object exports) {
  exports.Set("qplCompressPages", Napi::Function::New(env, QplCompressPages, "qplCompressPages"));
  exports.Set("qplDecompressPages", Napi::Function::New(env, QplDecompressPages, "qplDecompressPages"));
}

}  // namespace mfd
