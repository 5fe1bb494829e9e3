// zstd exactly as QEMU's multifd-zstd frames it: one zstd stream per channel for
// the whole migration, never ended. A packet's page runs go to the stream with
// ZSTD_e_continue and its last with ZSTD_e_flush, so every payload ends on a
// block boundary and the channel's frame never closes (its header is in the
// first payload only). libzstd (Debian's libzstd-dev) runs the stream, in the
// caller's buffers: one call per packet, straight from the runs into the
// caller's output and from the payload into the caller's pages. Built without
// libzstd-dev, the zstd method runs its zstd-napi engine.
//
// The stream keeps its own window buffer (zstd's buffered input): the history
// a never-ending frame refers to must outlive the caller's runs, which belong
// to the image, and ZSTD_c_stableInBuffer holds only for input that stays put
// until the frame ends.
#include <napi.h>

#ifdef MFD_HAVE_ZSTD
#include <zstd.h>
#endif

#include <memory>
#include <string>

#include "common.h"
#include "packet_decoder.h"

namespace mfd {
#ifdef MFD_HAVE_ZSTD
namespace {

// A channel's decompressing stream: every payload decoded in order into the caller's pages, by
// whichever single thread runs it (a compute worker through decompress(), or the channel's own
// thread through recvWrite).
class ZstdDecoder : public PacketDecoder {
 public:
  ZstdDecoder() : d_(ZSTD_createDCtx()) {}
  ~ZstdDecoder() override { ZSTD_freeDCtx(d_); }
  ZstdDecoder(const ZstdDecoder&) = delete;
  ZstdDecoder& operator=(const ZstdDecoder&) = delete;

  ZSTD_DCtx* dctx() const { return d_; }

  // Every input byte is decoded; a byte more than out holds is an ERR_PAYLOAD_SIZE, a zstd error an
  // ERR_PAYLOAD_CORRUPT.
  int64_t Decode(const ByteSpans& pieces, uint8_t* out, size_t cap, DecodeFailure* why) override {
    ZSTD_outBuffer o = {out, cap, 0};
    // Once out is full, whatever the stream still yields lands here and is too much.
    uint8_t spare[1];
    auto fail = [&](const char* code, std::string message) {
      why->code = code;
      why->message = std::move(message);
      return false;
    };
    auto step = [&](const uint8_t* data, size_t len) -> bool {
      ZSTD_inBuffer in = {data, len, 0};
      for (;;) {
        const bool full = o.pos == o.size;
        ZSTD_outBuffer s = {spare, sizeof(spare), 0};
        const size_t in_before = in.pos, out_before = o.pos;
        const size_t rc = ZSTD_decompressStream(d_, full ? &s : &o, &in);
        if (ZSTD_isError(rc))
          return fail("ERR_PAYLOAD_CORRUPT",
                      std::string("decompressStream returned ") + ZSTD_getErrorName(rc));
        if (s.pos != 0)
          return fail("ERR_PAYLOAD_SIZE",
                      "packet decodes to more than " + std::to_string(o.size) + " bytes");
        // Done when the input is used and the stream holds nothing more to write out.
        if (in.pos == in.size && (full || o.pos < o.size)) return true;
        if (in.pos == in_before && o.pos == out_before)
          return fail("ERR_PAYLOAD_CORRUPT", "decompressStream stopped with " +
                                                 std::to_string(in.size - in.pos) +
                                                 " input bytes left");
      }
    };
    // Each step ends with the stream flushed: out has room left, or a full out was offered the
    // spare byte.
    for (const auto& piece : pieces)
      if (!step(piece.first, piece.second)) return -1;
    return static_cast<int64_t>(o.pos);
  }

