// Page fingerprints for delta transfer (src/delta/): XXH3-128 of every page,
// from Debian's libxxhash-dev (its header, inlined: XXH_INLINE_ALL, so the
// addon links nothing more). Without that header at build time the
// functions throw ERR_DELTA_UNAVAILABLE and deltaAvailable is false. On x86-64 the hash runs
// XXH3's AVX-512, AVX2 or SSE2 kernel, the best the CPU has (the same hash; deltaHashKernel says
// which, deltaHashKernels those available; MFD_DELTA_HASH=sse2|avx2|avx512 picks one).
//
// A fingerprint entry is 16 bytes: the top 96 bits of the page's XXH3-128
// (high 64 bits, then the top 32 of the low half) and a u32 page index, each
// field little-endian. Tables of entries are sorted by (key, index).
//
//   deltaFingerprint(pages, pageSize, count, firstIndex, out, crcOut|null, holes|null, cb(err, n)):
//     the entries of the non-zero pages among `count`, in page order, into
//     out (16 x count bytes); n entries; with crcOut, every page's CRC-32C
//     too (the digest's, so the pages need not be read again). `holes` (a
//     flag a page) marks pages known to be zero (holes of a sparse file): they
//     are never touched, so a mapping of a hole is never faulted in (on tmpfs
//     that would allocate a page). `pages` may be a file mapping (mapRange):
//     if the file shrinks under it (SIGBUS), n is ESHORTREAD (negative), not
//     a crash. Off the event loop, the batch split across the machine's cores.
//   deltaFingerprintFile(fd, position, length, size, pageSize, firstIndex, out, crcOut|null,
//                        span: Float64Array(2), cb(err, n)):
//     deltaFingerprint of the `length` bytes (whole pages) of file `fd` at `position`, in one call:
//     off the event loop it finds the range's holes (lseek SEEK_DATA/SEEK_HOLE; `span`, [start,
//     end) of the file known to be all data, is kept across calls, so a file with no holes is not
//     walked again for each range), maps the range read-only, populates the page tables of its
//     data (MADV_POPULATE_READ: no fault per 16 pages), hashes it on all cores under the SIGBUS
//     guard and unmaps it. Pages in holes are never touched. n is ESHORTREAD when the file is
//     now shorter than `size` or shrinks under the mapping.
//   deltaSort(entries, count, cb(err)): sorts entries[0..count) in place, off the event loop.
//   deltaMatch(table, tableCount, entries, count, out: Uint32Array) -> matches:
//     out[i] = the index of the table entry whose key equals entry i's, or 0xffffffff.
//   deltaAlloc(bytes) -> ArrayBuffer: zero-filled memory of its own mapping (mmap), unmapped when
//     the buffer goes (deltaRelease, or the collector). A delta migration's tables live there, not
//     in malloc's heap: freeing tens of MiB of malloc'd blocks raises glibc's mmap and trim
//     thresholds (up to 32 and 64 MiB), and the transfer's allocations after it then keep that
//     much more memory resident.
//   deltaRelease(arrayBuffer) -> bool: detaches the buffer, so its memory is freed now (the
//     last reference to its backing store goes), not when the garbage collector gets to it;
//     every view of it then has length 0. False when the buffer cannot be detached.
#include <napi.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "common.h"
#include "crc32c.h"
#include "packet_io.h"
#include "zero_page.h"

#ifdef MFD_HAVE_XXHASH
#define XXH_INLINE_ALL
#if defined(__x86_64__) && defined(__GNUC__)
// XXH3's AVX2 and AVX-512 kernels compiled beside its default one (SSE2 on x86-64), each under its
// target attribute, for a choice at load time by what the CPU has: how xxHash's own
// xxh_x86dispatch.c builds them (Debian ships only its header). XXH_X86DISPATCH aligns the
// accumulators for AVX-512.
#include <immintrin.h>
#define XXH_X86DISPATCH
#define XXH_DISPATCH_AVX2 1
#define XXH_DISPATCH_AVX512 1
#define XXH_TARGET_AVX2 __attribute__((__target__("avx2")))
#define XXH_TARGET_AVX512 __attribute__((__target__("avx512f")))
#define MFD_XXH3_DISPATCH 1
#endif
#include <xxhash.h>
#endif

