// One packet's file I/O and page analysis in a single call, run on the libuv
// pool: the sender reads a packet's pages and scans them; the receiver
// digests a packet's decoded pages and writes them where they belong.
#ifndef MFD_PACKET_IO_H_
#define MFD_PACKET_IO_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "common.h"
#include "spans.h"

namespace mfd {

// Result codes beyond -errno: kShortRead, kBadPadding (common.h).

// Zero flags (when zero_out is set) and per-page CRC-32C (when crc_out is
// set) for `count` pages. Returns the number of zero pages. `holes`, when set
// together with zero_out, flags pages known to be zero without reading them
// (holes of a sparse image): they are neither scanned nor touched, so a
// mapping of a hole is never faulted in.
size_t AnalysePages(const uint8_t* pages, size_t page_size, size_t count, uint8_t* zero_out,
                    uint32_t* crc_out, const uint8_t* holes = nullptr);

// AnalysePages over memory that may be a file mapping: if the file shrinks
// under the scan (SIGBUS), returns kShortRead instead of crashing.
int64_t AnalysePagesGuarded(const uint8_t* pages, size_t page_size, size_t count, uint8_t* zero_out,
                            uint32_t* crc_out, const uint8_t* holes = nullptr);

// The data extents of fd within [pos, pos + len), by lseek(SEEK_DATA/SEEK_HOLE),
// as [start, end) pairs appended to `out`. A file system without the two
// whence values reports the whole range as data. With `data_until`, where the
// last extent really ends (its hole, past pos + len when the data goes on; at
// or before pos + len when the range ends in a hole; 0 without data). Returns 0 or -errno.
int DataExtents(int fd, int64_t pos, int64_t len, std::vector<int64_t>* out,
                int64_t* data_until = nullptr);

// What touching whole pages costs on this host through a mapping and through pread, in this
// thread's CPU nanoseconds (CLOCK_THREAD_CPUTIME_ID, so other threads' load does not count): over
// `extents` ([start, end) byte pairs, data only: a hole touched through a mapping would have the
// file system allocate a page for it), one fresh mapping over all of them (as the sender maps
// whole windows) read one byte a page on the extents only, then the same bytes read with pread
// into a 512 KiB buffer; twice, alternating, the cheaper round of each kept. Pages are whole and
// inside each extent (its ends rounded inwards). Returns 0 or -errno (kShortRead when the file
// shrank under the mapping).
int ProbeImageAccess(int fd, const std::vector<int64_t>& extents, int64_t* map_ns,
                     int64_t* read_ns);

// Installs (once) the SIGBUS handler that guarded scans rely on.
void InstallSigbusGuard();

// Runs fn(arg) so that a SIGBUS from a file mapping shrinking under it returns
// kShortRead instead of killing the process. fn must own no resources that
// need unwinding (the fault returns by siglongjmp).
int64_t RunGuarded(int64_t (*fn)(void*), void* arg);

struct WritePacketJob {
  int fd;
  // Normal pages, back to back across several caller buffers (socket chunks).
  ByteSpans pages;
  size_t page_size;
  const double* offsets;  // normal offsets, then zero offsets (byte offsets in the block)
  size_t normal;
  size_t zero;
  int64_t block_size;     // writes are clipped to it
  bool write_zeros;       // in place: zero pages are written as zeros
  uint32_t* crc_out;      // per normal page
  int64_t bad_page = -1;  // with kBadPadding: which page
  // 0, or a negative code.
  int64_t Run();
};

}  // namespace mfd

#endif  // MFD_PACKET_IO_H_
