// A byte range made of several caller buffers (e.g. socket chunks), in order.
#ifndef MFD_SPANS_H_
#define MFD_SPANS_H_

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace mfd {
using ByteSpans = std::vector<std::pair<const uint8_t*, size_t>>;
}  // namespace mfd

#endif  // MFD_SPANS_H_
