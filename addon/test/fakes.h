// The stand-ins of the test addon (mfd_test.node): built from addon/test/
// into an addon of their own, which the product never loads. A test hands
// them to the product through the TestNatives table (addon/test_natives.h).
#ifndef MFD_TEST_FAKES_H_
#define MFD_TEST_FAKES_H_

#include <memory>
#include <string>

#include "dsa.h"
#include "qpl_engine.h"

namespace mfd {
namespace dsa {

// The software stand-in (dsa_fake.cc); options "key=value,...": max_batch,
// busy (retries before each acceptance), fault_every / fault_at (a page fault
// at that byte on every Nth descriptor), error_every (a failed descriptor),
// fail_after (every descriptor fails after that many: a broken device),
// stall (never completes). Returns null with *why set on a bad option.
std::unique_ptr<WorkQueue> OpenFakeQueue(const std::string& options, std::string* why);

}  // namespace dsa

namespace qpl {

// The fake IAA engine (qpl_fake.cc): deflates like the software path, and
// answers busy or fails on the pattern its options give (busy=N: N busy
// answers before each success; error_every=K: every Kth job fails).
std::unique_ptr<HwEngine> OpenFakeEngine(const std::string& options);

}  // namespace qpl
}  // namespace mfd

#endif  // MFD_TEST_FAKES_H_
