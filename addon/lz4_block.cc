// The lz4 method's packets (docs/wire-format.md): a little-endian u32 with the
// uncompressed length, then one LZ4 block of the packet's normal pages joined in
// offset order. liblz4 (Debian's liblz4-dev) makes and reads the block, in the
// caller's buffers: one call per packet, no allocation per packet.
#include <napi.h>

#ifdef MFD_HAVE_LZ4
#include <lz4.h>
#endif

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "common.h"
#include "packet_decoder.h"

namespace mfd {
#ifdef MFD_HAVE_LZ4
namespace {

constexpr size_t kPrefix = 4;

// LZ4's worst case for n bytes plus the length prefix (what the method's maxPayload allows).
size_t Lz4Bound(size_t n) {
  return static_cast<size_t>(LZ4_compressBound(static_cast<int>(n))) + kPrefix;
}

/* lz4Compress(runs: Uint8Array[], out) -> bytes written to out (prefix and block) */
Napi::Value JS_lz4Compress(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ByteSpans runs;
  if (!RequireArgs(info, 2) || !RequireByteList(info, 0, "runs", &runs) ||
      !RequireBytes(info, 1, "out"))
    return env.Undefined();
  auto out = info[1].As<Napi::Uint8Array>();
  size_t total = 0;
  for (const auto& run : runs) total += run.second;
  if (total > static_cast<size_t>(LZ4_MAX_INPUT_SIZE)) {
    Napi::RangeError::New(env, "lz4Compress: input too large").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (out.ByteLength() < Lz4Bound(total)) {
    Napi::RangeError::New(env, "lz4Compress: out is smaller than the bound")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  // One block needs one contiguous input: several runs are joined in this thread's
  // buffer (a packet's worth, kept for the next packet).
  const uint8_t* src = runs.empty() ? out.Data() : runs[0].first;
  if (runs.size() > 1) {
    thread_local std::vector<uint8_t> joined;
    joined.resize(total);
    size_t at = 0;
    for (const auto& run : runs) {
      std::memcpy(joined.data() + at, run.first, run.second);
      at += run.second;
    }
    src = joined.data();
  }
  thread_local std::vector<uint8_t> state(static_cast<size_t>(LZ4_sizeofState()));
  uint8_t* dst = out.Data();
  const uint32_t n = static_cast<uint32_t>(total);
  dst[0] = static_cast<uint8_t>(n);
  dst[1] = static_cast<uint8_t>(n >> 8);
  dst[2] = static_cast<uint8_t>(n >> 16);
  dst[3] = static_cast<uint8_t>(n >> 24);
  const int wrote = LZ4_compress_fast_extState(
      state.data(), reinterpret_cast<const char*>(src), reinterpret_cast<char*>(dst + kPrefix),
      static_cast<int>(total), static_cast<int>(out.ByteLength() - kPrefix), 1);
  if (wrote <= 0 && total > 0) {
    ThrowCode(env, "ERR_LZ4", "LZ4_compress_fast_extState failed");
    return env.Undefined();
  }
  return Napi::Number::New(env, static_cast<double>(kPrefix + static_cast<size_t>(wrote)));
}

// A packet's decoder for a channel's thread (packet_decoder.h): its length prefix checked against
// the pages' bytes, then its block decoded into them. Stateless: one serves every channel.
class Lz4Decoder : public PacketDecoder {
 public:
  int64_t Decode(const ByteSpans& pieces, uint8_t* out, size_t cap, DecodeFailure* why) override {
    // A channel's thread reads a payload into one buffer; gather any other case.
    std::vector<uint8_t> joined;
    const uint8_t* in = pieces.empty() ? nullptr : pieces[0].first;
    size_t len = pieces.empty() ? 0 : pieces[0].second;
    if (pieces.size() > 1) {
      for (const auto& p : pieces) joined.insert(joined.end(), p.first, p.first + p.second);
      in = joined.data();
      len = joined.size();
    }
    const int64_t declared = len >= kPrefix
                                 ? static_cast<int64_t>(in[0] | in[1] << 8 | in[2] << 16 |
                                                        static_cast<uint32_t>(in[3]) << 24)
                                 : -1;
    if (declared != static_cast<int64_t>(cap)) {
      why->code = "ERR_PAYLOAD_SIZE";
      why->message = "lz4 payload declares " + std::to_string(declared) + " bytes, expected " +
                     std::to_string(cap);
      return -1;
    }
    const int got =
        len - kPrefix > static_cast<size_t>(LZ4_MAX_INPUT_SIZE) ||
                cap > static_cast<size_t>(LZ4_MAX_INPUT_SIZE)
            ? -1
            : LZ4_decompress_safe(reinterpret_cast<const char*>(in + kPrefix),
                                  reinterpret_cast<char*>(out), static_cast<int>(len - kPrefix),
                                  static_cast<int>(cap));
    if (got < 0) {
      why->code = "ERR_PAYLOAD_CORRUPT";
      why->message = "corrupt LZ4 block";
      return -1;
    }
    return got;
  }
};

// The one decoder: stateless, so every channel's thread and every worker's decompress() share it.
const DecoderRef& TheLz4Decoder() {
  static const DecoderRef decoder = std::make_shared<Lz4Decoder>();
  return decoder;
}

/* lz4Decoder() -> the handle recvWrite takes to decode lz4 packets on a channel's thread */
Napi::Value JS_lz4Decoder(const Napi::CallbackInfo& info) {
  return DecoderHandle(info.Env(), TheLz4Decoder());
}

/*
 * lz4Decompress(pieces, out) -> bytes decoded into out: the channel thread's decoding (Lz4Decoder,
 * its checks too) for a worker's recv(); a payload it refuses throws ERR_PAYLOAD_SIZE or
 * ERR_PAYLOAD_CORRUPT.
 */
Napi::Value JS_lz4Decompress(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ByteSpans pieces;
  if (!RequireArgs(info, 2) || !RequireByteList(info, 0, "pieces", &pieces) ||
      !RequireBytes(info, 1, "out"))
    return env.Undefined();
  return DecodeForJs(env, *TheLz4Decoder(), pieces, info[1].As<Napi::Uint8Array>());
}

}  // namespace

void InitLz4Block(Napi::Env env, Napi::Object exports) {
  exports.Set("lz4Compress", Napi::Function::New(env, JS_lz4Compress, "lz4Compress"));
  exports.Set("lz4Decompress", Napi::Function::New(env, JS_lz4Decompress, "lz4Decompress"));
  exports.Set("lz4Decoder", Napi::Function::New(env, JS_lz4Decoder, "lz4Decoder"));
  exports.Set("lz4Version", Napi::String::New(env, LZ4_versionString()));
}
#else
// Built without liblz4-dev: the lz4 method runs its lz4-napi engine.
void InitLz4Block(Napi::Env env, Napi::Object exports) { exports.Set("lz4Version", env.Null()); }
#endif

}  // namespace mfd
