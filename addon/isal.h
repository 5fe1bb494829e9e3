// ISA-L (libisal.so.2), found at run time: the addon is compiled against
// ISA-L's headers (libisal-dev) but does not link the library; the first use
// dlopen()s it and resolves the functions below. A host without it, or with a
// libisal.so.2 that lacks one of them, runs the built-in paths (zlib, the
// addon's own CRC-32C), so one binary (the npm package's prebuilt one) serves
// hosts with and without ISA-L. Users: zlib_stream.cc (the zlib method),
// qz_members.cc (qatzip's software members), crc32c.cc (crc32_iscsi).
//
// MFD_ISAL_LIBRARY names another file to load (a self-built ISA-L), or "off"
// keeps ISA-L unused.
#ifndef MFD_ISAL_H_
#define MFD_ISAL_H_

#include <cstdint>

#ifdef MFD_HAVE_ISAL
#include <isa-l.h>
#include <isa-l/igzip_lib.h>
#endif

namespace mfd {

#ifdef MFD_HAVE_ISAL
// The functions the addon calls, named as ISA-L names them.
struct IsalApi {
  decltype(&::isal_deflate_init) isal_deflate_init;
  decltype(&::isal_deflate) isal_deflate;
  decltype(&::isal_deflate_stateless_init) isal_deflate_stateless_init;
  decltype(&::isal_deflate_stateless) isal_deflate_stateless;
  decltype(&::isal_inflate_init) isal_inflate_init;
  decltype(&::isal_inflate) isal_inflate;
  decltype(&::crc32_gzip_refl) crc32_gzip_refl;
  decltype(&::crc32_iscsi) crc32_iscsi;
};

// Bytes of level buffer isal_deflate needs at `level` (1..3).
inline uint32_t IsalLevelBufSize(int level) {
  static const uint32_t kLevelBuf[] = {0, ISAL_DEF_LVL1_DEFAULT, ISAL_DEF_LVL2_DEFAULT,
                                       ISAL_DEF_LVL3_DEFAULT};
  return kLevelBuf[level];
}
#else
struct IsalApi;
#endif

// ISA-L's functions, or nullptr when it is not available (IsalUnavailable() says why).
const IsalApi* Isal();

// Why Isal() is nullptr ("" when it is not): no headers at build time, the
// library not found, or a function missing from it.
const char* IsalUnavailable();

// The loaded library's version ("2.30.0") and file, "" when not loaded.
const char* IsalVersion();
const char* IsalFile();

}  // namespace mfd

#endif  // MFD_ISAL_H_
