#include "packet_io.h"

#include <cerrno>
#include <cstring>
#include <unistd.h>

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

size_t AnalysePages(const uint8_t* pages, size_t page_size, size_t count, uint8_t* zero_out, uint32_t* crc_out) {
  const size_t zeros = zero_out != nullptr ? ScanZeroPages(pages, page_size, count, zero_out) : 0;
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

int64_t ReadPacketJob::Run() {
  size_t done = 0;
  while (done < length) {
    ssize_t r = pread(fd, slab + done, length - done, position + static_cast<int64_t>(done));
    if (r < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (r == 0) return kShortRead;
    done += static_cast<size_t>(r);
  }
  const size_t total = page_count * page_size;
  if (length < total) std::memset(slab + length, 0, total - length);
  const size_t zeros = AnalysePages(slab, page_size, page_count, zero_out, crc_out);
  return static_cast<int64_t>(zeros);
}

int64_t WritePacketJob::Run() {
  const int64_t ps = static_cast<int64_t>(page_size);
  Crc32cPages(pages, page_size, normal, crc_out);
  // A last page that runs past the block end must carry only zero padding.
  for (size_t j = 0; j < normal; j++) {
    const int64_t off = static_cast<int64_t>(offsets[j]);
    if (off + ps > block_size) {
      const size_t keep = static_cast<size_t>(block_size - off);
      if (!BufferIsZero(pages + j * page_size + keep, page_size - keep)) {
        bad_page = static_cast<int64_t>(j);
        return kBadPadding;
      }
    }
  }
  // Runs of consecutive offsets are contiguous in `pages` too: one pwrite each.
  for (size_t j = 0; j < normal;) {
    size_t k = j + 1;
    while (k < normal && offsets[k] == offsets[k - 1] + static_cast<double>(ps)) k++;
    const int64_t pos = static_cast<int64_t>(offsets[j]);
    int64_t len = static_cast<int64_t>(k - j) * ps;
    if (pos + len > block_size) len = block_size - pos;
    if (len > 0) {
      int64_t rc = PwriteAll(fd, pages + j * page_size, static_cast<size_t>(len), pos);
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
        const int64_t n = left - at < static_cast<int64_t>(sizeof(kZeros)) ? left - at : static_cast<int64_t>(sizeof(kZeros));
        int64_t rc = PwriteAll(fd, kZeros, static_cast<size_t>(n), pos + at);
        if (rc < 0) return rc;
        at += n;
      }
    }
  }
  return 0;
}

}  // namespace mfd
