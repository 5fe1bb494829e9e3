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
#include <napi.h>
#include <zlib.h>

#include <cstring>
#include <string>
#include <vector>

#include "common.h"

namespace mfd {
namespace {

class ZlibStream : public Napi::ObjectWrap<ZlibStream> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "ZlibStream",
                       {InstanceMethod("deflatePages", &ZlibStream::DeflatePages),
                        InstanceMethod("inflate", &ZlibStream::Inflate),
                        InstanceMethod("close", &ZlibStream::Close)});
  }

  /* new ZlibStream(inflate: boolean, level: number) */
  explicit ZlibStream(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ZlibStream>(info) {
    size_t level = 0;
    if (!RequireArgs(info, 2) || !RequireSize(info, 1, "level", &level)) return;
    inflate_ = info[0].ToBoolean().Value();
    std::memset(&zs_, 0, sizeof(zs_));
    level_ = current_level_ = static_cast<int>(level);
    const int rc = inflate_ ? inflateInit(&zs_) : deflateInit(&zs_, level_);
    if (rc != Z_OK) {
      ThrowCode(info.Env(), "ERR_ZLIB", std::string("zlib init failed: ") + (zs_.msg ? zs_.msg : std::to_string(rc)));
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

  void End() {
    if (!open_) return;
    if (inflate_) inflateEnd(&zs_);
    else deflateEnd(&zs_);
    open_ = false;
  }

  bool CheckOpen(Napi::Env env) {
    if (open_) return true;
    ThrowCode(env, "ERR_ZLIB", "zlib stream is closed");
    return false;
  }

  /* deflatePages(pieces: Uint8Array[], pageSize, out) -> bytes written to out */
  Napi::Value DeflatePages(const Napi::CallbackInfo& info) {
    size_t ps = 0;
    if (!RequireArgs(info, 3) || !RequireSize(info, 1, "pageSize", &ps) || !RequireBytes(info, 2, "out") || !CheckOpen(info.Env()))
      return info.Env().Undefined();
    if (inflate_ || ps == 0) {
      Napi::TypeError::New(info.Env(), "deflatePages: needs a deflate stream and a page size").ThrowAsJavaScriptException();
      return info.Env().Undefined();
    }
    auto out = info[2].As<Napi::Uint8Array>();
    ByteSpans runs;
    if (!RequireByteList(info, 0, "runs", &runs)) return info.Env().Undefined();
    size_t pages = 0;
    for (const auto& run : runs) {
      if (run.second % ps != 0) {
        Napi::RangeError::New(info.Env(), "deflatePages: each run must be whole pages").ThrowAsJavaScriptException();
        return info.Env().Undefined();
      }
      pages += run.second / ps;
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
          ThrowCode(info.Env(), "ERR_ZLIB", "deflate returned " + std::to_string(rc) + " instead of Z_OK");
          return info.Env().Undefined();
        }
        if (zs_.avail_in != 0 || (flush == Z_SYNC_FLUSH && zs_.avail_out == 0)) {
          ThrowCode(info.Env(), "ERR_ZLIB", "deflate failed to compress all input (output buffer too small)");
          return info.Env().Undefined();
        }
      }
    }
    return Napi::Number::New(info.Env(), static_cast<double>(out.ByteLength() - zs_.avail_out));
  }

  /* inflate(pieces: Uint8Array[], out) -> bytes produced; every input byte must be used, output may not overflow */
  Napi::Value Inflate(const Napi::CallbackInfo& info) {
    if (!RequireArgs(info, 2) || !RequireBytes(info, 1, "out") || !CheckOpen(info.Env())) return info.Env().Undefined();
    if (!inflate_) {
      Napi::TypeError::New(info.Env(), "inflate: needs an inflate stream").ThrowAsJavaScriptException();
      return info.Env().Undefined();
    }
    ByteSpans pieces;
    if (!RequireByteList(info, 0, "pieces", &pieces)) return info.Env().Undefined();
    auto out = info[1].As<Napi::Uint8Array>();
    zs_.next_out = out.Data();
    zs_.avail_out = static_cast<uInt>(out.ByteLength());
    for (const auto& piece : pieces) {
      zs_.next_in = const_cast<Bytef*>(piece.first);
      zs_.avail_in = static_cast<uInt>(piece.second);
      while (zs_.avail_in > 0) {
        const int rc = ::inflate(&zs_, Z_SYNC_FLUSH);
        if (rc == Z_STREAM_END) {
          ThrowCode(info.Env(), "ERR_PAYLOAD_CORRUPT", "zlib stream ended, but QEMU's streams never end");
          return info.Env().Undefined();
        }
        if (rc != Z_OK && rc != Z_BUF_ERROR) {
          ThrowCode(info.Env(), "ERR_PAYLOAD_CORRUPT", std::string("inflate returned ") + std::to_string(rc) + (zs_.msg ? std::string(" (") + zs_.msg + ")" : ""));
          return info.Env().Undefined();
        }
        if (zs_.avail_out == 0 && zs_.avail_in > 0) {
          ThrowCode(info.Env(), "ERR_PAYLOAD_SIZE", "inflate generated more output than the packet's pages");
          return info.Env().Undefined();
        }
        if (rc == Z_BUF_ERROR) break;
      }
    }
    return Napi::Number::New(info.Env(), static_cast<double>(out.ByteLength() - zs_.avail_out));
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
  std::vector<uint8_t> bounce_;
};

}  // namespace

void InitZlibStream(Napi::Env env, Napi::Object exports) {
  exports.Set("ZlibStream", ZlibStream::Define(env));
  exports.Set("zlibVersion", Napi::String::New(env, zlibVersion()));
  exports.Set("zlibCompressBound", Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
    size_t n = 0;
    if (!RequireArgs(info, 1) || !RequireSize(info, 0, "bytes", &n)) return info.Env().Undefined();
    // deflateBound needs a stream; compressBound plus the sync-flush marker is an upper bound.
    return Napi::Number::New(info.Env(), static_cast<double>(compressBound(static_cast<uLong>(n)) + 64));
  }));
}

}  // namespace mfd
