// qatzip's software path: the packet's pages as gzip members of 64 KiB input
// each, every one with QATzip's 24-byte extended header ('QZ', src_sz,
// dest_sz), as QAT hardware emits them (see src/methods/qatzip.ts). One call
// per packet, into the caller's buffer; deflate by ISA-L's igzip when it is
// available (isal.h) and the caller asks for an ISA-L level, else by zlib with one
// reused stream per thread. A member whose pages all look random is stored
// (deflate's stored blocks: any inflater reads them), as the zlib method
// stores such pages.
//
// JS: qzMembers(input: Uint8Array, level: number, isalLevel: number, out: Uint8Array) -> bytes
// written
//   level: zlib's 1..9 (used when isalLevel is 0); isalLevel: 1..3, or 0 for zlib.
//   Throws (code ERR_QZ) when out is too small.
// With ISA-L, the receiver's side too:
//   qzInflate(payload: Uint8Array, out: Uint8Array) -> bytes: every member, each checked (CRC,
//   ISIZE); throws ERR_PAYLOAD_SIZE past out's end, ERR_PAYLOAD_CORRUPT on a bad or truncated
//   member.
#include <napi.h>
#include <zlib.h>

#include <cstring>
#include <memory>

#include "common.h"
#include "isal.h"

namespace mfd {
namespace {

constexpr size_t kChunk = 64 * 1024;  // QATzip's hw_buff_sz: input per member
constexpr size_t kHeader = 24;
constexpr size_t kTrailer = 8;
constexpr size_t kStoredMax = 65535;
constexpr size_t kProbe = 4096;  // pages judged one by one

void Le16(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
}
void Le32(uint8_t* p, uint32_t v) {
  Le16(p, v & 0xffff);
  Le16(p + 2, v >> 16);
}

size_t StoredSize(size_t n) { return n + 5 * (n == 0 ? 1 : (n + kStoredMax - 1) / kStoredMax); }

// Deflate's stored blocks for in[0, n) at out; returns the bytes written.
size_t Store(const uint8_t* in, size_t n, uint8_t* out) {
  uint8_t* o = out;
  size_t at = 0;
  do {
    const size_t len = n - at < kStoredMax ? n - at : kStoredMax;
    *o++ = at + len == n ? 1 : 0;  // BFINAL on the last, BTYPE 00
    Le16(o, static_cast<uint32_t>(len));
    Le16(o + 2, static_cast<uint32_t>(~len & 0xffff));
    memcpy(o + 4, in + at, len);
    o += 4 + len;
    at += len;
  } while (at < n);
  return static_cast<size_t>(o - out);
}

bool AllRandom(const uint8_t* in, size_t n) {
  for (size_t at = 0; at < n; at += kProbe) {
    if (!LooksIncompressible(in + at, n - at < kProbe ? n - at : kProbe)) return false;
  }
  return true;
}

uint32_t Crc32(const uint8_t* in, size_t n) {
#ifdef MFD_HAVE_ISAL
  if (const IsalApi* isal = Isal()) return isal->crc32_gzip_refl(0, in, n);
#endif
  return static_cast<uint32_t>(crc32(0, in, static_cast<uInt>(n)));
}

// Raw deflate of in[0, n) into out[0, cap); 0 when it does not fit.
size_t DeflateZlib(const uint8_t* in, size_t n, int level, uint8_t* out, size_t cap) {
  struct Stream {
    z_stream z{};
    int level = -1;
    ~Stream() {
      if (level >= 0) deflateEnd(&z);
    }
  };
  thread_local Stream s;
  if (s.level != level) {
    if (s.level >= 0) deflateEnd(&s.z);
    s.z = z_stream{};
    s.level = -1;
    if (deflateInit2(&s.z, level, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK) return 0;
    s.level = level;
  } else {
    deflateReset(&s.z);
  }
  s.z.next_in = const_cast<Bytef*>(in);
  s.z.avail_in = static_cast<uInt>(n);
  s.z.next_out = out;
  s.z.avail_out = static_cast<uInt>(cap);
  return deflate(&s.z, Z_FINISH) == Z_STREAM_END ? cap - s.z.avail_out : 0;
}

#ifdef MFD_HAVE_ISAL
size_t DeflateIsal(const uint8_t* in, size_t n, int level, uint8_t* out, size_t cap) {
  thread_local std::unique_ptr<uint8_t[]> buf;
  thread_local int buf_level = -1;
  if (buf_level != level) {
    buf.reset(new uint8_t[IsalLevelBufSize(level)]);
    buf_level = level;
  }
  const IsalApi* isal = Isal();
  isal_zstream s;
  isal->isal_deflate_stateless_init(&s);
  s.level = static_cast<uint32_t>(level);
  s.level_buf = buf.get();
  s.level_buf_size = IsalLevelBufSize(level);
  s.gzip_flag = IGZIP_DEFLATE;
  s.end_of_stream = 1;
  s.flush = NO_FLUSH;
  s.next_in = const_cast<uint8_t*>(in);
  s.avail_in = static_cast<uint32_t>(n);
  s.next_out = out;
  s.avail_out = static_cast<uint32_t>(cap);
  return isal->isal_deflate_stateless(&s) == COMP_OK && s.avail_in == 0 ? cap - s.avail_out : 0;
}
#endif

/* qzMembers(input, level, isalLevel, out) -> bytes written */
Napi::Value JS_qzMembers(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  size_t level, isal_level;
  if (!RequireArgs(info, 4) || !RequireBytes(info, 0, "input") ||
      !RequireSize(info, 1, "level", &level) || !RequireSize(info, 2, "isalLevel", &isal_level) ||
      !RequireBytes(info, 3, "out")) {
    return env.Undefined();
  }
  if (level < 1 || level > 9 || isal_level > 3) {
    Napi::RangeError::New(env, "qzMembers: level 1..9, isalLevel 0..3")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (isal_level != 0 && Isal() == nullptr) {
    ThrowCode(env, "ERR_QZ", IsalUnavailable());
    return env.Undefined();
  }
  auto input = info[0].As<Napi::Uint8Array>();
  auto out_arr = info[3].As<Napi::Uint8Array>();
  const uint8_t* in = input.Data();
  const size_t n = input.ByteLength();
  uint8_t* out = out_arr.Data();
  const size_t cap = out_arr.ByteLength();
  size_t at = 0;
  for (size_t from = 0; from < n; from += kChunk) {
    const size_t len = n - from < kChunk ? n - from : kChunk;
    const uint8_t* chunk = in + from;
    const size_t stored = StoredSize(len);
    if (cap - at < kHeader + stored + kTrailer) {
      ThrowCode(env, "ERR_QZ", "qzMembers: output buffer too small");
      return env.Undefined();
    }
    uint8_t* m = out + at;
    uint8_t* body = m + kHeader;
    size_t body_len = 0;
    if (!AllRandom(chunk, len)) {
      // Compressed only when smaller than stored; the room left for it is the stored size.
#ifdef MFD_HAVE_ISAL
      if (isal_level != 0)
        body_len = DeflateIsal(chunk, len, static_cast<int>(isal_level), body, stored);
#endif
      if (isal_level == 0)
        body_len = DeflateZlib(chunk, len, static_cast<int>(level), body, stored);
    }
    if (body_len == 0) body_len = Store(chunk, len, body);
    static const uint8_t kGzip[] = {0x1f, 0x8b, 8, 0x04, 0,
                                    0,    0,    0, 0,    0xff};  // FEXTRA, MTIME 0, XFL 0, OS 255
    memcpy(m, kGzip, sizeof kGzip);
    Le16(m + 10, 12);  // XLEN
    m[12] = 'Q';
    m[13] = 'Z';
    Le16(m + 14, 8);                                // LEN
    Le32(m + 16, static_cast<uint32_t>(len));       // src_sz
    Le32(m + 20, static_cast<uint32_t>(body_len));  // dest_sz
    Le32(body + body_len, Crc32(chunk, len));
    Le32(body + body_len + 4, static_cast<uint32_t>(len));  // ISIZE
    at += kHeader + body_len + kTrailer;
  }
  return Napi::Number::New(env, static_cast<double>(at));
}

#ifdef MFD_HAVE_ISAL
/* qzInflate(payload, out) -> bytes: every gzip member of the payload (QZ-headed or plain), by ISA-L
 */
Napi::Value JS_qzInflate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!RequireArgs(info, 2) || !RequireBytes(info, 0, "payload") || !RequireBytes(info, 1, "out"))
    return env.Undefined();
  auto payload = info[0].As<Napi::Uint8Array>();
  auto out_arr = info[1].As<Napi::Uint8Array>();
  const uint8_t* in = payload.Data();
  const size_t n = payload.ByteLength();
  uint8_t* out = out_arr.Data();
  const size_t cap = out_arr.ByteLength();
  size_t at = 0, produced = 0;
  thread_local std::unique_ptr<inflate_state> s(new inflate_state);  // large; reset per member
  while (at < n) {
    Isal()->isal_inflate_init(s.get());
    s->crc_flag = ISAL_GZIP;
    s->next_in = const_cast<uint8_t*>(in + at);
    s->avail_in = static_cast<uint32_t>(n - at);
    s->next_out = out + produced;
    s->avail_out = static_cast<uint32_t>(cap - produced);
    const int rc = Isal()->isal_inflate(s.get());
    if (rc < 0) {
      ThrowCode(env, "ERR_PAYLOAD_CORRUPT",
                "gzip member at byte " + std::to_string(at) + ": isal_inflate returned " +
                    std::to_string(rc) +
                    (rc == ISAL_INCORRECT_CHECKSUM ? " (incorrect checksum)"
                     : rc == ISAL_INVALID_WRAPPER  ? " (invalid gzip header)"
                                                   : ""));
      return env.Undefined();
    }
    produced = cap - s->avail_out;
    if (s->block_state != ISAL_BLOCK_FINISH) {
      if (s->avail_in == 0) {  // all input read, the member unfinished
        ThrowCode(env, "ERR_PAYLOAD_CORRUPT",
                  "gzip member at byte " + std::to_string(at) + " is truncated");
      } else {
        ThrowCode(env, "ERR_PAYLOAD_SIZE",
                  "the payload decodes to more than " + std::to_string(cap) + " bytes");
      }
      return env.Undefined();
    }
    at = n - s->avail_in;
  }
  return Napi::Number::New(env, static_cast<double>(produced));
}
#endif

}  // namespace

void InitQzMembers(Napi::Env env, Napi::Object exports) {
  exports.Set("qzMembers", Napi::Function::New(env, JS_qzMembers, "qzMembers"));
#ifdef MFD_HAVE_ISAL
  if (Isal() != nullptr)
    exports.Set("qzInflate", Napi::Function::New(env, JS_qzInflate, "qzInflate"));
#endif
}

}  // namespace mfd
