// zlib exactly as QEMU's multifd-zlib frames it: one z_stream per channel for
// the whole migration, never reset or finished. Each page is copied to a
// bounce page (the image may change under deflate) and deflated with
// Z_NO_FLUSH; the packet's last page with Z_SYNC_FLUSH, so every payload ends
// on a byte boundary. The receiver inflates a channel's payloads in order.
//
// One speed-up, standard zlib all the same: a page that looks like random
// bytes (compressed or encrypted data, which deflate cannot shrink) is
// deflated at level 0, stored as it is, through deflateParams(); deflate at
// level 1 spends 10x longer on such a page for no gain.
//
// Where ISA-L is available (built with its headers, MFD_HAVE_ISAL, and
// libisal.so.2 loaded at run time: isal.h), the same stream can be made by igzip
// instead, still standard zlib: isal_deflate with the zlib wrapper
// (IGZIP_ZLIB) and SYNC_FLUSH at the end of each packet, and read by
// isal_inflate (ISAL_ZLIB), which takes any valid zlib stream. Which engine
// and ISA-L level a level maps to is decided in src/methods/zlib.ts.
#include <napi.h>
#include <zlib.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "common.h"
#include "isal.h"
#include "packet_decoder.h"

namespace mfd {
namespace {

#ifdef MFD_HAVE_ISAL
std::string IsalInflateError(int rc) {
  switch (rc) {
    case ISAL_INVALID_BLOCK:
      return "invalid block";
    case ISAL_INVALID_SYMBOL:
      return "invalid symbol";
    case ISAL_INVALID_LOOKBACK:
      return "invalid distance too far back";
    case ISAL_INVALID_WRAPPER:
      return "invalid zlib header";
    case ISAL_UNSUPPORTED_METHOD:
      return "unknown compression method";
    case ISAL_INCORRECT_CHECKSUM:
      return "incorrect header check";
    case ISAL_NEED_DICT:
      return "needs a preset dictionary";
    default:
      return "error";
  }
}
#endif

// A channel's inflating stream, zlib's or igzip's: every payload inflated in order into the
// caller's pages, by whichever single thread runs it (a compute worker through inflate(), or the
// channel's own thread through recvWrite). Every input byte is decoded; output past the pages is
// ERR_PAYLOAD_SIZE, anything else wrong ERR_PAYLOAD_CORRUPT.
class ZlibInflater : public PacketDecoder {
 public:
  // zlib's inflate; "" or why it could not start
  std::string InitZlib() {
    std::memset(&zs_, 0, sizeof(zs_));
    const int rc = inflateInit(&zs_);
    if (rc != Z_OK)
      return std::string("zlib init failed: ") + (zs_.msg ? zs_.msg : std::to_string(rc));
    zlib_open_ = true;
    return "";
  }

#ifdef MFD_HAVE_ISAL
  // igzip's inflate (ISAL_ZLIB: any valid zlib stream)
  void InitIsal() {
    isal_ = std::make_unique<inflate_state>();
    Isal()->isal_inflate_init(isal_.get());
    isal_->crc_flag = ISAL_ZLIB;
  }
#endif

  ~ZlibInflater() override {
    if (zlib_open_) inflateEnd(&zs_);
  }

  int64_t Decode(const ByteSpans& pieces, uint8_t* out, size_t cap, DecodeFailure* why) override {
#ifdef MFD_HAVE_ISAL
    if (isal_) return DecodeIsal(pieces, out, cap, why);
#endif
    return DecodeZlib(pieces, out, cap, why);
  }

 private:
  static int64_t Fail(DecodeFailure* why, const char* code, std::string message) {
    why->code = code;
    why->message = std::move(message);
    return -1;
  }