namespace mfd {
namespace {

constexpr size_t kEntry = 16;
// Pages per thread at least: below this a batch is hashed by one thread.
constexpr size_t kPagesPerThread = 256;
// Pages of a file mapping a thread populates, hashes and drops at a time (deltaFingerprintFile).
constexpr size_t kPopulateStep = 1024;

struct Entry {
  uint64_t hi;
  uint32_t mid;
  uint32_t idx;
};
static_assert(sizeof(Entry) == kEntry, "a fingerprint entry is 16 bytes");

inline uint64_t Le64(uint64_t v) {
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  return __builtin_bswap64(v);
#else
  return v;
#endif
}
inline uint32_t Le32(uint32_t v) {
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  return __builtin_bswap32(v);
#else
  return v;
#endif
}

// Entries as they lie in memory (little-endian fields) to host order and back.
inline Entry Load(const uint8_t* p) {
  Entry e;
  std::memcpy(&e, p, kEntry);
  return {Le64(e.hi), Le32(e.mid), Le32(e.idx)};
}
inline void Store(uint8_t* p, const Entry& e) {
  const Entry le{Le64(e.hi), Le32(e.mid), Le32(e.idx)};
  std::memcpy(p, &le, kEntry);
}
inline bool KeyLess(const Entry& a, const Entry& b) {
  return a.hi != b.hi ? a.hi < b.hi : a.mid < b.mid;
}
inline bool Less(const Entry& a, const Entry& b) {
  if (a.hi != b.hi) return a.hi < b.hi;
  if (a.mid != b.mid) return a.mid < b.mid;
  return a.idx < b.idx;
}

bool Unavailable(Napi::Env env) {
#ifdef MFD_HAVE_XXHASH
  (void)env;
  return false;
#else
  ThrowCode(env, "ERR_DELTA_UNAVAILABLE",
            "delta transfer is not available: this addon was built without xxhash.h (Debian: "
            "libxxhash-dev), rebuild it where that is installed");
  return true;
#endif
}

#ifdef MFD_HAVE_XXHASH
// XXH3-128 of one page by one of the kernels: the same hash whichever runs.
using Hash128Fn = XXH128_hash_t (*)(const uint8_t*, size_t);
XXH128_hash_t Hash128Default(const uint8_t* p, size_t n) { return XXH3_128bits(p, n); }
#ifdef MFD_XXH3_DISPATCH
// GCC 12 warns of the undefined vector that AVX-512 intrinsics start from (_mm512_undefined_epi32).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// What XXH3_128bits does for inputs above XXH3_MIDSIZE_MAX (a page), with the given kernels.
__attribute__((__target__("avx2"), noinline)) XXH128_hash_t Hash128Avx2(const uint8_t* p,
                                                                        size_t n) {
  if (n <= XXH3_MIDSIZE_MAX) return XXH3_128bits(p, n);
  return XXH3_hashLong_128b_internal(p, n, XXH3_kSecret, sizeof(XXH3_kSecret),
                                     XXH3_accumulate_512_avx2, XXH3_scrambleAcc_avx2);
}
__attribute__((__target__("avx512f"), noinline)) XXH128_hash_t Hash128Avx512(const uint8_t* p,
                                                                             size_t n) {
  if (n <= XXH3_MIDSIZE_MAX) return XXH3_128bits(p, n);
  return XXH3_hashLong_128b_internal(p, n, XXH3_kSecret, sizeof(XXH3_kSecret),
                                     XXH3_accumulate_512_avx512, XXH3_scrambleAcc_avx512);
}
#pragma GCC diagnostic pop
#endif

struct HashKernel {
  const char* name;
  Hash128Fn fn;
};
struct HashChoice {
  // The kernels this CPU runs, best last; each checked against the default.
  std::vector<HashKernel> kernels;
  Hash128Fn fn = Hash128Default;
  // Its name ("avx512"), and why not another where MFD_DELTA_HASH asked for one this CPU lacks.
  std::string name;
};

// Picks the kernel, once a process (every worker thread that loads the addon shares it): the best
// this CPU has whose hashes equal the default's, or MFD_DELTA_HASH's (sse2, avx2 or avx512;
// "default" off x86-64) where it is one of them.
HashChoice ChooseHashKernel() {
  HashChoice c;
#ifdef MFD_XXH3_DISPATCH
  c.kernels.push_back({"sse2", Hash128Default});
  __builtin_cpu_init();
  std::vector<HashKernel> more;
  if (__builtin_cpu_supports("avx2")) more.push_back({"avx2", Hash128Avx2});
  if (__builtin_cpu_supports("avx512f")) more.push_back({"avx512", Hash128Avx512});
  // A few sizes of pseudo-random bytes: a kernel that disagrees with the default is not used.
  std::vector<uint8_t> sample(65536);
  uint64_t x = 0x9e3779b97f4a7c15ull;
  for (auto& b : sample) b = static_cast<uint8_t>((x = x * 6364136223846793005ull + 1) >> 56);
  for (const auto& k : more) {
    bool same = true;
    for (size_t n : {size_t{4096}, size_t{4100}, size_t{16384}, size_t{65536}}) {
      const XXH128_hash_t a = Hash128Default(sample.data(), n), b = k.fn(sample.data(), n);
      same = same && a.low64 == b.low64 && a.high64 == b.high64;
    }
    if (same) c.kernels.push_back(k);
  }
#else
  c.kernels.push_back({"default", Hash128Default});
#endif
  const HashKernel* pick = &c.kernels.back();
  std::string why;
  if (const char* want = std::getenv("MFD_DELTA_HASH"); want != nullptr && *want != '\0') {
    const auto it = std::find_if(c.kernels.begin(), c.kernels.end(), [&](const HashKernel& k) {
      return std::strcmp(k.name, want) == 0;
    });
    if (it != c.kernels.end())
      pick = &*it;
    else
      why = std::string(" (MFD_DELTA_HASH=") + want + ": not a kernel this CPU runs)";
  }
  c.fn = pick->fn;
  c.name = pick->name + why;
  return c;
}

const HashChoice& Hash() {
  static const HashChoice choice = ChooseHashKernel();
  return choice;
}

// Hashes pages [from, to) into their slots of `slots` (page i at slot i); zero pages get idx
// 0xffffffff. One pass a page: the zero check (a non-zero page usually stops at its first bytes),
// then its CRC-32C and hash while it is in the cache; a zero page's CRC is the zero page's, not
// computed again (half the pages of a typical guest).
void HashRange(const uint8_t* pages, size_t page_size, size_t from, size_t to, uint64_t first,
               Entry* slots, uint32_t* crc_out, const uint8_t* holes) {
  const uint32_t zero_crc = crc_out != nullptr ? ZeroPageCrc(page_size) : 0;
  const Hash128Fn hash128 = Hash().fn;
  for (size_t i = from; i < to; i++) {
    const uint8_t* p = pages + i * page_size;
    if ((holes != nullptr && holes[i] != 0) || BufferIsZero(p, page_size)) {
      slots[i] = {0, 0, 0xffffffffu};
      if (crc_out != nullptr) crc_out[i] = zero_crc;
      continue;
    }
    if (crc_out != nullptr) crc_out[i] = Crc32c(p, page_size);
    const XXH128_hash_t h = hash128(p, page_size);
    slots[i] = {h.high64, static_cast<uint32_t>(h.low64 >> 32), static_cast<uint32_t>(first + i)};
  }
}

// HashRange under the SIGBUS guard (the pages may be a file mapping): 0, or kShortRead when the
// file shrank under it.
struct HashArgs {
  const uint8_t* pages;
  size_t page_size, from, to;
  uint64_t first;
  Entry* slots;
  uint32_t* crc_out;
  const uint8_t* holes;
};
int64_t HashRangeGuarded(HashArgs a) {
  return RunGuarded(
      [](void* p) -> int64_t {
        const auto* x = static_cast<HashArgs*>(p);
        HashRange(x->pages, x->page_size, x->from, x->to, x->first, x->slots, x->crc_out, x->holes);
        return 0;
      },
      &a);
}
#endif

#ifdef MFD_HAVE_XXHASH
// madvise(MADV_POPULATE_READ) over a file mapping's data: one call maps every page of it, where
// faulting them in costs a page fault per 16. 0; kShortRead when part of it lies past the end
// of the file (it shrank); failures that only cost speed (an older kernel's EINVAL) are ignored.
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
int64_t Populate(const uint8_t* addr, size_t len) {
  if (len == 0) return 0;
  const uintptr_t os_page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t from = reinterpret_cast<uintptr_t>(addr) & ~(os_page - 1);
  const uintptr_t to = (reinterpret_cast<uintptr_t>(addr) + len + os_page - 1) & ~(os_page - 1);
  while (madvise(reinterpret_cast<void*>(from), to - from, MADV_POPULATE_READ) != 0) {
    if (errno == EINTR || errno == EAGAIN) continue;
    return errno == EFAULT ? kShortRead : 0;
  }
  return 0;
}

// The entries of `count` pages (deltaFingerprint's), hashed on all cores: into `out`, their
// number returned, or kShortRead. With `populate`, each thread first populates the page tables
// of its share's pages that are not holes (a file mapping).
int64_t HashPages(const uint8_t* pages, size_t page_size, size_t count, uint64_t first,
                  uint8_t* out, uint32_t* crc_out, const uint8_t* holes, bool populate) {
  std::vector<Entry> slots(count);
  const size_t cores = std::max(1u, std::thread::hardware_concurrency());
  const size_t threads = std::max<size_t>(1, std::min(cores, count / kPagesPerThread));
  const size_t per = (count + threads - 1) / threads;
  std::vector<int64_t> results(threads, 0);
  auto run = [&](size_t t) {
    const size_t from = std::min(count, t * per), to = std::min(count, (t + 1) * per);
    if (!populate) {
      results[t] =
          HashRangeGuarded({pages, page_size, from, to, first, slots.data(), crc_out, holes});
      return;
    }
    // A file mapping: kPopulateStep pages at a time, their page tables populated (runs of pages
    // outside holes, one madvise each), hashed, then dropped (MADV_DONTNEED: the file's pages
    // stay in its page cache), so the process never has more than a few steps of the file
    // mapped (its resident size).
    for (size_t at = from; at < to; at += kPopulateStep) {
      const size_t end = std::min(to, at + kPopulateStep);
      for (size_t i = at; i < end;) {
        if (holes != nullptr && holes[i] != 0) {
          i++;
          continue;
        }
        size_t j = i + 1;
        while (j < end && (holes == nullptr || holes[j] == 0)) j++;
        if (Populate(pages + i * page_size, (j - i) * page_size) < 0) {
          results[t] = kShortRead;
          return;
        }
        i = j;
      }
      results[t] =
          HashRangeGuarded({pages, page_size, at, end, first, slots.data(), crc_out, holes});
      if (results[t] < 0) return;
      madvise(const_cast<uint8_t*>(pages + at * page_size), (end - at) * page_size, MADV_DONTNEED);
    }
  };
  std::vector<std::thread> pool;
  for (size_t t = 1; t < threads; t++) pool.emplace_back(run, t);
  run(0);
  for (auto& th : pool) th.join();
  for (const int64_t r : results)
    if (r < 0) return r;
  int64_t n = 0;
  for (const Entry& e : slots) {
    if (e.idx == 0xffffffffu) continue;  // a zero page (indices stop at 2^32 - 2)
    Store(out + n * kEntry, e);
    n++;
  }
  return n;
}
#endif

class FingerprintWorker : public Napi::AsyncWorker {
 public:
  FingerprintWorker(Napi::Function cb, const uint8_t* pages, size_t page_size, size_t count,
                    uint64_t first, uint8_t* out, uint32_t* crc_out, const uint8_t* holes)
      : Napi::AsyncWorker(cb, "mfd.deltaFingerprint"),
        pages_(pages),
        page_size_(page_size),
        count_(count),
        first_(first),
        out_(out),
        crc_out_(crc_out),
        holes_(holes) {}
  void Pin(Napi::Object o) { pinned_.push_back(Napi::Persistent(o)); }
  void Execute() override {
#ifdef MFD_HAVE_XXHASH
    n_ = HashPages(pages_, page_size_, count_, first_, out_, crc_out_, holes_, false);
#endif
  }
  void OnOK() override {
    Callback().Call({Env().Null(), Napi::Number::New(Env(), static_cast<double>(n_))});
  }

