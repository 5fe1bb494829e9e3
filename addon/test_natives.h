// The test-only natives (addon/test/, built as their own addon, mfd_test.node)
// reach the product addon through this table and nothing else: the product
// never loads mfd_test.node; a test loads it and hands its table to the
// product (_installTestNatives). Until then "fake:" DSA queues and the fake
// IAA engine are refused, saying that they are test code.
#ifndef MFD_TEST_NATIVES_H_
#define MFD_TEST_NATIVES_H_

#include <cstdint>
#include <memory>
#include <string>

#include "dsa.h"
#include "qpl_engine.h"

namespace mfd {

struct TestNatives {
  static constexpr uint32_t kMagic = 0x6d666474;  // "mfdt"
  // Bumped whenever this table changes: both addons are built from one tree.
  static constexpr uint32_t kVersion = 1;
  uint32_t magic;
  uint32_t version;
  // Filled in by the product when the table is installed: what the stand-ins
  // borrow from it (the SIGBUS guard of packet_io.cc, which one process must
  // have once).
  int64_t (*run_guarded)(int64_t (*fn)(void*), void* arg);
  // The software stand-in for a DSA work queue (addon/test/dsa_fake.cc):
  // null with *why set on a bad option.
  std::unique_ptr<dsa::WorkQueue> (*open_fake_dsa)(const std::string& options, std::string* why);
  // The software stand-in for IAA (addon/test/qpl_fake.cc), "busy=N,error_every=K".
  std::unique_ptr<qpl::HwEngine> (*open_fake_qpl)(const std::string& options);
};

// The table a test installed, or null (product side).
const TestNatives* InstalledTestNatives();

}  // namespace mfd

#endif  // MFD_TEST_NATIVES_H_