  int64_t DecodeZlib(const ByteSpans& pieces, uint8_t* out, size_t cap, DecodeFailure* why) {
    zs_.next_out = out;
    zs_.avail_out = static_cast<uInt>(cap);
    for (const auto& piece : pieces) {
      zs_.next_in = const_cast<Bytef*>(piece.first);
      zs_.avail_in = static_cast<uInt>(piece.second);
      while (zs_.avail_in > 0) {
        const int rc = ::inflate(&zs_, Z_SYNC_FLUSH);
        if (rc == Z_STREAM_END)
          return Fail(why, "ERR_PAYLOAD_CORRUPT",
                      "zlib stream ended, but QEMU's streams never end");
        if (rc != Z_OK && rc != Z_BUF_ERROR)
          return Fail(why, "ERR_PAYLOAD_CORRUPT",
                      std::string("inflate returned ") + std::to_string(rc) +
                          (zs_.msg ? std::string(" (") + zs_.msg + ")" : ""));
        if (zs_.avail_out == 0 && zs_.avail_in > 0)
          return Fail(why, "ERR_PAYLOAD_SIZE",
                      "inflate generated more output than the packet's pages");
        if (rc == Z_BUF_ERROR) break;
      }
    }
    return static_cast<int64_t>(cap - zs_.avail_out);
  }

#ifdef MFD_HAVE_ISAL
  // Into out, then into a scratch page, where any byte at all is more output than the packet's
  // pages. A last call with no input drains what igzip holds decoded but not yet written.
  int64_t DecodeIsal(const ByteSpans& pieces, uint8_t* out, size_t cap, DecodeFailure* why) {
    inflate_state* s = isal_.get();
    uint8_t spare[256];
    s->next_out = out;
    s->avail_out = static_cast<uint32_t>(cap);
    bool in_spare = false;
    int64_t produced = 0;
    auto fail = [&](const char* code, std::string message) {
      Fail(why, code, std::move(message));
      return false;
    };
    auto step = [&](const uint8_t* in, size_t len) -> bool {
      s->next_in = const_cast<uint8_t*>(in);
      s->avail_in = static_cast<uint32_t>(len);
      for (;;) {
        if (s->avail_out == 0 && !in_spare) {
          produced = static_cast<int64_t>(cap);
          in_spare = true;
          s->next_out = spare;
          s->avail_out = sizeof(spare);
        }
        const uint32_t in_before = s->avail_in;
        const int rc = Isal()->isal_inflate(s);
        if (rc != ISAL_DECOMP_OK)
          return fail("ERR_PAYLOAD_CORRUPT",
                      "inflate returned " + std::to_string(rc) + " (" + IsalInflateError(rc) + ")");
        if (s->bfinal != 0 || s->block_state == ISAL_BLOCK_INPUT_DONE ||
            s->block_state == ISAL_BLOCK_FINISH || s->block_state == ISAL_CHECKSUM_CHECK)
          return fail("ERR_PAYLOAD_CORRUPT", "zlib stream ended, but QEMU's streams never end");
        if (in_spare && s->avail_out != sizeof(spare))
          return fail("ERR_PAYLOAD_SIZE", "inflate generated more output than the packet's pages");
        if (s->avail_in == 0) return true;
        if (s->avail_in == in_before && s->avail_out != 0)
          return fail("ERR_PAYLOAD_CORRUPT",
                      "inflate stopped with " + std::to_string(s->avail_in) + " input bytes left");
      }
    };
    for (const auto& piece : pieces)
      if (!step(piece.first, piece.second)) return -1;
    if (!step(nullptr, 0)) return -1;
    if (!in_spare) produced = static_cast<int64_t>(cap - s->avail_out);
    return produced;
  }