 private:
  const uint8_t* pages_;
  size_t page_size_, count_;
  uint64_t first_;
  uint8_t* out_;
  uint32_t* crc_out_;
  const uint8_t* holes_;
  int64_t n_ = 0;  // entries, or kShortRead
  std::vector<Napi::ObjectReference> pinned_;
};

Napi::Value JS_deltaFingerprint(const Napi::CallbackInfo& info) {
  size_t page_size, count, first;
  if (Unavailable(info.Env())) return info.Env().Undefined();
  if (!RequireArgs(info, 8) || !RequireBytes(info, 0, "pages") ||
      !RequireSize(info, 1, "pageSize", &page_size) || !RequireSize(info, 2, "count", &count) ||
      !RequireSize(info, 3, "firstIndex", &first) || !RequireBytes(info, 4, "out") ||
      !RequireFunction(info, 7)) {
    return info.Env().Undefined();
  }
  const uint8_t* holes = nullptr;
  if (!info[6].IsNull() && !info[6].IsUndefined()) {
    if (!RequireBytes(info, 6, "holes", count)) return info.Env().Undefined();
    holes = info[6].As<Napi::Uint8Array>().Data();
  }
  uint32_t* crc_out = nullptr;
  if (!info[5].IsNull() && !info[5].IsUndefined()) {
    if (!RequireUint32Array(info, 5, "crcOut", count)) return info.Env().Undefined();
    crc_out = info[5].As<Napi::Uint32Array>().Data();
  }
  auto pages = info[0].As<Napi::Uint8Array>();
  auto out = info[4].As<Napi::Uint8Array>();
  if (page_size == 0 || count > pages.ByteLength() / page_size ||
      out.ByteLength() < count * kEntry || first + count > 0xffffffffu) {
    Napi::RangeError::New(
        info.Env(),
        "deltaFingerprint: buffers too small for count pages, or page indices past 2^32 - 1")
        .ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  auto* w = new FingerprintWorker(info[7].As<Napi::Function>(), pages.Data(), page_size, count,
                                  first, out.Data(), crc_out, holes);
  w->Pin(pages);
  w->Pin(out);
  if (crc_out != nullptr) w->Pin(info[5].As<Napi::Object>());
  if (holes != nullptr) w->Pin(info[6].As<Napi::Object>());
  w->Queue();
  return info.Env().Undefined();
}

class FingerprintFileWorker : public Napi::AsyncWorker {
 public:
  FingerprintFileWorker(Napi::Function cb, int fd, int64_t position, size_t length, int64_t size,
                        size_t page_size, uint64_t first, uint8_t* out, uint32_t* crc_out,
                        double* span)
      : Napi::AsyncWorker(cb, "mfd.deltaFingerprintFile"),
        fd_(fd),
        position_(position),
        length_(length),
        size_(size),
        page_size_(page_size),
        first_(first),
        out_(out),
        crc_out_(crc_out),
        span_(span) {}
  void Pin(Napi::Object o) { pinned_.push_back(Napi::Persistent(o)); }
  void Execute() override {
#ifdef MFD_HAVE_XXHASH
    const size_t count = length_ / page_size_;
    const int64_t end = position_ + static_cast<int64_t>(length_);
    // The holes: none inside a span found all data before (on tmpfs SEEK_HOLE walks the page
    // cache up to the next hole: once a range, it would cost O(file) each).
    std::vector<uint8_t> holes;
    if (!(position_ >= span_[0] && end <= span_[1])) {
      std::vector<int64_t> extents;
      int64_t until = 0;
      const int r = DataExtents(fd_, position_, static_cast<int64_t>(length_), &extents, &until);
      if (r < 0) {
        // An optimisation only: without it every page is looked at (and lseek not tried again).
        span_[0] = 0;
        span_[1] = std::numeric_limits<double>::infinity();
      } else if (extents.size() == 2 && extents[0] == position_ && extents[1] >= end) {
        span_[0] = static_cast<double>(position_);
        span_[1] = static_cast<double>(until);
      } else {
        // lseek reports everything past the end of a file as a hole: a file that shrank would
        // pass as zero pages.
        struct stat st{};
        if (fstat(fd_, &st) != 0 || st.st_size < size_) {
          n_ = kShortRead;
          return;
        }
        holes.assign(count, 1);
        for (size_t i = 0; i < extents.size(); i += 2) {
          const size_t from = static_cast<size_t>(extents[i] - position_) / page_size_;
          const size_t to = std::min(
              count, static_cast<size_t>(extents[i + 1] - position_ + page_size_ - 1) / page_size_);
          std::fill(holes.begin() + from, holes.begin() + to, 0);
        }
      }
    }
    void* p = mmap(nullptr, length_, PROT_READ, MAP_SHARED, fd_, static_cast<off_t>(position_));
    if (p == MAP_FAILED) {
      SetError(std::string("deltaFingerprintFile: mmap: ") + strerror(errno));
      return;
    }
    n_ = HashPages(static_cast<const uint8_t*>(p), page_size_, count, first_, out_, crc_out_,
                   holes.empty() ? nullptr : holes.data(), true);
    munmap(p, length_);
#endif
  }
  void OnOK() override {
    Callback().Call({Env().Null(), Napi::Number::New(Env(), static_cast<double>(n_))});
  }

 private:
  int fd_;
  int64_t position_;
  size_t length_;
  int64_t size_;
  size_t page_size_;
  uint64_t first_;
  uint8_t* out_;
  uint32_t* crc_out_;
  double* span_;
  int64_t n_ = 0;  // entries, or kShortRead
  std::vector<Napi::ObjectReference> pinned_;
};

Napi::Value JS_deltaFingerprintFile(const Napi::CallbackInfo& info) {
  size_t fd, position, length, size, page_size, first;
  if (Unavailable(info.Env())) return info.Env().Undefined();
  if (!RequireArgs(info, 10) || !RequireSize(info, 0, "fd", &fd) ||
      !RequireSize(info, 1, "position", &position) || !RequireSize(info, 2, "length", &length) ||
      !RequireSize(info, 3, "size", &size) || !RequireSize(info, 4, "pageSize", &page_size) ||
      !RequireSize(info, 5, "firstIndex", &first) || !RequireBytes(info, 6, "out") ||
      !RequireFunction(info, 9)) {
    return info.Env().Undefined();
  }
  const size_t os_page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const size_t count = page_size == 0 ? 0 : length / page_size;
  uint32_t* crc_out = nullptr;
  if (!info[7].IsNull() && !info[7].IsUndefined()) {
    if (!RequireUint32Array(info, 7, "crcOut", count)) return info.Env().Undefined();
    crc_out = info[7].As<Napi::Uint32Array>().Data();
  }
  if (!info[8].IsTypedArray() ||
      info[8].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array ||
      info[8].As<Napi::Float64Array>().ElementLength() < 2) {
    Napi::TypeError::New(info.Env(), "deltaFingerprintFile: span must be a Float64Array of 2")
        .ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  auto out = info[6].As<Napi::Uint8Array>();
  if (page_size == 0 || length == 0 || length % page_size != 0 || position % os_page != 0 ||
      position % page_size != 0 || out.ByteLength() < count * kEntry ||
      first + count > 0xffffffffu) {
    Napi::RangeError::New(info.Env(),
                          "deltaFingerprintFile: length must be whole pages (> 0), position page "
                          "aligned, out 16 bytes a page, page indices below 2^32 - 1")
        .ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  auto span = info[8].As<Napi::Float64Array>();
  auto* w = new FingerprintFileWorker(
      info[9].As<Napi::Function>(), static_cast<int>(fd), static_cast<int64_t>(position), length,
      static_cast<int64_t>(size), page_size, first, out.Data(), crc_out, span.Data());
  w->Pin(out);
  w->Pin(span);
  if (crc_out != nullptr) w->Pin(info[7].As<Napi::Object>());
  w->Queue();
  return info.Env().Undefined();
}

class SortWorker : public Napi::AsyncWorker {
 public:
  SortWorker(Napi::Function cb, Napi::Uint8Array entries, size_t count)
      : Napi::AsyncWorker(cb, "mfd.deltaSort"),
        data_(entries.Data()),
        count_(count),
        pinned_(Napi::Persistent(entries.As<Napi::Object>())) {}
  void Execute() override {
    std::vector<Entry> v(count_);
    for (size_t i = 0; i < count_; i++) v[i] = Load(data_ + i * kEntry);
    std::sort(v.begin(), v.end(), [](const Entry& a, const Entry& b) { return Less(a, b); });
    for (size_t i = 0; i < count_; i++) Store(data_ + i * kEntry, v[i]);
  }

 private:
  uint8_t* data_;
  size_t count_;
  Napi::ObjectReference pinned_;
};

Napi::Value JS_deltaSort(const Napi::CallbackInfo& info) {
  size_t count;
  if (!RequireArgs(info, 3) || !RequireBytes(info, 0, "entries") ||
      !RequireSize(info, 1, "count", &count) || !RequireFunction(info, 2)) {
    return info.Env().Undefined();
  }
  auto entries = info[0].As<Napi::Uint8Array>();
  if (count > entries.ByteLength() / kEntry) {
    Napi::RangeError::New(info.Env(), "deltaSort: entries too small for count")
        .ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  (new SortWorker(info[2].As<Napi::Function>(), entries, count))->Queue();
  return info.Env().Undefined();
}

// The first index of the sorted table `t` (n entries) whose key is not below e's. Keys are hashes,
// spread evenly: the search starts where e's key would lie in an even spread and gallops out from
// there, a few neighbouring entries instead of a binary search's log2(n) far-apart ones (each a
// cache miss in a table of millions). Any sorted table gives the right answer, an uneven one
// (a hostile peer's) in O(log n) steps still.
size_t LowerBound(const uint8_t* t, size_t n, const Entry& e) {
  if (n == 0) return 0;
  const size_t guess = static_cast<size_t>((static_cast<unsigned __int128>(e.hi) * n) >> 64);
  size_t lo, hi;  // every entry below lo is less than e, none from hi on
  if (KeyLess(Load(t + guess * kEntry), e)) {
    lo = guess + 1;
    size_t step = 1;
    while (lo + step - 1 < n && KeyLess(Load(t + (lo + step - 1) * kEntry), e)) {
      lo += step;
      step <<= 1;
    }
    hi = std::min(n, lo + step - 1);
  } else {
    hi = guess;
    size_t step = 1;
    while (hi >= step && !KeyLess(Load(t + (hi - step) * kEntry), e)) {
      hi -= step;
      step <<= 1;
    }
    lo = hi >= step ? hi - step + 1 : 0;
  }
  while (lo < hi) {
    const size_t mid = lo + (hi - lo) / 2;
    if (KeyLess(Load(t + mid * kEntry), e))
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

Napi::Value JS_deltaMatch(const Napi::CallbackInfo& info) {
  size_t table_count, count;
  if (!RequireArgs(info, 5) || !RequireBytes(info, 0, "table") ||
      !RequireSize(info, 1, "tableCount", &table_count) || !RequireBytes(info, 2, "entries") ||
      !RequireSize(info, 3, "count", &count)) {
    return info.Env().Undefined();
  }
  auto table = info[0].As<Napi::Uint8Array>();
  auto entries = info[2].As<Napi::Uint8Array>();
  if (table_count > table.ByteLength() / kEntry || count > entries.ByteLength() / kEntry ||
      !RequireUint32Array(info, 4, "out", count)) {
    if (!info.Env().IsExceptionPending())
      Napi::RangeError::New(info.Env(), "deltaMatch: buffers too small")
          .ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  uint32_t* out = info[4].As<Napi::Uint32Array>().Data();
  const uint8_t* t = table.Data();
  size_t matches = 0;
  for (size_t i = 0; i < count; i++) {
    const Entry e = Load(entries.Data() + i * kEntry);
    const size_t lo = LowerBound(t, table_count, e);
    if (lo < table_count) {
      const Entry f = Load(t + lo * kEntry);
      if (f.hi == e.hi && f.mid == e.mid) {
        out[i] = f.idx;
        matches++;
        continue;
      }
    }
    out[i] = 0xffffffffu;
  }
  return Napi::Number::New(info.Env(), static_cast<double>(matches));
}

void Unmap(napi_env, void* data, void* hint) { munmap(data, reinterpret_cast<uintptr_t>(hint)); }

Napi::Value JS_deltaAlloc(const Napi::CallbackInfo& info) {
  size_t bytes;
  if (!RequireArgs(info, 1) || !RequireSize(info, 0, "bytes", &bytes))
    return info.Env().Undefined();
  if (bytes == 0) return Napi::ArrayBuffer::New(info.Env(), 0);
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    Napi::Error::New(info.Env(), "deltaAlloc: mmap of " + std::to_string(bytes) + " bytes failed")
        .ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  napi_value out;
  if (napi_create_external_arraybuffer(info.Env(), p, bytes, Unmap,
                                       reinterpret_cast<void*>(static_cast<uintptr_t>(bytes)),
                                       &out) != napi_ok) {
    munmap(p, bytes);
    Napi::Error::New(info.Env(), "deltaAlloc: cannot make an ArrayBuffer of the mapping")
        .ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  return Napi::Value(info.Env(), out);
}

Napi::Value JS_deltaRelease(const Napi::CallbackInfo& info) {
  if (!RequireArgs(info, 1)) return info.Env().Undefined();
  if (!info[0].IsArrayBuffer()) {
    Napi::TypeError::New(info.Env(), "deltaRelease: expected an ArrayBuffer")
        .ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  auto buffer = info[0].As<Napi::ArrayBuffer>();
  bool detached = false;
  if (napi_is_detached_arraybuffer(info.Env(), buffer, &detached) != napi_ok || detached)
    return Napi::Boolean::New(info.Env(), false);
  // Fails (and returns false) for a buffer V8 will not detach, e.g. WebAssembly memory.
  const bool ok = napi_detach_arraybuffer(info.Env(), buffer) == napi_ok;
  return Napi::Boolean::New(info.Env(), ok);
}

}  // namespace

void InitDelta(Napi::Env env, Napi::Object exports) {
#ifdef MFD_HAVE_XXHASH
  exports.Set("deltaAvailable", Napi::Boolean::New(env, true));
  exports.Set("xxhashVersion", Napi::Number::New(env, XXH_versionNumber()));
  exports.Set("deltaHashKernel", Napi::String::New(env, Hash().name));
  auto kernels = Napi::Array::New(env, Hash().kernels.size());
  for (size_t i = 0; i < Hash().kernels.size(); i++) kernels.Set(i, Hash().kernels[i].name);
  exports.Set("deltaHashKernels", kernels);
#else
  exports.Set("deltaAvailable", Napi::Boolean::New(env, false));
#endif
  exports.Set("deltaFingerprint",
              Napi::Function::New(env, JS_deltaFingerprint, "deltaFingerprint"));
  exports.Set("deltaFingerprintFile",
              Napi::Function::New(env, JS_deltaFingerprintFile, "deltaFingerprintFile"));
  exports.Set("deltaSort", Napi::Function::New(env, JS_deltaSort, "deltaSort"));
  exports.Set("deltaMatch", Napi::Function::New(env, JS_deltaMatch, "deltaMatch"));
  exports.Set("deltaAlloc", Napi::Function::New(env, JS_deltaAlloc, "deltaAlloc"));
  exports.Set("deltaRelease", Napi::Function::New(env, JS_deltaRelease, "deltaRelease"));
}

}  // namespace mfd
