// Zero-page detection over a batch of pages (one call per multifd packet).
#ifndef MFD_ZERO_PAGE_H_
#define MFD_ZERO_PAGE_H_

#include <cstddef>
#include <cstdint>

namespace mfd {

// Marks out[i] = 1 when page i of buf is all zero bytes, else 0.
// Returns the number of zero pages. buf holds count * page_size bytes.
size_t ScanZeroPages(const uint8_t* buf, size_t page_size, size_t count, uint8_t* out);

// True when every byte of buf[0, len) is zero, using the selected accelerator.
bool BufferIsZero(const uint8_t* buf, size_t len);

// Accelerators this CPU can run, best first ("avx2", "sse2", "scalar"),
// and the one in use. SelectZeroPageAccel is a test hook: it returns false
// for a name the CPU cannot run.
const char* const* ZeroPageAccels(size_t* n);
const char* SelectedZeroPageAccel();
bool SelectZeroPageAccel(const char* name);

}  // namespace mfd

#endif  // MFD_ZERO_PAGE_H_