 private:
  ZSTD_DCtx* d_;
};

class ZstdStream : public Napi::ObjectWrap<ZstdStream> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "ZstdStream",
                       {InstanceMethod("compress", &ZstdStream::Compress),
                        InstanceMethod("decompress", &ZstdStream::Decompress),
                        InstanceMethod("decoder", &ZstdStream::Decoder),
                        InstanceMethod("close", &ZstdStream::Close)});
  }

  /* new ZstdStream(decompress: boolean, level: number, windowLog: number): level and windowLog
   * (0: the level's own) for a compressing stream; windowLog is the largest window a
   * decompressing stream accepts. */
  explicit ZstdStream(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ZstdStream>(info) {
    Napi::Env env = info.Env();
    size_t level = 0, window_log = 0;
    if (!RequireArgs(info, 3) || !RequireSize(info, 1, "level", &level) ||
        !RequireSize(info, 2, "windowLog", &window_log))
      return;
    if (info[0].ToBoolean().Value()) {
      auto d = std::make_shared<ZstdDecoder>();
      if (d->dctx() == nullptr) {
        ThrowCode(env, "ERR_ZSTD", "ZSTD_createDCtx failed");
        return;
      }
      if (!Check(
              env,
              ZSTD_DCtx_setParameter(d->dctx(), ZSTD_d_windowLogMax, static_cast<int>(window_log)),
              "ZSTD_d_windowLogMax"))
        return;
      d_ = std::move(d);
    } else {
      c_ = ZSTD_createCCtx();
      if (c_ == nullptr) {
        ThrowCode(env, "ERR_ZSTD", "ZSTD_createCCtx failed");
        return;
      }
      if (!Check(env, ZSTD_CCtx_setParameter(c_, ZSTD_c_compressionLevel, static_cast<int>(level)),
                 "ZSTD_c_compressionLevel"))
        return;
      if (window_log != 0 &&
          !Check(env, ZSTD_CCtx_setParameter(c_, ZSTD_c_windowLog, static_cast<int>(window_log)),
                 "ZSTD_c_windowLog"))
        return;
    }
  }

  ~ZstdStream() override { End(); }

 private:
  static bool Check(Napi::Env env, size_t rc, const char* what) {
    if (!ZSTD_isError(rc)) return true;
    ThrowCode(env, "ERR_ZSTD", std::string(what) + ": " + ZSTD_getErrorName(rc));
    return false;
  }

  void End() {
    ZSTD_freeCCtx(c_);
    c_ = nullptr;
    d_.reset();  // operations that still run it hold their own reference
  }

  /* compress(runs: Uint8Array[], out) -> bytes written to out: the runs with ZSTD_e_continue, the
   * last flushed (ZSTD_e_flush) */
  Napi::Value Compress(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    ByteSpans runs;
    if (!RequireArgs(info, 2) || !RequireByteList(info, 0, "runs", &runs) ||
        !RequireBytes(info, 1, "out"))
      return env.Undefined();
    if (c_ == nullptr) {
      ThrowCode(env, "ERR_ZSTD", "compress: needs an open compressing stream");
      return env.Undefined();
    }
    auto out = info[1].As<Napi::Uint8Array>();
    ZSTD_outBuffer o = {out.Data(), out.ByteLength(), 0};
    const size_t calls = runs.empty() ? 1 : runs.size();  // no runs: only the flush
    for (size_t i = 0; i < calls; i++) {
      const bool last = i + 1 == calls;
      ZSTD_inBuffer in = {runs.empty() ? nullptr : runs[i].first, runs.empty() ? 0 : runs[i].second,
                          0};
      const ZSTD_EndDirective op = last ? ZSTD_e_flush : ZSTD_e_continue;
      for (;;) {
        const size_t remaining = ZSTD_compressStream2(c_, &o, &in, op);
        if (!Check(env, remaining, "ZSTD_compressStream2")) return env.Undefined();
        if (in.pos == in.size && (!last || remaining == 0)) break;
        if (o.pos == o.size) {
          ThrowCode(env, "ERR_ZSTD", "compressStream buffer too small");
          return env.Undefined();
        }
      }
    }
    return Napi::Number::New(env, static_cast<double>(o.pos));
  }

  /* decompress(pieces: Uint8Array[], out) -> bytes decoded into out (ZstdDecoder::Decode); a
   * payload that does not decode throws ERR_PAYLOAD_CORRUPT or ERR_PAYLOAD_SIZE. */
  Napi::Value Decompress(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    ByteSpans pieces;
    if (!RequireArgs(info, 2) || !RequireByteList(info, 0, "pieces", &pieces) ||
        !RequireBytes(info, 1, "out"))
      return env.Undefined();
    if (d_ == nullptr) {
      ThrowCode(env, "ERR_ZSTD", "decompress: needs an open decompressing stream");
      return env.Undefined();
    }
    auto out = info[1].As<Napi::Uint8Array>();
    return DecodeForJs(env, *d_, pieces, out);
  }

  /* decoder() -> the handle recvWrite takes to decode this stream's payloads on a channel's thread
   */
  Napi::Value Decoder(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (d_ == nullptr) {
      ThrowCode(env, "ERR_ZSTD", "decoder: needs an open decompressing stream");
      return env.Undefined();
    }
    return DecoderHandle(env, d_);
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    End();
    return info.Env().Undefined();
  }

  ZSTD_CCtx* c_ = nullptr;
  std::shared_ptr<ZstdDecoder> d_;
};

}  // namespace

void InitZstdStream(Napi::Env env, Napi::Object exports) {
  exports.Set("ZstdStream", ZstdStream::Define(env));
  exports.Set("zstdVersion", Napi::String::New(env, ZSTD_versionString()));
}
#else
// Built without libzstd-dev: the zstd method runs its zstd-napi engine.
void InitZstdStream(Napi::Env env, Napi::Object exports) { exports.Set("zstdVersion", env.Null()); }
#endif

}  // namespace mfd
