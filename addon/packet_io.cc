#include "packet_io.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <csetjmp>
#include <csignal>
#include <cstring>
#include <ctime>
#include <mutex>

#include "crc32c.h"
#include "zero_page.h"

namespace mfd {
namespace {

const uint8_t kZeros[1 << 16] = {};

int64_t PwriteAll(int fd, const uint8_t* p, size_t n, int64_t pos) {
  while (n > 0) {
    ssize_t w = pwrite(fd, p, n, pos);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    p += w;
    n -= static_cast<size_t>(w);
    pos += w;
  }
  return 0;
}

}  // namespace

namespace {

// ScanZeroPages over the pages that are not holes; holes count as zero.
size_t ScanAroundHoles(const uint8_t* pages, size_t page_size, size_t count, uint8_t* zero_out,
                       const uint8_t* holes) {
  size_t zeros = 0;
  for (size_t i = 0; i < count;) {
    size_t j = i;
    const uint8_t hole = holes[i];
    while (j < count && holes[j] == hole) j++;
    if (hole) {
      memset(zero_out + i, 1, j - i);
      zeros += j - i;
    } else {
      zeros += ScanZeroPages(pages + i * page_size, page_size, j - i, zero_out + i);
    }
    i = j;
  }
  return zeros;
}

}  // namespace

size_t AnalysePages(const uint8_t* pages, size_t page_size, size_t count, uint8_t* zero_out,
                    uint32_t* crc_out, const uint8_t* holes) {
  const size_t zeros = zero_out == nullptr ? 0
                       : holes == nullptr
                           ? ScanZeroPages(pages, page_size, count, zero_out)
                           : ScanAroundHoles(pages, page_size, count, zero_out, holes);
  if (crc_out == nullptr) return zeros;
  if (zeros == 0) {
    Crc32cPages(pages, page_size, count, crc_out);
    return zeros;
  }
  // A page found zero gets the CRC of a zero page without being read again.
  const uint32_t zc = ZeroPageCrc(page_size);
  for (size_t i = 0; i < count;) {
    if (zero_out[i]) {
      crc_out[i++] = zc;
      continue;
    }
    size_t j = i;
    while (j < count && !zero_out[j]) j++;
    Crc32cPages(pages + i * page_size, page_size, j - i, crc_out + i);
    i = j;
  }
  return zeros;
}

namespace {

// volatile: the signal handler reads it. A plain variable's store may be dropped or moved past
// a call the compiler knows does not read it (memcpy), leaving that call unguarded.
thread_local sigjmp_buf* volatile t_guard = nullptr;
struct sigaction g_previous_sigbus;

void OnSigbus(int, siginfo_t*, void*) {
  if (t_guard != nullptr) siglongjmp(*t_guard, 1);
  // Not a guarded scan: put the previous disposition back; the faulting
  // access repeats and is handled as it would have been without us.
  sigaction(SIGBUS, &g_previous_sigbus, nullptr);
}

}  // namespace

void InstallSigbusGuard() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa{};
    sa.sa_sigaction = OnSigbus;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, &g_previous_sigbus);
  });
}

int64_t RunGuarded(int64_t (*fn)(void*), void* arg) {
  InstallSigbusGuard();
  volatile int64_t result = 0;
  sigjmp_buf jb;
  if (sigsetjmp(jb, 1) == 0) {
    t_guard = &jb;
    result = fn(arg);
  } else {
    result = kShortRead;  // the mapped file shrank under the access
  }
  t_guard = nullptr;
  return result;
}

int64_t AnalysePagesGuarded(const uint8_t* pages, size_t page_size, size_t count, uint8_t* zero_out,
                            uint32_t* crc_out, const uint8_t* holes) {
  struct Args {
    const uint8_t* pages;
    size_t page_size, count;
    uint8_t* zero_out;
    uint32_t* crc_out;
    const uint8_t* holes;
  } a{pages, page_size, count, zero_out, crc_out, holes};
  return RunGuarded(
      [](void* p) -> int64_t {
        auto* x = static_cast<Args*>(p);
        return static_cast<int64_t>(
            AnalysePages(x->pages, x->page_size, x->count, x->zero_out, x->crc_out, x->holes));
      },
      &a);
}

int DataExtents(int fd, int64_t pos, int64_t len, std::vector<int64_t>* out, int64_t* data_until) {
  const int64_t end = pos + len;
  int64_t at = pos;
  if (data_until != nullptr) *data_until = 0;
  while (at < end) {
    const off_t data = lseek(fd, static_cast<off_t>(at), SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) return 0;  // only a hole from here to the end of the file
      if (errno == EINVAL || errno == EOPNOTSUPP) {
        out->push_back(at);  // no SEEK_DATA here: all of it is data
        out->push_back(end);
        if (data_until != nullptr) *data_until = end;
        return 0;
      }
      return -errno;
    }
    if (data >= end) return 0;
    off_t hole = lseek(fd, data, SEEK_HOLE);
    if (hole < 0) return -errno;
    if (data_until != nullptr) *data_until = hole;
    if (hole > end) hole = static_cast<off_t>(end);
    out->push_back(data);
    out->push_back(hole);
    at = hole;
  }
  return 0;
}

