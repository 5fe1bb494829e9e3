// CPU zero-page scan. The accelerator is picked once from cpuid (QEMU's
// bufferiszero does the same); every page first samples three bytes so a
// non-zero page usually costs no full scan.
#include "zero_page.h"

#include <atomic>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define MFD_X86 1
#endif

namespace mfd {
namespace {

typedef bool (*IsZeroFn)(const uint8_t*, size_t);

bool IsZeroScalar(const uint8_t* buf, size_t len) {
  size_t i = 0;
  uint64_t acc = 0;
  for (; i + 32 <= len; i += 32) {
    uint64_t a, b, c, d;
    std::memcpy(&a, buf + i, 8);
    std::memcpy(&b, buf + i + 8, 8);
    std::memcpy(&c, buf + i + 16, 8);
    std::memcpy(&d, buf + i + 24, 8);
    if ((a | b | c | d) != 0) return false;
  }
  for (; i < len; i++) acc |= buf[i];
  return acc == 0;
}

#ifdef MFD_X86
__attribute__((target("sse2"))) bool IsZeroSse2(const uint8_t* buf, size_t len) {
  size_t i = 0;
  const __m128i zero = _mm_setzero_si128();
  for (; i + 64 <= len; i += 64) {
    __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(buf + i));
    __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(buf + i + 16));
    __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(buf + i + 32));
    __m128i d = _mm_loadu_si128(reinterpret_cast<const __m128i*>(buf + i + 48));
    __m128i o = _mm_or_si128(_mm_or_si128(a, b), _mm_or_si128(c, d));
    if (_mm_movemask_epi8(_mm_cmpeq_epi8(o, zero)) != 0xFFFF) return false;
  }
  return IsZeroScalar(buf + i, len - i);
}

__attribute__((target("avx2"))) bool IsZeroAvx2(const uint8_t* buf, size_t len) {
  size_t i = 0;
  for (; i + 128 <= len; i += 128) {
    __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(buf + i));
    __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(buf + i + 32));
    __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(buf + i + 64));
    __m256i d = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(buf + i + 96));
    __m256i o = _mm256_or_si256(_mm256_or_si256(a, b), _mm256_or_si256(c, d));
    if (!_mm256_testz_si256(o, o)) return false;
  }
  return IsZeroScalar(buf + i, len - i);
}

// 256 bytes (four 64-byte loads) per step, as the AVX2 path takes 128. The
// loads are aligned: the bytes before the first 64-byte boundary go to the
// AVX2 path. A buffer 16 bytes past a boundary (as malloc'd and
// SharedArrayBuffer memory is) otherwise splits every load across two cache
// lines, and out of cache that cost 20% (bench/zero-scan.mjs --offset 16).
__attribute__((target("avx512f"))) bool IsZeroAvx512(const uint8_t* buf, size_t len) {
  const size_t head = (64 - (reinterpret_cast<uintptr_t>(buf) & 63)) & 63;
  if (head != 0) {
    if (len <= head) return IsZeroAvx2(buf, len);
    if (!IsZeroAvx2(buf, head)) return false;
    buf += head;
    len -= head;
  }
  size_t i = 0;
  for (; i + 256 <= len; i += 256) {
    __m512i a = _mm512_load_si512(buf + i);
    __m512i b = _mm512_load_si512(buf + i + 64);
    __m512i c = _mm512_load_si512(buf + i + 128);
    __m512i d = _mm512_load_si512(buf + i + 192);
    __m512i o = _mm512_or_si512(_mm512_or_si512(a, b), _mm512_or_si512(c, d));
    if (_mm512_test_epi64_mask(o, o) != 0) return false;
  }
  return IsZeroAvx2(buf + i, len - i);
}
#endif

struct Accel {
  const char* name;
  IsZeroFn fn;
};

// Best first; filled once at load time with what this CPU supports.
Accel g_accels[4];
const char* g_names[4];
size_t g_count = 0;
// Read by every thread that scans; changed only by the test hook.
std::atomic<IsZeroFn> g_selected{IsZeroScalar};
std::atomic<const char*> g_selected_name{"scalar"};

struct Init {
  Init() {
#ifdef MFD_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2"))
      g_accels[g_count++] = {"avx512", IsZeroAvx512};
    if (__builtin_cpu_supports("avx2")) g_accels[g_count++] = {"avx2", IsZeroAvx2};
    if (__builtin_cpu_supports("sse2")) g_accels[g_count++] = {"sse2", IsZeroSse2};
#endif
    g_accels[g_count++] = {"scalar", IsZeroScalar};
    for (size_t i = 0; i < g_count; i++) g_names[i] = g_accels[i].name;
    g_selected = g_accels[0].fn;
    g_selected_name = g_accels[0].name;
  }
} g_init;

}  // namespace

bool BufferIsZero(const uint8_t* buf, size_t len) {
  if (len == 0) return true;
  // Sample first, last and middle bytes before the full scan.
  if (buf[0] | buf[len - 1] | buf[len / 2]) return false;
  return g_selected.load(std::memory_order_relaxed)(buf, len);
}

size_t ScanZeroPages(const uint8_t* buf, size_t page_size, size_t count, uint8_t* out) {
  size_t zeros = 0;
  for (size_t i = 0; i < count; i++) {
    const bool z = BufferIsZero(buf + i * page_size, page_size);
    out[i] = z ? 1 : 0;
    zeros += z;
  }
  return zeros;
}

const char* const* ZeroPageAccels(size_t* n) {
  *n = g_count;
  return g_names;
}

const char* SelectedZeroPageAccel() { return g_selected_name.load(); }

bool SelectZeroPageAccel(const char* name) {
  for (size_t i = 0; i < g_count; i++) {
    if (std::strcmp(g_accels[i].name, name) == 0) {
      g_selected = g_accels[i].fn;
      g_selected_name = g_accels[i].name;
      return true;
    }
  }
  return false;
}

}  // namespace mfd
