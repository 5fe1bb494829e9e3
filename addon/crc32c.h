// CRC-32C (Castagnoli) of whole pages: the per-page checksum behind mfd's
// ramblock digest. ISA-L's crc32_iscsi where ISA-L is available (isal.h),
// else the addon's own: SSE4.2's crc32 instruction where the CPU has it, a
// table otherwise.
#ifndef MFD_CRC32C_H_
#define MFD_CRC32C_H_

#include <cstddef>
#include <cstdint>
#include <string>

namespace mfd {

uint32_t Crc32c(const uint8_t* buf, size_t len);

// Continues a CRC-32C: Crc32cExtend(Crc32c(a), b) == Crc32c(a followed by b);
// Crc32cExtend(0, b) == Crc32c(b).
uint32_t Crc32cExtend(uint32_t crc, const uint8_t* buf, size_t len);

// out[i] = Crc32c(page i). Independent pages are interleaved three at a time
// so the instruction's latency is hidden.
void Crc32cPages(const uint8_t* buf, size_t page_size, size_t count, uint32_t* out);

// The addon's own CRC-32C, whatever Crc32cExtend runs (tests compare the two).
uint32_t Crc32cBuiltinExtend(uint32_t crc, const uint8_t* buf, size_t len);

// What computes Crc32c*: "isa-l 2.30.0 crc32_iscsi", "sse4.2" or "table".
std::string Crc32cEngine();

// CRC-32C of one all-zero page (cached per thread).
uint32_t ZeroPageCrc(size_t page_size);

}  // namespace mfd

#endif  // MFD_CRC32C_H_
