#include "crc32c.h"

#include <cstring>
#include <vector>

#include "isal.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define MFD_X86_64 1
#endif

namespace mfd {
namespace {

constexpr uint32_t kPoly = 0x82F63B78u;  // reflected Castagnoli polynomial

struct Table {
  uint32_t t[256];
  Table() {
    for (uint32_t i = 0; i < 256; i++) {
      uint32_t c = i;
      for (int k = 0; k < 8; k++) c = (c >> 1) ^ ((c & 1) ? kPoly : 0);
      t[i] = c;
    }
  }
} const g_table;

uint32_t UpdateTable(uint32_t crc, const uint8_t* p, size_t len) {
  for (size_t i = 0; i < len; i++) crc = g_table.t[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
  return crc;
}

#ifdef MFD_X86_64
__attribute__((target("sse4.2"))) uint32_t UpdateHw(uint32_t crc, const uint8_t* p, size_t len) {
  uint64_t c = crc;
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    uint64_t v;
    std::memcpy(&v, p + i, 8);
    c = _mm_crc32_u64(c, v);
  }
  uint32_t c32 = static_cast<uint32_t>(c);
  for (; i < len; i++) c32 = _mm_crc32_u8(c32, p[i]);
  return c32;
}

__attribute__((target("sse4.2"))) void PagesHw(const uint8_t* buf, size_t ps, size_t count,
                                               uint32_t* out) {
  size_t i = 0;
  if (ps % 8 == 0) {
    for (; i + 3 <= count; i += 3) {
      const uint8_t* a = buf + i * ps;
      const uint8_t* b = a + ps;
      const uint8_t* c = b + ps;
      uint64_t ca = 0xFFFFFFFFu, cb = 0xFFFFFFFFu, cc = 0xFFFFFFFFu;
      for (size_t j = 0; j < ps; j += 8) {
        uint64_t va, vb, vc;
        std::memcpy(&va, a + j, 8);
        std::memcpy(&vb, b + j, 8);
        std::memcpy(&vc, c + j, 8);
        ca = _mm_crc32_u64(ca, va);
        cb = _mm_crc32_u64(cb, vb);
        cc = _mm_crc32_u64(cc, vc);
      }
      out[i] = ~static_cast<uint32_t>(ca);
      out[i + 1] = ~static_cast<uint32_t>(cb);
      out[i + 2] = ~static_cast<uint32_t>(cc);
    }
  }
  for (; i < count; i++) out[i] = ~UpdateHw(0xFFFFFFFFu, buf + i * ps, ps);
}

const bool g_hw = [] {
  __builtin_cpu_init();
  return __builtin_cpu_supports("sse4.2") != 0;
}();
#else
const bool g_hw = false;
#endif

#ifdef MFD_HAVE_ISAL
// ISA-L's crc32_iscsi neither inverts its initial value nor its result
// (crc32_iscsi(buf, len, 0xFFFFFFFF) is the inverted CRC-32C), and takes an
// int length, so longer buffers go in pieces.
uint32_t UpdateIsal(const IsalApi* isal, uint32_t crc, const uint8_t* p, size_t len) {
  constexpr size_t kMax = size_t{1} << 30;
  while (len > 0) {
    const size_t n = len < kMax ? len : kMax;
    crc = isal->crc32_iscsi(const_cast<uint8_t*>(p), static_cast<int>(n), crc);
    p += n;
    len -= n;
  }
  return crc;
}
#endif

}  // namespace

uint32_t Crc32cBuiltinExtend(uint32_t crc, const uint8_t* buf, size_t len) {
#ifdef MFD_X86_64
  if (g_hw) return ~UpdateHw(~crc, buf, len);
#endif
  return ~UpdateTable(~crc, buf, len);
}

uint32_t Crc32cExtend(uint32_t crc, const uint8_t* buf, size_t len) {
#ifdef MFD_HAVE_ISAL
  if (const IsalApi* isal = Isal()) return ~UpdateIsal(isal, ~crc, buf, len);
#endif
  return Crc32cBuiltinExtend(crc, buf, len);
}

uint32_t Crc32c(const uint8_t* buf, size_t len) { return Crc32cExtend(0, buf, len); }

void Crc32cPages(const uint8_t* buf, size_t page_size, size_t count, uint32_t* out) {
#ifdef MFD_HAVE_ISAL
  if (const IsalApi* isal = Isal()) {
    for (size_t i = 0; i < count; i++)
      out[i] = ~UpdateIsal(isal, 0xFFFFFFFFu, buf + i * page_size, page_size);
    return;
  }
#endif
#ifdef MFD_X86_64
  if (g_hw) return PagesHw(buf, page_size, count, out);
#endif
  for (size_t i = 0; i < count; i++)
    out[i] = Crc32cBuiltinExtend(0, buf + i * page_size, page_size);
}

std::string Crc32cEngine() {
  if (Isal() != nullptr) return std::string("isa-l ") + IsalVersion() + " crc32_iscsi";
  return g_hw ? "sse4.2" : "table";
}

uint32_t ZeroPageCrc(size_t page_size) {
  static thread_local size_t cached_size = 0;
  static thread_local uint32_t cached_crc = 0;
  if (cached_size != page_size) {
    std::vector<uint8_t> zero(page_size, 0);
    cached_crc = Crc32c(zero.data(), page_size);
    cached_size = page_size;
  }
  return cached_crc;
}

}  // namespace mfd
