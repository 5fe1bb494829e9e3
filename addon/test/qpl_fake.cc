// A software stand-in for IAA in tests ("fake-iaa", never reported as
// hardware), built into the test addon (mfd_test.node), which only tests
// load: the qpl method's page logic (addon/qpl_codec.cc) runs against it on
// a machine without IAA.
#include <zlib.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

#include "fakes.h"
#include "qpl_engine.h"

namespace mfd {
namespace qpl {
namespace {

// Deflates like the software path; answers busy or fails on the pattern
// its options give (fakes.h).
class FakeEngine : public HwEngine {
 public:
  FakeEngine(unsigned busy, unsigned error_every) : busy_(busy), error_every_(error_every) {}
  HwStatus Compress(const uint8_t* page, size_t ps, uint8_t* out, size_t cap, size_t* len,
                    int* status) override {
    HwStatus s = Gate(status);
    if (s != HwStatus::kOk) return s;
    z_stream& z = Deflater();
    deflateReset(&z);
    z.next_in = const_cast<Bytef*>(page);
    z.avail_in = static_cast<uInt>(ps);
    z.next_out = out;
    z.avail_out = static_cast<uInt>(cap);
    if (deflate(&z, Z_FINISH) != Z_STREAM_END) return HwStatus::kTooBig;
    *len = cap - z.avail_out;
    return HwStatus::kOk;
  }
  HwStatus Decompress(const uint8_t* in, size_t len, uint8_t* out, size_t ps,
                      int* status) override {
    HwStatus s = Gate(status);
    if (s != HwStatus::kOk) return s;
    uLongf n = ps;
    z_stream z{};
    inflateInit2(&z, -15);
    z.next_in = const_cast<Bytef*>(in);
    z.avail_in = static_cast<uInt>(len);
    z.next_out = out;
    z.avail_out = static_cast<uInt>(n);
    const int rc = inflate(&z, Z_FINISH);
    const bool ok = rc == Z_STREAM_END && z.avail_out == 0 && z.avail_in == 0;
    inflateEnd(&z);
    return ok ? HwStatus::kOk : HwStatus::kError;
  }
  const char* Name() const override { return "fake-iaa"; }
  bool IsHardware() const override { return false; }

 private:
  HwStatus Gate(int* status) {
    const uint64_t n = calls_.fetch_add(1);
    if (busy_ > 0 && n % (busy_ + 1) != busy_) {
      *status = 5;  // QPL_STS_QUEUES_ARE_BUSY_ERR
      return HwStatus::kBusy;
    }
    const uint64_t job = jobs_.fetch_add(1) + 1;
    if (error_every_ > 0 && job % error_every_ == 0) {
      *status = 303;  // QPL_STS_INTL_PAGE_FAULT
      return HwStatus::kError;
    }
    *status = 0;
    return HwStatus::kOk;
  }
  static z_stream& Deflater() {
    thread_local struct D {
      z_stream z{};
      D() { deflateInit2(&z, 1, Z_DEFLATED, -12, 8, Z_DEFAULT_STRATEGY); }
      ~D() { deflateEnd(&z); }
    } d;
    return d.z;
  }
  unsigned busy_, error_every_;
  std::atomic<uint64_t> calls_{0}, jobs_{0};
};

}  // namespace

std::unique_ptr<HwEngine> OpenFakeEngine(const std::string& options) {
  unsigned busy = 0, error_every = 0;
  std::sscanf(options.c_str(), "busy=%u,error_every=%u", &busy, &error_every);
  return std::make_unique<FakeEngine>(busy, error_every);
}

}  // namespace qpl
}  // namespace mfd
