// Module init: exports the natives. Each takes caller-owned buffers and does
// one packet's worth of work per call.
#include <napi.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "common.h"
#include "crc32c.h"
#include "file_io.h"
#include "packet_io.h"
#include "zero_page.h"

namespace mfd {
void InitZlibStream(Napi::Env env, Napi::Object exports);
void InitQplCodec(Napi::Env env, Napi::Object exports);
void InitDsa(Napi::Env env, Napi::Object exports);
void InitQatzip(Napi::Env env, Napi::Object exports);
void InitDelayLine(Napi::Env env, Napi::Object exports);
void InitSocketChannel(Napi::Env env, Napi::Object exports);
void InitQzMembers(Napi::Env env, Napi::Object exports);
void InitDelta(Napi::Env env, Napi::Object exports);
void InitLz4Block(Napi::Env env, Napi::Object exports);
void InitZstdStream(Napi::Env env, Napi::Object exports);
void InitTestNatives(Napi::Env env, Napi::Object exports);
namespace {

/* scanZeroPages(pages, pageSize, pageCount, out) -> number of zero pages */
Napi::Value JS_scanZeroPages(const Napi::CallbackInfo& info) {
  size_t page_size, count;
  if (!RequireArgs(info, 4) || !RequireBytes(info, 0, "pages") ||
      !RequireSize(info, 1, "pageSize", &page_size) || !RequireSize(info, 2, "pageCount", &count) ||
      !RequireBytes(info, 3, "out")) {
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
  const uint8_t* holes = nullptr;
  int64_t Run() { return AnalysePagesGuarded(pages, page_size, count, zero_out, crc_out, holes); }
};

// Parses (pages, pageSize, pageCount, zeroOut|null, crcOut|null, holes|null);
// false after throwing when an argument is wrong or a buffer is too small.
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
    if (!RequireBytes(info, 3, "zeroOut", job->count)) return false;
    job->zero_out = info[3].As<Napi::Uint8Array>().Data();
  }
  if (!info[4].IsNull() && !info[4].IsUndefined()) {
    if (!RequireUint32Array(info, 4, "crcOut", job->count)) return false;
    job->crc_out = info[4].As<Napi::Uint32Array>().Data();
  }
  if (info.Length() > 5 && !info[5].IsNull() && !info[5].IsUndefined()) {
    if (!RequireBytes(info, 5, "holes", job->count)) return false;
    job->holes = info[5].As<Napi::Uint8Array>().Data();
  }
  return true;
}

/* analysePagesSync(pages, pageSize, pageCount, zeroOut|null, crcOut|null[, holes|null]) -> zero
 * pages */
Napi::Value JS_analysePagesSync(const Napi::CallbackInfo& info) {
  PagesJob job;
  if (!ParsePagesJob(info, &job)) return info.Env().Undefined();
  return Napi::Number::New(info.Env(), static_cast<double>(job.Run()));
}

// Runs a job with Run() -> int64_t on the libuv pool; the JS buffers passed to
// the call stay pinned until the callback has run.
template <typename Job>
class JobWorker : public Napi::AsyncWorker {
 public:
  JobWorker(const Napi::CallbackInfo& info, size_t nargs, const Job& job, Napi::Function cb,
            const char* name)
      : Napi::AsyncWorker(cb, name), job_(job) {
    for (size_t i = 0; i < nargs; i++) {
      if (info[i].IsObject()) pinned_.push_back(Napi::Persistent(info[i].As<Napi::Object>()));
    }
  }
  void Pin(Napi::Object o) { pinned_.push_back(Napi::Persistent(o)); }
  void Execute() override { result_ = job_.Run(); }
  void OnOK() override {
    Callback().Call(
        {Env().Null(), Napi::Number::New(Env(), static_cast<double>(result_)), Extra()});
  }