  std::unique_ptr<inflate_state> isal_;
#endif
  z_stream zs_;
  bool zlib_open_ = false;
};

class ZlibStream : public Napi::ObjectWrap<ZlibStream> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "ZlibStream",
                       {InstanceMethod("deflatePages", &ZlibStream::DeflatePages),
                        InstanceMethod("inflate", &ZlibStream::Inflate),
                        InstanceMethod("decoder", &ZlibStream::Decoder),
                        InstanceMethod("close", &ZlibStream::Close)});
  }

  /* new ZlibStream(inflate: boolean, level: number, engine?: "zlib" | "isal"); an ISA-L deflate
   * level is 1..3 */
  explicit ZlibStream(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ZlibStream>(info) {
    size_t level = 0;
    if (!RequireArgs(info, 2) || !RequireSize(info, 1, "level", &level)) return;
    inflate_ = info[0].ToBoolean().Value();
    level_ = current_level_ = static_cast<int>(level);
    if (info.Length() > 2 && info[2].IsString() &&
        info[2].As<Napi::String>().Utf8Value() == "isal") {
      InitIsal(info.Env());
      return;
    }
    if (inflate_) {
      auto inflater = std::make_shared<ZlibInflater>();
      const std::string failed = inflater->InitZlib();
      if (!failed.empty()) {
        ThrowCode(info.Env(), "ERR_ZLIB", failed);
        return;
      }
      inflater_ = std::move(inflater);
      open_ = true;
      return;
    }
    std::memset(&zs_, 0, sizeof(zs_));
    const int rc = deflateInit(&zs_, level_);
    if (rc != Z_OK) {
      ThrowCode(info.Env(), "ERR_ZLIB",
                std::string("zlib init failed: ") + (zs_.msg ? zs_.msg : std::to_string(rc)));
      return;
    }
    open_ = true;
  }

  ~ZlibStream() override { End(); }

 private:
  // Switches the stream's level; zlib flushes what it holds at the old level first.
  bool SetLevel(int level) {
    if (level == current_level_) return true;
    if (deflateParams(&zs_, level, Z_DEFAULT_STRATEGY) != Z_OK) return false;
    current_level_ = level;
    return true;
  }

#ifdef MFD_HAVE_ISAL
  void InitIsal(Napi::Env env) {
    const IsalApi* isal = Isal();
    if (isal == nullptr) {
      ThrowCode(env, "ERR_ZLIB", IsalUnavailable());
      return;
    }
    if (inflate_) {
      auto inflater = std::make_shared<ZlibInflater>();
      inflater->InitIsal();
      inflater_ = std::move(inflater);
    } else {
      // Level 0 is left out: it never stores, so random pages would outgrow compressBound.
      if (level_ < 1 || level_ > ISAL_DEF_MAX_LEVEL) {
        Napi::RangeError::New(env,
                              "ISA-L deflate levels are 1.." + std::to_string(ISAL_DEF_MAX_LEVEL))
            .ThrowAsJavaScriptException();
        return;
      }
      deflater_ = std::make_unique<isal_zstream>();
      isal->isal_deflate_init(deflater_.get());
      level_buf_.resize(IsalLevelBufSize(level_));
      deflater_->level = static_cast<uint32_t>(level_);
      deflater_->level_buf = level_buf_.data();
      deflater_->level_buf_size = static_cast<uint32_t>(level_buf_.size());
      deflater_->gzip_flag = IGZIP_ZLIB;
      deflater_->flush = SYNC_FLUSH;
    }
    isal_ = open_ = true;
  }

  // The packet's pages in one bounce copy (the image may change under
  // deflate), deflated in as few calls as the data allows, the last ending
  // with the packet's sync flush. Like the zlib path's level-0 switch, runs
  // of random-looking pages get blocks of their own (a sync flush between
  // runs ends the block), which igzip then stores; one Huffman block mixing
  // them with text cost 6% more bytes at ISA-L level 1. A run is at least
  // kMinRunPages pages long, so the flushes' 4 bytes each stay well within
  // compressBound's slack.
  bool DeflateIsal(Napi::Env env, const ByteSpans& runs, size_t ps, size_t bytes,
                   Napi::Uint8Array out, size_t* written) {
    static constexpr size_t kMinRunPages = 8;
    bounce_.resize(bytes);
    size_t at = 0;
    for (const auto& run : runs) {
      std::memcpy(bounce_.data() + at, run.first, run.second);
      at += run.second;
    }
    isal_zstream* s = deflater_.get();
    s->next_out = out.Data();
    s->avail_out = static_cast<uint32_t>(out.ByteLength());
    const size_t pages = bytes / ps;
    size_t start = 0;
    bool random = LooksIncompressible(bounce_.data(), ps);
    for (size_t i = 1; i <= pages; i++) {
      const bool next = i < pages && LooksIncompressible(bounce_.data() + i * ps, ps);
      if (i < pages && (next == random || i - start < kMinRunPages || pages - i < kMinRunPages))
        continue;
      s->next_in = bounce_.data() + start * ps;
      s->avail_in = static_cast<uint32_t>((i - start) * ps);
      const int rc = Isal()->isal_deflate(s);
      if (rc != COMP_OK) {
        ThrowCode(env, "ERR_ZLIB",
                  "isal_deflate returned " + std::to_string(rc) + " instead of COMP_OK");
        return false;
      }
      // Done when all input is in and the flush's empty stored block is out, with room to spare.
      if (s->avail_in != 0 || s->avail_out == 0 || s->internal_state.state != ZSTATE_NEW_HDR) {
        ThrowCode(env, "ERR_ZLIB",
                  "isal_deflate failed to compress all input (output buffer too small)");
        return false;
      }
      start = i;
      random = next;
    }
    *written = out.ByteLength() - s->avail_out;
    return true;
  }

#else
  void InitIsal(Napi::Env env) { ThrowCode(env, "ERR_ZLIB", IsalUnavailable()); }
  bool DeflateIsal(Napi::Env, const ByteSpans&, size_t, size_t, Napi::Uint8Array, size_t*) {
    return false;
  }
#endif

  void End() {
    if (!open_) return;
    open_ = false;
    // An operation that still runs the inflater holds its own reference.
    inflater_.reset();
    if (isal_) {
#ifdef MFD_HAVE_ISAL
      deflater_.reset();
      level_buf_.clear();
#endif
      return;
    }
    if (!inflate_) deflateEnd(&zs_);
  }

  bool CheckOpen(Napi::Env env) {
    if (open_) return true;
    ThrowCode(env, "ERR_ZLIB", "zlib stream is closed");
    return false;
  }

  /* deflatePages(pieces: Uint8Array[], pageSize, out) -> bytes written to out */
  Napi::Value DeflatePages(const Napi::CallbackInfo& info) {
    size_t ps = 0;
    if (!RequireArgs(info, 3) || !RequireSize(info, 1, "pageSize", &ps) ||
        !RequireBytes(info, 2, "out") || !CheckOpen(info.Env()))
      return info.Env().Undefined();
    if (inflate_ || ps == 0) {
      Napi::TypeError::New(info.Env(), "deflatePages: needs a deflate stream and a page size")
          .ThrowAsJavaScriptException();
      return info.Env().Undefined();
    }
    auto out = info[2].As<Napi::Uint8Array>();
    ByteSpans runs;
    if (!RequireByteList(info, 0, "runs", &runs)) return info.Env().Undefined();
    size_t pages = 0;
    for (const auto& run : runs) {
      if (run.second % ps != 0) {
        Napi::RangeError::New(info.Env(), "deflatePages: each run must be whole pages")
            .ThrowAsJavaScriptException();
        return info.Env().Undefined();
      }
      pages += run.second / ps;
    }
    if (isal_) {
      size_t written = 0;
      if (!DeflateIsal(info.Env(), runs, ps, pages * ps, out, &written))
        return info.Env().Undefined();
      return Napi::Number::New(info.Env(), static_cast<double>(written));
    }
    bounce_.resize(ps);
    zs_.next_out = out.Data();
    zs_.avail_out = static_cast<uInt>(out.ByteLength());
    size_t done = 0;
    for (const auto& run : runs) {
      for (size_t off = 0; off < run.second; off += ps) {
        std::memcpy(bounce_.data(), run.first + off, ps);
        const int flush = ++done == pages ? Z_SYNC_FLUSH : Z_NO_FLUSH;
        if (level_ > 0 && !SetLevel(LooksIncompressible(bounce_.data(), ps) ? 0 : level_)) {
          ThrowCode(info.Env(), "ERR_ZLIB", "deflateParams failed (output buffer too small)");
          return info.Env().Undefined();
        }
        zs_.next_in = bounce_.data();
        zs_.avail_in = static_cast<uInt>(ps);
        const int rc = deflate(&zs_, flush);
        if (rc != Z_OK) {
          ThrowCode(info.Env(), "ERR_ZLIB",
                    "deflate returned " + std::to_string(rc) + " instead of Z_OK");
          return info.Env().Undefined();
        }
        if (zs_.avail_in != 0 || (flush == Z_SYNC_FLUSH && zs_.avail_out == 0)) {
          ThrowCode(info.Env(), "ERR_ZLIB",
                    "deflate failed to compress all input (output buffer too small)");
          return info.Env().Undefined();
        }
      }
    }
    return Napi::Number::New(info.Env(), static_cast<double>(out.ByteLength() - zs_.avail_out));
  }

  /* inflate(pieces: Uint8Array[], out) -> bytes produced; every input byte must be used, output may
   * not overflow */
  Napi::Value Inflate(const Napi::CallbackInfo& info) {
    if (!RequireArgs(info, 2) || !RequireBytes(info, 1, "out") || !CheckOpen(info.Env()))
      return info.Env().Undefined();
    if (!inflate_) {
      Napi::TypeError::New(info.Env(), "inflate: needs an inflate stream")
          .ThrowAsJavaScriptException();
      return info.Env().Undefined();
    }
    ByteSpans pieces;
    if (!RequireByteList(info, 0, "pieces", &pieces)) return info.Env().Undefined();
    auto out = info[1].As<Napi::Uint8Array>();
    return DecodeForJs(info.Env(), *inflater_, pieces, out);
  }

  /* decoder() -> the handle recvWrite takes to inflate this stream's payloads on a channel's thread
   */
  Napi::Value Decoder(const Napi::CallbackInfo& info) {
    if (!CheckOpen(info.Env())) return info.Env().Undefined();
    if (!inflate_) {
      Napi::TypeError::New(info.Env(), "decoder: needs an inflate stream")
          .ThrowAsJavaScriptException();
      return info.Env().Undefined();
    }
    return DecoderHandle(info.Env(), inflater_);
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    End();
    return info.Env().Undefined();
  }

  z_stream zs_;
  int level_ = 0;          // the level asked for
  int current_level_ = 0;  // the level the stream runs at now
  bool inflate_ = false;
  bool open_ = false;
  bool isal_ = false;  // ISA-L igzip runs the stream instead of zlib
  std::vector<uint8_t> bounce_;
  std::shared_ptr<ZlibInflater> inflater_;  // an inflate stream's, zlib's or igzip's
#ifdef MFD_HAVE_ISAL
  std::unique_ptr<isal_zstream> deflater_;
  std::vector<uint8_t> level_buf_;
#endif
};

}  // namespace

void InitZlibStream(Napi::Env env, Napi::Object exports) {
  exports.Set("ZlibStream", ZlibStream::Define(env));
  exports.Set("zlibVersion", Napi::String::New(env, zlibVersion()));
  const bool isal = Isal() != nullptr;
  exports.Set("isalVersion",
              isal ? Napi::Value(Napi::String::New(env, IsalVersion())) : env.Null());
  exports.Set("isalFile", isal ? Napi::Value(Napi::String::New(env, IsalFile())) : env.Null());
  exports.Set("isalUnavailable",
              isal ? env.Null() : Napi::Value(Napi::String::New(env, IsalUnavailable())));
  exports.Set("zlibCompressBound",
              Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
                size_t n = 0;
                if (!RequireArgs(info, 1) || !RequireSize(info, 0, "bytes", &n))
                  return info.Env().Undefined();
                // deflateBound needs a stream; compressBound plus the sync-flush marker is an upper
                // bound.
                return Napi::Number::New(
                    info.Env(), static_cast<double>(compressBound(static_cast<uLong>(n)) + 64));
              }));
}

}  // namespace mfd
