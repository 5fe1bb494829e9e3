// The qpl method's per-page hardware engine. The page logic in qpl_codec.cc
// (QEMU's: retry a busy queue 3 times, then the software path for that page,
// then the raw page) talks to the engine only through this interface, so the
// same code drives Intel IAA through libqpl (qpl_hw.cc, compiled when
// pkg-config finds qpl) and the fake engine the tests install.
#ifndef MFD_QPL_ENGINE_H_
#define MFD_QPL_ENGINE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace mfd {
namespace qpl {

enum class HwStatus { kOk, kBusy, kTooBig, kError };

class HwEngine {
 public:
  virtual ~HwEngine() = default;
  // One page as raw DEFLATE into out (cap = page_size - 1). kTooBig: it does
  // not fit (the page goes raw). Must be safe to call from several threads.
  virtual HwStatus Compress(const uint8_t* page, size_t page_size, uint8_t* out, size_t cap,
                            size_t* len, int* status) = 0;
  // One page's raw DEFLATE of `len` bytes into exactly page_size bytes.
  virtual HwStatus Decompress(const uint8_t* in, size_t len, uint8_t* out, size_t page_size,
                              int* status) = 0;
  // "iaa" for the device, "qpl-software" for libqpl's software path, "fake-iaa" for the test
  // engine.
  virtual const char* Name() const = 0;
  virtual bool IsHardware() const = 0;
};

// IAA through libqpl: a hardware job per thread, probed with qpl_init_job on
// the hardware path. Null with *why and the QPL *status (-1: not compiled)
// when not compiled or no device answers.
std::unique_ptr<HwEngine> OpenQplHardware(std::string* why, int* status);
// libqpl's software path (qpl_path_software), a job per thread; null with
// *why when not compiled.
std::unique_ptr<HwEngine> OpenQplSoftware(std::string* why);
// libqpl's version, or "" when the addon was built without it.
std::string QplLibraryVersion();

}  // namespace qpl
}  // namespace mfd

#endif  // MFD_QPL_ENGINE_H_
