// Argument checks shared by the natives. Options are validated in TypeScript;
// C++ only checks arity, types and buffer bounds, with uniform messages, so a
// wrong call throws instead of reading or writing outside a buffer.
#ifndef MFD_COMMON_H_
#define MFD_COMMON_H_

#include <napi.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "spans.h"

namespace mfd {

// Result codes the natives return beyond 0 and -errno. kResultCodes is the one
// table of them: binding.cc exports it as `resultCodes` (name -> value), and
// TypeScript (src/native/io-error.ts) reads the values from there.
constexpr int64_t kShortRead =
    -100000;  // a file ended (or a mapped file shrank) before the bytes asked for
constexpr int64_t kBadPadding = -100001;  // a page past the block end has non-zero tail bytes
constexpr int64_t kShortWrite = -100002;  // a write moved fewer bytes than asked (never retried)
constexpr int64_t kStalled = -100003;     // a socket operation made no progress within its timeout

struct ResultCode {
  const char* name;  // what TypeScript calls it: NativeIoError.code
  int64_t value;
};
constexpr ResultCode kResultCodes[] = {
    {"ESHORTREAD", kShortRead},
    {"EPADDING", kBadPadding},
    {"ESHORTWRITE", kShortWrite},
    {"ESTALLED", kStalled},
};

// Throws an Error carrying `code` (mapped to a typed error in TypeScript).
inline void ThrowCode(Napi::Env env, const std::string& code, const std::string& msg) {
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("code", Napi::String::New(env, code));
  e.ThrowAsJavaScriptException();
}

// A big-endian u32 (wire fields).
inline uint32_t GetBe32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

// Random-looking: at least 200 distinct byte values among the first 512
// (uniform random bytes give about 221; text and machine code far fewer).
// Deflate would spend its slowest path on such a page to gain nothing.
inline bool LooksIncompressible(const uint8_t* p, size_t n) {
  if (n < 512) return false;
  uint64_t seen[4] = {0, 0, 0, 0};
  for (size_t i = 0; i < 512; i++) seen[p[i] >> 6] |= uint64_t{1} << (p[i] & 63);
  const int distinct = __builtin_popcountll(seen[0]) + __builtin_popcountll(seen[1]) +
                       __builtin_popcountll(seen[2]) + __builtin_popcountll(seen[3]);
  return distinct >= 200;
}

inline bool RequireArgs(const Napi::CallbackInfo& info, size_t n) {
  if (info.Length() < n) {
    Napi::TypeError::New(info.Env(), "Expected " + std::to_string(n) + " arguments, got " +
                                         std::to_string(info.Length()))
        .ThrowAsJavaScriptException();
    return false;
  }
  return true;
}

// A Uint8Array of at least min_len bytes.
inline bool RequireBytes(const Napi::CallbackInfo& info, size_t i, const char* name,
                         size_t min_len = 0) {
  if (!info[i].IsTypedArray() ||
      info[i].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    Napi::TypeError::New(info.Env(), std::string("Expected a Uint8Array for ") + name)
        .ThrowAsJavaScriptException();
    return false;
  }
  if (info[i].As<Napi::Uint8Array>().ByteLength() < min_len) {
    Napi::RangeError::New(info.Env(), std::string(name) + " is too short")
        .ThrowAsJavaScriptException();
    return false;
  }
  return true;
}

// A non-negative integer that fits in a size_t and a double without loss.
inline bool RequireSize(const Napi::CallbackInfo& info, size_t i, const char* name, size_t* out) {
  if (!info[i].IsNumber()) {
    Napi::TypeError::New(info.Env(), std::string("Expected a number for ") + name)
        .ThrowAsJavaScriptException();
    return false;
  }
  const double v = info[i].As<Napi::Number>().DoubleValue();
  if (!(v >= 0) || v > 9007199254740991.0 || v != static_cast<double>(static_cast<uint64_t>(v))) {
    Napi::RangeError::New(info.Env(), std::string("Expected a non-negative integer for ") + name)
        .ThrowAsJavaScriptException();
    return false;
  }
  *out = static_cast<size_t>(v);
  return true;
}

inline bool RequireFunction(const Napi::CallbackInfo& info, size_t i) {
  if (info[i].IsFunction()) return true;
  Napi::TypeError::New(info.Env(), "Expected a function for callback").ThrowAsJavaScriptException();
  return false;
}

inline bool RequireUint32Array(const Napi::CallbackInfo& info, size_t i, const char* name,
                               size_t min_len) {
  if (!info[i].IsTypedArray() ||
      info[i].As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array) {
    Napi::TypeError::New(info.Env(), std::string("Expected a Uint32Array for ") + name)
        .ThrowAsJavaScriptException();
    return false;
  }
  if (info[i].As<Napi::Uint32Array>().ElementLength() < min_len) {
    Napi::RangeError::New(info.Env(), std::string(name) + " is too short")
        .ThrowAsJavaScriptException();
    return false;
  }
  return true;
}

// An array of Uint8Array -> (pointer, length) pairs, in order. `keep` (if
// given) collects the elements so an async job can pin them.
inline bool RequireByteList(const Napi::CallbackInfo& info, size_t i, const char* name,
                            ByteSpans* out, std::vector<Napi::Value>* keep = nullptr) {
  const std::string msg = std::string("Expected an array of Uint8Array for ") + name;
  if (!info[i].IsArray()) {
    Napi::TypeError::New(info.Env(), msg).ThrowAsJavaScriptException();
    return false;
  }
  auto list = info[i].As<Napi::Array>();
  for (uint32_t k = 0; k < list.Length(); k++) {
    Napi::Value v = list.Get(k);
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
      Napi::TypeError::New(info.Env(), msg).ThrowAsJavaScriptException();
      return false;
    }
    auto u = v.As<Napi::Uint8Array>();
    out->push_back({u.Data(), u.ByteLength()});
    if (keep != nullptr) keep->push_back(v);
  }
  return true;
}

}  // namespace mfd

#endif  // MFD_COMMON_H_
