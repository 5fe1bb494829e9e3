// Positional file I/O for migration files (src/file/): one call per buffer or
// per packet, on the libuv pool, on caller-owned buffers.
#ifndef MFD_FILE_IO_H_
#define MFD_FILE_IO_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "common.h"
#include "spans.h"

namespace mfd {

// Alignment the O_DIRECT path guarantees (memory, lengths and positions).
constexpr size_t kDirectAlign = 4096;

struct PositionalIoJob {
  int fd = -1;
  bool write = false;
  // After each write, ask the kernel to start writing those pages to disk now
  // (sync_file_range SYNC_FILE_RANGE_WRITE: starts writeback, does not wait for
  // it), so a buffered save keeps the disk busy instead of leaving everything
  // to the final fdatasync. A hint: the fdatasync still reports any I/O error.
  bool start_writeback = false;
  // pieces[i] goes to (or comes from) file position positions[i]; pieces whose
  // positions follow on from the previous piece share one pwritev/preadv.
  ByteSpans pieces;
  std::vector<int64_t> positions;
  // On failure: the file position of the call that failed, the bytes it asked
  // for and the bytes it moved (a short write, or a read that hit the end).
  int64_t fail_at = -1;
  int64_t fail_asked = 0;
  int64_t fail_moved = 0;
  // 0, or -errno, kShortWrite, kShortRead.
  int64_t Run();
};

}  // namespace mfd

#endif  // MFD_FILE_IO_H_