namespace {

int64_t ThreadNs() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<int64_t>(t.tv_sec) * 1000000000 + t.tv_nsec;
}

struct TouchArgs {
  const volatile uint8_t* base;  // the mapping, at byte `lo` of the file
  int64_t lo;
  const std::vector<int64_t>* pages;  // whole-page [start, end) pairs
  uint64_t sum;
};

}  // namespace

int ProbeImageAccess(int fd, const std::vector<int64_t>& extents, int64_t* map_ns,
                     int64_t* read_ns) {
  const int64_t os_page = sysconf(_SC_PAGESIZE);
  constexpr size_t kReadBuf = 512 * 1024;
  std::vector<int64_t> pages;  // the extents' whole pages
  for (size_t i = 0; i + 1 < extents.size(); i += 2) {
    const int64_t start = (extents[i] + os_page - 1) / os_page * os_page;
    const int64_t end = extents[i + 1] / os_page * os_page;
    if (end <= start) continue;
    pages.push_back(start);
    pages.push_back(end);
  }
  *map_ns = 0;
  *read_ns = 0;
  if (pages.empty()) return 0;
  const int64_t lo = *std::min_element(pages.begin(), pages.end());
  const int64_t hi = *std::max_element(pages.begin(), pages.end());
  std::vector<uint8_t> buf(kReadBuf);
  *map_ns = INT64_MAX;
  *read_ns = INT64_MAX;
  for (int round = 0; round < 2; round++) {
    // One mapping over all of them, as the sender maps whole windows, touched on the data only.
    const int64_t t0 = ThreadNs();
    const size_t len = static_cast<size_t>(hi - lo);
    void* m = mmap(nullptr, len, PROT_READ, MAP_SHARED, fd, static_cast<off_t>(lo));
    if (m == MAP_FAILED) return -errno;
    madvise(m, len, MADV_SEQUENTIAL);  // as ImageSource's windows are
    TouchArgs a{static_cast<const volatile uint8_t*>(m), lo, &pages, 0};
    const int64_t r = RunGuarded(
        [](void* arg) -> int64_t {
          auto* x = static_cast<TouchArgs*>(arg);
          const auto& p = *x->pages;
          for (size_t i = 0; i + 1 < p.size(); i += 2) {
            for (int64_t at = p[i]; at < p[i + 1]; at += 4096) x->sum += x->base[at - x->lo];
          }
          return 0;
        },
        &a);
    munmap(m, len);
    if (r < 0) return static_cast<int>(r);
    const int64_t t1 = ThreadNs();
    for (size_t i = 0; i + 1 < pages.size(); i += 2) {
      for (int64_t at = pages[i]; at < pages[i + 1];) {
        const size_t want = static_cast<size_t>(std::min<int64_t>(kReadBuf, pages[i + 1] - at));
        const ssize_t n = pread(fd, buf.data(), want, static_cast<off_t>(at));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -errno;
        if (n == 0) return static_cast<int>(kShortRead);
        at += n;
      }
    }
    const int64_t t2 = ThreadNs();
    *map_ns = std::min(*map_ns, t1 - t0);
    *read_ns = std::min(*read_ns, t2 - t1);
  }
  return 0;
}

namespace {

// Serialises writes to one file: concurrent buffered writers of a file would
// spin on its inode lock; a sleeping mutex costs nothing while waiting.
std::mutex g_file_locks[64];

// Walks the virtual concatenation of the pieces page by page.
class PageCursor {
 public:
  PageCursor(const ByteSpans& pieces, size_t page_size)
      : pieces_(pieces), ps_(page_size), bounce_(page_size) {}

  // Pointer to the next page; a page split across pieces is assembled in a bounce buffer.
  const uint8_t* Next() {
    while (piece_ < pieces_.size() && at_ == pieces_[piece_].second) {
      piece_++;
      at_ = 0;
    }
    const auto& p = pieces_[piece_];
    if (p.second - at_ >= ps_) {
      const uint8_t* r = p.first + at_;
      at_ += ps_;
      return r;
    }
    size_t filled = 0;
    while (filled < ps_) {
      const auto& q = pieces_[piece_];
      const size_t n = std::min(ps_ - filled, q.second - at_);
      std::memcpy(bounce_.data() + filled, q.first + at_, n);
      filled += n;
      at_ += n;
      if (at_ == q.second) {
        piece_++;
        at_ = 0;
      }
    }
    return bounce_.data();
  }