 private:
  Napi::Value Extra();
  Job job_;
  int64_t result_ = 0;
  std::vector<Napi::ObjectReference> pinned_;
};

template <>
Napi::Value JobWorker<PagesJob>::Extra() {
  return Env().Undefined();
}

// A live file mapping handed to JS as an external ArrayBuffer. unmapRange()
// unmaps at once and detaches the buffer; otherwise the finalizer unmaps.
// Compute workers map windows too, so the registry is shared between threads
// and locked.
struct Mapping {
  void* addr;
  size_t length;
  bool unmapped;
};
std::mutex g_mappings_lock;
std::unordered_map<void*, Mapping*> g_mappings;  // live mappings, by address

void FinalizeMapping(Napi::Env, void*, Mapping* m) {
  {
    std::lock_guard<std::mutex> lock(g_mappings_lock);
    if (!m->unmapped) {
      g_mappings.erase(m->addr);
      munmap(m->addr, m->length);
    }
  }
  delete m;
}

/* unmapRange(arrayBuffer): detach it and unmap its pages now */
Napi::Value JS_unmapRange(const Napi::CallbackInfo& info) {
  if (!RequireArgs(info, 1)) return info.Env().Undefined();
  if (!info[0].IsArrayBuffer()) {
    Napi::TypeError::New(info.Env(), "Expected an ArrayBuffer").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  auto ab = info[0].As<Napi::ArrayBuffer>();
  if (ab.IsDetached()) return info.Env().Undefined();
  {
    std::lock_guard<std::mutex> lock(g_mappings_lock);
    auto it = g_mappings.find(ab.Data());
    if (it == g_mappings.end()) {
      Napi::TypeError::New(info.Env(), "unmapRange: not a mapRange buffer")
          .ThrowAsJavaScriptException();
      return info.Env().Undefined();
    }
    // Everything about the mapping is settled before Detach(), which may run
    // the finalizer (and free the Mapping) there and then.
    Mapping* m = it->second;
    g_mappings.erase(it);
    m->unmapped = true;
    munmap(m->addr, m->length);
  }
  ab.Detach();
  return info.Env().Undefined();
}

template <>
Napi::Value JobWorker<WritePacketJob>::Extra() {
  return Napi::Number::New(Env(), static_cast<double>(job_.bad_page));
}

// Parses writePacket's first nine arguments (fd, pieces, pageSize, offsets, normal, zero,
// blockSize, writeZeros, crcOut) into `job`, the pieces' values into `keep`; false after throwing.
bool ParseWritePacket(const Napi::CallbackInfo& info, WritePacketJob* job,
                      std::vector<Napi::Value>* keep) {
  size_t fd, block_size;
  if (!RequireArgs(info, 9) || !RequireSize(info, 0, "fd", &fd) ||
      !RequireSize(info, 2, "pageSize", &job->page_size) ||
      !RequireSize(info, 4, "normal", &job->normal) || !RequireSize(info, 5, "zero", &job->zero) ||
      !RequireSize(info, 6, "blockSize", &block_size) ||
      !RequireUint32Array(info, 8, "crcOut", job->normal)) {
    return false;
  }
  if (!RequireByteList(info, 1, "pieces", &job->pages, keep)) return false;
  size_t total = 0;
  for (const auto& piece : job->pages) total += piece.second;
  if (!info[3].IsTypedArray() ||
      info[3].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array) {
    Napi::TypeError::New(info.Env(), "Expected a Float64Array for offsets")
        .ThrowAsJavaScriptException();
    return false;
  }
  auto offsets = info[3].As<Napi::Float64Array>();
  if (job->page_size == 0 || total != job->normal * job->page_size ||
      job->normal + job->zero > offsets.ElementLength()) {
    Napi::RangeError::New(info.Env(),
                          "writePacket: pieces must hold exactly normal pages, offsets all pages")
        .ThrowAsJavaScriptException();
    return false;
  }
  // Offsets were range-checked in TS; check again here so no write can leave the block.
  for (size_t i = 0; i < job->normal + job->zero; i++) {
    const double o = offsets.Data()[i];
    if (!(o >= 0) || o >= static_cast<double>(block_size)) {
      Napi::RangeError::New(info.Env(), "writePacket: offset outside the block")
          .ThrowAsJavaScriptException();
      return false;
    }
  }
  job->fd = static_cast<int>(fd);
  job->offsets = offsets.Data();
  job->block_size = static_cast<int64_t>(block_size);
  job->write_zeros = info[7].ToBoolean().Value();
  job->crc_out = info[8].As<Napi::Uint32Array>().Data();
  return true;
}

/* writePacket(fd, pieces: Uint8Array[], pageSize, offsets, normal, zero, blockSize, writeZeros,
 * crcOut, cb(err, code, badPage)) */
Napi::Value JS_writePacket(const Napi::CallbackInfo& info) {
  WritePacketJob job{};
  std::vector<Napi::Value> keep;
  if (!RequireArgs(info, 10) || !RequireFunction(info, 9) || !ParseWritePacket(info, &job, &keep))
    return info.Env().Undefined();
  auto* w =
      new JobWorker<WritePacketJob>(info, 9, job, info[9].As<Napi::Function>(), "mfd.writePacket");
  // The pieces array is pinned above; pin each piece too (the array could be changed).
  for (auto& v : keep) w->Pin(v.As<Napi::Object>());
  w->Queue();
  return info.Env().Undefined();
}

/* writePacketSync(fd, pieces, pageSize, offsets, normal, zero, blockSize, writeZeros, crcOut)
 * -> [code, badPage]: writePacket on the calling thread (a compute worker, off the event loop) */
Napi::Value JS_writePacketSync(const Napi::CallbackInfo& info) {
  WritePacketJob job{};
  std::vector<Napi::Value> keep;
  if (!ParseWritePacket(info, &job, &keep)) return info.Env().Undefined();
  const int64_t code = job.Run();
  Napi::Array r = Napi::Array::New(info.Env(), 2);
  r.Set(0u, Napi::Number::New(info.Env(), static_cast<double>(code)));
  r.Set(1u, Napi::Number::New(info.Env(), static_cast<double>(job.bad_page)));
  return r;
}

/* mapRange(fd, position, length) -> ArrayBuffer over a read-only shared mapping of the file */
Napi::Value JS_mapRange(const Napi::CallbackInfo& info) {
  size_t fd, pos, len;
  if (!RequireArgs(info, 3) || !RequireSize(info, 0, "fd", &fd) ||
      !RequireSize(info, 1, "position", &pos) || !RequireSize(info, 2, "length", &len)) {
    return info.Env().Undefined();
  }
  const size_t os_page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  if (len == 0 || pos % os_page != 0) {
    Napi::RangeError::New(info.Env(), "mapRange: position must be page aligned and length > 0")
        .ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  void* p =
      mmap(nullptr, len, PROT_READ, MAP_SHARED, static_cast<int>(fd), static_cast<off_t>(pos));
  if (p == MAP_FAILED) {
    Napi::Error e = Napi::Error::New(info.Env(), std::string("mmap: ") + strerror(errno));
    e.Set("errno", Napi::Number::New(info.Env(), errno));
    e.ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  madvise(p, len, MADV_SEQUENTIAL);
  auto* m = new Mapping{p, len, false};
  {
    std::lock_guard<std::mutex> lock(g_mappings_lock);
    g_mappings[p] = m;
  }
  auto buf = Napi::ArrayBuffer::New(info.Env(), p, len, FinalizeMapping, m);
  if (buf.IsEmpty()) {  // not made (a worker being terminated): its finalizer never runs
    FinalizeMapping(info.Env(), nullptr, m);
    return info.Env().Undefined();
  }
  return buf;
}

/* analysePages(pages, pageSize, pageCount, zeroOut|null, crcOut|null, holes|null, cb(err,
 * zerosOrCode)) on the libuv pool */
Napi::Value JS_analysePages(const Napi::CallbackInfo& info) {
  PagesJob job;
  if (!RequireArgs(info, 7) || !ParsePagesJob(info, &job) || !RequireFunction(info, 6))
    return info.Env().Undefined();
  (new JobWorker<PagesJob>(info, 6, job, info[6].As<Napi::Function>(), "mfd.analysePages"))
      ->Queue();
  return info.Env().Undefined();
}

/* dataExtents(fd, position, length, until?) -> Float64Array of [start, end) pairs: where the file
   has data. `until` (a Float64Array of 1, optional) gets where the last extent really ends: past
   position + length when the data goes on (SEEK_HOLE's answer, unclipped); at or before it when
   the range ends in a hole; 0 without data. */
Napi::Value JS_dataExtents(const Napi::CallbackInfo& info) {
  size_t fd, pos, len;
  if (!RequireArgs(info, 3) || !RequireSize(info, 0, "fd", &fd) ||
      !RequireSize(info, 1, "position", &pos) || !RequireSize(info, 2, "length", &len)) {
    return info.Env().Undefined();
  }
  Napi::Float64Array until;
  if (info.Length() > 3 && !info[3].IsUndefined()) {
    if (!info[3].IsTypedArray() ||
        info[3].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array ||
        info[3].As<Napi::Float64Array>().ElementLength() < 1) {
      Napi::TypeError::New(info.Env(), "until must be a Float64Array of at least 1 element")
          .ThrowAsJavaScriptException();
      return info.Env().Undefined();
    }
    until = info[3].As<Napi::Float64Array>();
  }
  std::vector<int64_t> extents;
  int64_t data_until = 0;
  const int r = DataExtents(static_cast<int>(fd), static_cast<int64_t>(pos),
                            static_cast<int64_t>(len), &extents, &data_until);
  if (!until.IsEmpty()) until[0] = static_cast<double>(data_until);
  if (r < 0) {
    Napi::Error e = Napi::Error::New(info.Env(), std::string("lseek: ") + strerror(-r));
    e.Set("errno", Napi::Number::New(info.Env(), -r));
    e.ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  auto out = Napi::Float64Array::New(info.Env(), extents.size());
  // Not made when a worker is terminated in this call: nothing to fill.
  if (out.IsEmpty()) return info.Env().Undefined();
  for (size_t i = 0; i < extents.size(); i++) out[i] = static_cast<double>(extents[i]);
  return out;
}

/* probeImageAccess(fd, extents: Float64Array of [start, end) pairs) -> Float64Array [code, mapNs,
   readNs]: this thread's CPU time to touch the extents' whole pages through fresh mappings and to
   pread them (ProbeImageAccess); code 0, or negative (-errno, ESHORTREAD) with no times. */
Napi::Value JS_probeImageAccess(const Napi::CallbackInfo& info) {
  size_t fd;
  if (!RequireArgs(info, 2) || !RequireSize(info, 0, "fd", &fd)) return info.Env().Undefined();
  if (!info[1].IsTypedArray() ||
      info[1].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array) {
    Napi::TypeError::New(info.Env(), "extents must be a Float64Array").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  auto ext = info[1].As<Napi::Float64Array>();
  std::vector<int64_t> extents(ext.ElementLength());
  for (size_t i = 0; i < extents.size(); i++) extents[i] = static_cast<int64_t>(ext[i]);
  int64_t map_ns = 0, read_ns = 0;
  const int r = ProbeImageAccess(static_cast<int>(fd), extents, &map_ns, &read_ns);
  auto out = Napi::Float64Array::New(info.Env(), 3);
  if (out.IsEmpty()) return info.Env().Undefined();
  out[0] = r;
  out[1] = r < 0 ? 0 : static_cast<double>(map_ns);
  out[2] = r < 0 ? 0 : static_cast<double>(read_ns);
  return out;
}

/* crc32c(bytes, seed = 0) -> number; a seed continues an earlier CRC (crc32c(b, crc32c(a)) =
   crc32c(a + b)); crc32cBuiltin(bytes, seed = 0): the same by the addon's own code, whatever crc32c
   runs */
template <uint32_t (*Extend)(uint32_t, const uint8_t*, size_t)>
Napi::Value JS_crc32c(const Napi::CallbackInfo& info) {
  if (!RequireArgs(info, 1) || !RequireBytes(info, 0, "bytes")) return info.Env().Undefined();
  size_t seed = 0;
  if (info.Length() > 1 && !info[1].IsUndefined() &&
      (!RequireSize(info, 1, "seed", &seed) || seed > 0xFFFFFFFFu)) {
    if (!info.Env().IsExceptionPending())
      Napi::RangeError::New(info.Env(), "crc32c: seed must be a u32").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  auto b = info[0].As<Napi::Uint8Array>();
  return Napi::Number::New(info.Env(),
                           Extend(static_cast<uint32_t>(seed), b.Data(), b.ByteLength()));
}

/* copyCrc32c(dst, src, crc) -> crc continued over src, after copying src to the start of dst (in
 * blocks, so each is checksummed while hot) */
Napi::Value JS_copyCrc32c(const Napi::CallbackInfo& info) {
  size_t seed;
  if (!RequireArgs(info, 3) || !RequireBytes(info, 0, "dst") || !RequireBytes(info, 1, "src") ||
      !RequireSize(info, 2, "crc", &seed)) {
    return info.Env().Undefined();
  }
  auto dst = info[0].As<Napi::Uint8Array>();
  auto src = info[1].As<Napi::Uint8Array>();
  if (dst.ByteLength() < src.ByteLength() || seed > 0xFFFFFFFFu) {
    Napi::RangeError::New(info.Env(), "copyCrc32c: dst shorter than src, or crc not a u32")
        .ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  uint32_t crc = static_cast<uint32_t>(seed);
  constexpr size_t kBlock = 16384;
  for (size_t at = 0; at < src.ByteLength(); at += kBlock) {
    const size_t n = std::min(kBlock, src.ByteLength() - at);
    std::memmove(dst.Data() + at, src.Data() + at, n);
    crc = Crc32cExtend(crc, dst.Data() + at, n);
  }
  return Napi::Number::New(info.Env(), crc);
}

/* alignedBuffer(size) -> ArrayBuffer of `size` zero bytes at a 4096-byte aligned address (for
 * O_DIRECT) */
Napi::Value JS_alignedBuffer(const Napi::CallbackInfo& info) {
  size_t size;
  if (!RequireArgs(info, 1) || !RequireSize(info, 0, "size", &size)) return info.Env().Undefined();
  if (size == 0 || size % kDirectAlign != 0 || size > (size_t{1} << 30)) {
    Napi::RangeError::New(info.Env(),
                          "alignedBuffer: size must be a positive multiple of 4096, at most 1 GiB")
        .ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  void* p = nullptr;
  if (posix_memalign(&p, kDirectAlign, size) != 0) {
    Napi::Error::New(info.Env(), "alignedBuffer: out of memory").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  std::memset(p, 0, size);
  auto buf =
      Napi::ArrayBuffer::New(info.Env(), p, size, [](Napi::Env, void* data) { std::free(data); });
  // Not made (a worker being terminated): its finalizer never runs.
  if (buf.IsEmpty()) std::free(p);
  return buf;
}

template <>
Napi::Value JobWorker<PositionalIoJob>::Extra() {
  auto a = Napi::Array::New(Env(), 3);
  a.Set(0u, Napi::Number::New(Env(), static_cast<double>(job_.fail_at)));
  a.Set(1u, Napi::Number::New(Env(), static_cast<double>(job_.fail_asked)));
  a.Set(2u, Napi::Number::New(Env(), static_cast<double>(job_.fail_moved)));
  return a;
}

/*
 * positionalIo(fd, mode, pieces: Uint8Array[], positions: Float64Array, cb(err, code, [at, asked,
 * moved])) mode 0 reads, 1 writes, 2 writes and starts writeback of what it wrote (sync_file_range,
 * not waited for). Writes (or reads) pieces[i] at file position positions[i]; pieces that follow on
 * from each other share one pwritev/preadv. A short write is an error (kShortWrite), never retried;
 * so is a read past the end of the file (kShortRead). On an O_DIRECT descriptor, pieces not
 * 4096-aligned in memory go through an aligned bounce buffer.
 */
Napi::Value JS_positionalIo(const Napi::CallbackInfo& info) {
  PositionalIoJob job;
  size_t fd;
  if (!RequireArgs(info, 5) || !RequireSize(info, 0, "fd", &fd) || !RequireFunction(info, 4))
    return info.Env().Undefined();
  std::vector<Napi::Value> keep;
  if (!RequireByteList(info, 2, "pieces", &job.pieces, &keep)) return info.Env().Undefined();
  if (!info[3].IsTypedArray() ||
      info[3].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array) {
    Napi::TypeError::New(info.Env(), "Expected a Float64Array for positions")
        .ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  auto positions = info[3].As<Napi::Float64Array>();
  if (positions.ElementLength() != job.pieces.size()) {
    Napi::RangeError::New(info.Env(), "positionalIo: one position per piece")
        .ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  for (size_t i = 0; i < job.pieces.size(); i++) {
    const double p = positions.Data()[i];
    if (!(p >= 0) || p > 9007199254740991.0 || p != static_cast<double>(static_cast<int64_t>(p))) {
      Napi::RangeError::New(info.Env(), "positionalIo: positions must be non-negative integers")
          .ThrowAsJavaScriptException();
      return info.Env().Undefined();
    }
    job.positions.push_back(static_cast<int64_t>(p));
  }
  job.fd = static_cast<int>(fd);
  size_t mode;
  if (!RequireSize(info, 1, "mode", &mode)) return info.Env().Undefined();
  job.write = mode >= 1;
  job.start_writeback = mode == 2;
  auto* w = new JobWorker<PositionalIoJob>(info, 4, job, info[4].As<Napi::Function>(),
                                           "mfd.positionalIo");
  for (auto& v : keep) w->Pin(v.As<Napi::Object>());
  w->Queue();
  return info.Env().Undefined();
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
  // The result codes beyond -errno (common.h), so that TypeScript need not copy their values.
  Napi::Object codes = Napi::Object::New(env);
  for (const ResultCode& c : kResultCodes)
    codes.Set(c.name, Napi::Number::New(env, static_cast<double>(c.value)));
  codes.Freeze();
  exports.Set("resultCodes", codes);
  exports.Set("scanZeroPages", Napi::Function::New(env, JS_scanZeroPages, "scanZeroPages"));
  exports.Set("analysePages", Napi::Function::New(env, JS_analysePages, "analysePages"));
  exports.Set("analysePagesSync",
              Napi::Function::New(env, JS_analysePagesSync, "analysePagesSync"));
  exports.Set("mapRange", Napi::Function::New(env, JS_mapRange, "mapRange"));
  exports.Set("dataExtents", Napi::Function::New(env, JS_dataExtents, "dataExtents"));
  exports.Set("probeImageAccess",
              Napi::Function::New(env, JS_probeImageAccess, "probeImageAccess"));
  exports.Set("unmapRange", Napi::Function::New(env, JS_unmapRange, "unmapRange"));
  exports.Set("writePacket", Napi::Function::New(env, JS_writePacket, "writePacket"));
  exports.Set("writePacketSync", Napi::Function::New(env, JS_writePacketSync, "writePacketSync"));
  exports.Set("crc32c", Napi::Function::New(env, JS_crc32c<Crc32cExtend>, "crc32c"));
  exports.Set("crc32cBuiltin",
              Napi::Function::New(env, JS_crc32c<Crc32cBuiltinExtend>, "crc32cBuiltin"));
  exports.Set("crc32cEngine", Napi::String::New(env, Crc32cEngine()));
  exports.Set("copyCrc32c", Napi::Function::New(env, JS_copyCrc32c, "copyCrc32c"));
  exports.Set("alignedBuffer", Napi::Function::New(env, JS_alignedBuffer, "alignedBuffer"));
  exports.Set("positionalIo", Napi::Function::New(env, JS_positionalIo, "positionalIo"));
  exports.Set("zeroPageAccels", Napi::Function::New(env, JS_zeroPageAccels, "zeroPageAccels"));
  exports.Set("zeroPageAccel", Napi::Function::New(env, JS_zeroPageAccel, "zeroPageAccel"));
  exports.Set("_setZeroPageAccel",
              Napi::Function::New(env, JS_setZeroPageAccel, "_setZeroPageAccel"));
  exports.Set("cpuFeatures", Napi::Function::New(env, JS_cpuFeatures, "cpuFeatures"));
  InitZlibStream(env, exports);
  InitQplCodec(env, exports);
  InitDsa(env, exports);
  InitQatzip(env, exports);
  InitDelayLine(env, exports);
  InitSocketChannel(env, exports);
  InitQzMembers(env, exports);
  InitDelta(env, exports);
  InitLz4Block(env, exports);
  InitZstdStream(env, exports);
  InitTestNatives(env, exports);
  return exports;
}

}  // namespace
}  // namespace mfd

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  return mfd::Init(env, exports);
}

NODE_API_MODULE(mfd, InitModule)
