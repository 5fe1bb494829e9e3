#include "file_io.h"

#include <fcntl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>

#include "packet_io.h"

namespace mfd {
namespace {

bool Aligned(const uint8_t* p, size_t n) {
  return reinterpret_cast<uintptr_t>(p) % kDirectAlign == 0 && n % kDirectAlign == 0;
}

// An aligned scratch buffer for pieces O_DIRECT cannot take as they are.
struct Bounce {
  uint8_t* p = nullptr;
  ~Bounce() { std::free(p); }
  bool Get(size_t n) {
    std::free(p);
    p = nullptr;
    void* q = nullptr;
    if (posix_memalign(&q, kDirectAlign, std::max<size_t>(n, kDirectAlign)) != 0) return false;
    p = static_cast<uint8_t*>(q);
    return true;
  }
};

}  // namespace

int64_t PositionalIoJob::Run() {
  const int flags = fcntl(fd, F_GETFL);
  if (flags < 0) return -errno;
  const bool direct = (flags & O_DIRECT) != 0;
  std::vector<iovec> iov;
  Bounce bounce;
  for (size_t i = 0; i < pieces.size();) {
    // A group: pieces that follow on from each other in the file.
    size_t j = i + 1;
    int64_t len = static_cast<int64_t>(pieces[i].second);
    while (j < pieces.size() && j - i < IOV_MAX && positions[j] == positions[i] + len) {
      len += static_cast<int64_t>(pieces[j].second);
      j++;
    }
    bool needs_bounce = false;
    if (direct) {
      for (size_t k = i; k < j; k++) needs_bounce |= !Aligned(pieces[k].first, pieces[k].second);
    }
    iov.clear();
    if (needs_bounce) {
      if (!bounce.Get(static_cast<size_t>(len))) return -ENOMEM;
      if (write) {
        size_t at = 0;
        for (size_t k = i; k < j; k++) {
          std::memcpy(bounce.p + at, pieces[k].first, pieces[k].second);
          at += pieces[k].second;
        }
      }
      iov.push_back({bounce.p, static_cast<size_t>(len)});
    } else {
      for (size_t k = i; k < j; k++)
        iov.push_back({const_cast<uint8_t*>(pieces[k].first), pieces[k].second});
    }
    int64_t pos = positions[i];
    int64_t moved = 0;
    size_t first = 0;
    while (moved < len) {
      const ssize_t n =
          write ? pwritev(fd, iov.data() + first, static_cast<int>(iov.size() - first), pos + moved)
                : preadv(fd, iov.data() + first, static_cast<int>(iov.size() - first), pos + moved);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 || (write && n < len - moved) || (!write && n == 0)) {
        fail_at = pos;
        fail_asked = len;
        fail_moved = moved + (n > 0 ? n : 0);
        if (n < 0) return -errno;
        return write ? kShortWrite : kShortRead;
      }
      // A read may stop early before the end of a file: go on from where it stopped.
      moved += n;
      size_t left = static_cast<size_t>(n);
      while (first < iov.size() && left >= iov[first].iov_len) left -= iov[first++].iov_len;
      if (left > 0) {
        iov[first].iov_base = static_cast<uint8_t*>(iov[first].iov_base) + left;
        iov[first].iov_len -= left;
      }
    }
    if (write && start_writeback) sync_file_range(fd, pos, len, SYNC_FILE_RANGE_WRITE);
    if (needs_bounce && !write) {
      size_t at = 0;
      for (size_t k = i; k < j; k++) {
        std::memcpy(const_cast<uint8_t*>(pieces[k].first), bounce.p + at, pieces[k].second);
        at += pieces[k].second;
      }
    }
    i = j;
  }
  return 0;
}

}  // namespace mfd