  // How many whole pages follow contiguously in the current piece.
  size_t ContiguousPages() const {
    if (piece_ >= pieces_.size()) return 0;
    return (pieces_[piece_].second - at_) / ps_;
  }
  const uint8_t* Here() const { return pieces_[piece_].first + at_; }
  void Skip(size_t pages) { at_ += pages * ps_; }

 private:
  const ByteSpans& pieces_;
  size_t ps_;
  std::vector<uint8_t> bounce_;
  size_t piece_ = 0;
  size_t at_ = 0;
};

// iovecs for bytes [from, from + len) of the concatenated pieces.
void Gather(const ByteSpans& pieces, size_t from, size_t len, std::vector<iovec>* out) {
  out->clear();
  size_t base = 0;
  for (const auto& p : pieces) {
    if (len == 0) break;
    if (from < base + p.second) {
      const size_t off = from > base ? from - base : 0;
      const size_t n = std::min(len, p.second - off);
      out->push_back({const_cast<uint8_t*>(p.first + off), n});
      from += n;
      len -= n;
    }
    base += p.second;
  }
}

int64_t PwritevAll(int fd, std::vector<iovec>* iov, int64_t pos) {
  size_t i = 0;
  while (i < iov->size()) {
    const int cnt = static_cast<int>(std::min<size_t>(iov->size() - i, IOV_MAX));
    ssize_t w = pwritev(fd, iov->data() + i, cnt, pos);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    pos += w;
    // Drop what was written; a short write resumes mid-vector.
    size_t left = static_cast<size_t>(w);
    while (i < iov->size() && left >= (*iov)[i].iov_len) left -= (*iov)[i++].iov_len;
    if (left > 0) {
      (*iov)[i].iov_base = static_cast<uint8_t*>((*iov)[i].iov_base) + left;
      (*iov)[i].iov_len -= left;
    }
  }
  return 0;
}

}  // namespace

int64_t WritePacketJob::Run() {
  const int64_t ps = static_cast<int64_t>(page_size);
  // Per-page CRC; whole pages inside one piece go through the interleaved path.
  PageCursor cur(pages, page_size);
  for (size_t j = 0; j < normal;) {
    const size_t run = std::min(cur.ContiguousPages(), normal - j);
    if (run > 0) {
      Crc32cPages(cur.Here(), page_size, run, crc_out + j);
      // A last page that runs past the block end must carry only zero padding.
      for (size_t k = j; k < j + run; k++) {
        const int64_t off = static_cast<int64_t>(offsets[k]);
        if (off + ps > block_size) {
          const size_t keep = static_cast<size_t>(block_size - off);
          if (!BufferIsZero(cur.Here() + (k - j) * page_size + keep, page_size - keep)) {
            bad_page = static_cast<int64_t>(k);
            return kBadPadding;
          }
        }
      }
      cur.Skip(run);
      j += run;
      continue;
    }
    const uint8_t* page = cur.Next();
    crc_out[j] = Crc32c(page, page_size);
    const int64_t off = static_cast<int64_t>(offsets[j]);
    if (off + ps > block_size) {
      const size_t keep = static_cast<size_t>(block_size - off);
      if (!BufferIsZero(page + keep, page_size - keep)) {
        bad_page = static_cast<int64_t>(j);
        return kBadPadding;
      }
    }
    j++;
  }
  std::lock_guard<std::mutex> lock(g_file_locks[static_cast<unsigned>(fd) % 64]);
  // Runs of consecutive offsets are contiguous in the payload too: one pwritev each.
  std::vector<iovec> iov;
  for (size_t j = 0; j < normal;) {
    size_t k = j + 1;
    while (k < normal && offsets[k] == offsets[k - 1] + static_cast<double>(ps)) k++;
    const int64_t pos = static_cast<int64_t>(offsets[j]);
    int64_t len = static_cast<int64_t>(k - j) * ps;
    if (pos + len > block_size) len = block_size - pos;
    if (len > 0) {
      Gather(pages, j * page_size, static_cast<size_t>(len), &iov);
      int64_t rc = PwritevAll(fd, &iov, pos);
      if (rc < 0) return rc;
    }
    j = k;
  }
  if (write_zeros) {
    for (size_t j = normal; j < normal + zero; j++) {
      const int64_t pos = static_cast<int64_t>(offsets[j]);
      int64_t left = ps;
      if (pos + left > block_size) left = block_size - pos;
      for (int64_t at = 0; at < left;) {
        const int64_t n = left - at < static_cast<int64_t>(sizeof(kZeros))
                              ? left - at
                              : static_cast<int64_t>(sizeof(kZeros));
        int64_t rc = PwriteAll(fd, kZeros, static_cast<size_t>(n), pos + at);
        if (rc < 0) return rc;
        at += n;
      }
    }
  }
  return 0;
}

}  // namespace mfd
