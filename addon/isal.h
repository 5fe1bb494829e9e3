// What the addon's two users of ISA-L's igzip share (zlib_stream.cc: the zlib
// method; qz_members.cc: qatzip's software members).
#ifndef MFD_ISAL_H_
#define MFD_ISAL_H_

#include <cstdint>

#ifdef MFD_HAVE_ISAL
#include <isa-l.h>
#include <isa-l/igzip_lib.h>
#endif

namespace mfd {

constexpr const char* kNoIsal = "this build has no ISA-L (libisal-dev was not found when the addon was built)";

#ifdef MFD_HAVE_ISAL
// Bytes of level buffer isal_deflate needs at `level` (1..3).
inline uint32_t IsalLevelBufSize(int level) {
  static const uint32_t kLevelBuf[] = {0, ISAL_DEF_LVL1_DEFAULT, ISAL_DEF_LVL2_DEFAULT, ISAL_DEF_LVL3_DEFAULT};
  return kLevelBuf[level];
}
#endif

}  // namespace mfd

#endif  // MFD_ISAL_H_
