// DSA zero-page detection: one batch of compare-pattern (COMPVAL, pattern 0)
// descriptors per packet, submitted to a work queue and polled to completion
// on the calling (libuv pool) thread. Work queues are behind one interface so
// the batch logic runs the same against a real device portal (ENQCMD for a
// shared queue, MOVDIR64B for a dedicated one), the kernel's write()
// submission, or the fake queue that tests use (addon/test/dsa_fake.cc, in the
// test addon). Nothing here pretends a fake is hardware: every queue says what
// it is.
#ifndef MFD_DSA_H_
#define MFD_DSA_H_

#include <linux/idxd.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

namespace mfd {
namespace dsa {

static_assert(sizeof(dsa_hw_desc) == 64, "DSA descriptors are 64 bytes");
static_assert(sizeof(dsa_completion_record) == 32, "DSA completion records are 32 bytes");

enum class Submit { kAccepted, kRetry, kError };

class WorkQueue {
 public:
  virtual ~WorkQueue() = default;
  // Hands one descriptor (plain or batch) to the device. kRetry: not accepted
  // (a shared queue is full); kError: the queue is unusable (*err = errno).
  virtual Submit SubmitOne(const dsa_hw_desc* desc, int* err) = 0;
  // Whether batch descriptors may be submitted (the write() path may not).
  virtual bool CanBatch() const = 0;
  // Largest batch the queue takes (its max_batch_size).
  virtual size_t MaxBatch() const = 0;
  // Descriptors the queue holds at once; 0 = the queue says itself (ENQCMD).
  virtual size_t Credits() const = 0;
  // "enqcmd", "movdir64b", "write" or "fake".
  virtual const char* Submission() const = 0;
  // True only for a real device.
  virtual bool IsHardware() const = 0;
};

// Per-call counts, in the order of ScanCounts::kNames.
struct ScanCounts {
  uint64_t device_pages = 0;      // decided by the device alone
  uint64_t cpu_fault_pages = 0;   // page fault on the device, finished on the CPU
  uint64_t cpu_error_pages = 0;   // descriptor failed, checked on the CPU
  uint64_t cpu_busy_pages = 0;    // queue stayed busy past the retries
  uint64_t cpu_failed_pages = 0;  // the device had failed: CPU for the rest of the run
  uint64_t submit_retries = 0;
  uint64_t batches = 0;
  uint64_t descriptors = 0;
  static constexpr size_t kFields = 8;
  void Store(double* out) const;
};

struct Device {
  std::string spec;
  std::unique_ptr<WorkQueue> wq;
  std::atomic<bool> failed{false};
  std::atomic<int64_t> in_flight{0};
  std::mutex mu;
  std::string fail_reason;  // under mu
  void Fail(const std::string& why);
  std::string FailReason();
};

// Opens `path` (a /dev/dsa/wqX.Y character device) as a work queue: maps the
// portal and uses ENQCMD (shared) or MOVDIR64B (dedicated) when the CPU has
// them, else falls back to write() submission. sysfs_root locates the queue's
// mode, size and max_batch_size. Returns null with *why set on failure.
std::unique_ptr<WorkQueue> OpenHardwareQueue(const std::string& path, const std::string& sysfs_root,
                                             std::string* why);

// Analyses `count` pages: zero flags and per-page CRC-32C, as AnalysePages
// does, with the zero check on the device. Returns the zero count, or
// kShortRead when the mapped image shrank. Never fails because of the device:
// whatever it does not finish is finished on the CPU, and counted.
// A completion that takes longer than timeout_ms fails the device.
int64_t Scan(Device* dev, const uint8_t* pages, size_t page_size, size_t count, uint8_t* zero_out,
             uint32_t* crc_out, ScanCounts* counts, int timeout_ms);

// Submits a NOOP and waits for its completion: the real probe of a queue.
bool Probe(WorkQueue* wq, int timeout_ms, std::string* why);

}  // namespace dsa
}  // namespace mfd

#endif  // MFD_DSA_H_
