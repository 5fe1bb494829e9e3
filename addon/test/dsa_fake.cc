// A software stand-in for a DSA work queue, for tests: a device thread takes
// submitted descriptors in order and executes NOOP, BATCH and COMPVAL the way
// the device does (8-byte words against the pattern; bytes_completed = offset
// of the first mismatching word), writing completion records with the status
// last. Faults are injected by option so the batch, fault and fallback logic
// in dsa.cc can be exercised on a machine without DSA. It reports itself as
// "fake", never as hardware.
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <string>
#include <thread>

#include "dsa.h"
#include "fakes.h"
#include "packet_io.h"

namespace mfd {
namespace dsa {
namespace {

struct FakeOptions {
  size_t max_batch = 32;
  unsigned busy = 0;         // "retry" answers before each acceptance
  unsigned fault_every = 0;  // every Nth COMPVAL page-faults at fault_at
  size_t fault_at = 2048;
  unsigned error_every = 0;  // every Nth COMPVAL fails (translation failure)
  unsigned fail_after = 0;   // after N descriptors, every one reports a hardware error
  bool stall = false;        // never completes anything
  size_t size = 0;           // credits; 0 = behaves as a shared queue
};

bool ParseOptions(const std::string& s, FakeOptions* o, std::string* why) {
  size_t at = 0;
  while (at < s.size()) {
    size_t end = s.find(',', at);
    if (end == std::string::npos) end = s.size();
    const std::string kv = s.substr(at, end - at);
    at = end + 1;
    if (kv.empty()) continue;
    const size_t eq = kv.find('=');
    const std::string key = kv.substr(0, eq);
    const std::string val = eq == std::string::npos ? "1" : kv.substr(eq + 1);
    char* stop = nullptr;
    const unsigned long long v = std::strtoull(val.c_str(), &stop, 10);
    if (val.empty() || *stop != '\0') {
      *why = "fake work queue: option " + key + " needs a number, received \"" + val + "\"";
      return false;
    }
    if (key == "max_batch" && v >= 1 && v <= 4096)
      o->max_batch = v;
    else if (key == "busy")
      o->busy = static_cast<unsigned>(v);
    else if (key == "fault_every")
      o->fault_every = static_cast<unsigned>(v);
    else if (key == "fault_at")
      o->fault_at = v;
    else if (key == "error_every")
      o->error_every = static_cast<unsigned>(v);
    else if (key == "fail_after")
      o->fail_after = static_cast<unsigned>(v);
    else if (key == "stall")
      o->stall = v != 0;
    else if (key == "size")
      o->size = v;
    else {
      *why = "fake work queue: unknown option \"" + key + "\"";
      return false;
    }
  }
  return true;
}

void Complete(dsa_completion_record* r, uint8_t status, uint8_t result, uint32_t bytes,
              uint64_t fault_addr) {
  r->result = result;
  r->bytes_completed = bytes;
  r->fault_addr = fault_addr;
  __atomic_store_n(&r->status, status, __ATOMIC_RELEASE);
}

struct CompareArgs {
  const uint8_t* src;
  size_t len;
  size_t mismatch;  // offset of the first non-zero 8-byte word, or len
};

int64_t CompareWords(void* p) {
  auto* a = static_cast<CompareArgs*>(p);
  size_t i = 0;
  for (; i + 8 <= a->len; i += 8) {
    uint64_t w;
    std::memcpy(&w, a->src + i, 8);
    if (w != 0) break;
  }
  a->mismatch = i;
  if (i + 8 <= a->len) return 0;  // stopped at a non-zero word
  for (size_t j = i; j < a->len; j++) {
    if (a->src[j] != 0) return 0;  // a non-zero byte in the last, partial word
  }
  a->mismatch = a->len;
  return 0;
}

class FakeQueue : public WorkQueue {
 public:
  explicit FakeQueue(const FakeOptions& o)
      : o_(o), busy_left_(o.busy), thread_([this] { Run(); }) {}
  ~FakeQueue() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }
  Submit SubmitOne(const dsa_hw_desc* desc, int*) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (busy_left_ > 0) {
      busy_left_--;
      return Submit::kRetry;
    }
    busy_left_ = o_.busy;
    queue_.push_back(*desc);  // the device copies the 64 bytes at submission
    cv_.notify_one();
    return Submit::kAccepted;
  }
  bool CanBatch() const override { return true; }
  size_t MaxBatch() const override { return o_.max_batch; }
  size_t Credits() const override { return o_.size; }
  const char* Submission() const override { return "fake"; }
  bool IsHardware() const override { return false; }

 private:
  void Run() {
    for (;;) {
      dsa_hw_desc d;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
        if (stop_) return;
        d = queue_.front();
        queue_.pop_front();
      }
      if (o_.stall) continue;
      Execute(d);
    }
  }

  // Returns the completion status it wrote.
  uint8_t Execute(const dsa_hw_desc& d) {
    auto* rec = reinterpret_cast<dsa_completion_record*>(static_cast<uintptr_t>(d.completion_addr));
    const bool broken = o_.fail_after > 0 && executed_ >= o_.fail_after;
    if (d.opcode == DSA_OPCODE_BATCH) {
      const auto* list =
          reinterpret_cast<const dsa_hw_desc*>(static_cast<uintptr_t>(d.desc_list_addr));
      if (d.desc_count < 2 || d.desc_count > o_.max_batch) {
        Complete(rec, DSA_COMP_DESC_CNT_ERANGE, 0, 0, 0);
        return DSA_COMP_DESC_CNT_ERANGE;
      }
      bool all_ok = true;
      for (uint32_t i = 0; i < d.desc_count; i++) all_ok &= Execute(list[i]) == DSA_COMP_SUCCESS;
      Complete(rec, all_ok ? DSA_COMP_SUCCESS : DSA_COMP_BATCH_FAIL, 0, d.desc_count, 0);
      return all_ok ? DSA_COMP_SUCCESS : DSA_COMP_BATCH_FAIL;
    }
    executed_++;
    if (broken) {
      Complete(rec, DSA_COMP_HW_ERR1, 0, 0, 0);
      return DSA_COMP_HW_ERR1;
    }
    if (d.opcode == DSA_OPCODE_NOOP) {
      Complete(rec, DSA_COMP_SUCCESS, 0, 0, 0);
      return DSA_COMP_SUCCESS;
    }
    if (d.opcode != DSA_OPCODE_COMPVAL) {
      Complete(rec, DSA_COMP_BAD_OPCODE, 0, 0, 0);
      return DSA_COMP_BAD_OPCODE;
    }
    compvals_++;
    if (o_.error_every > 0 && compvals_ % o_.error_every == 0) {
      Complete(rec, DSA_COMP_TRANSLATION_FAIL, 0, 0, 0);
      return DSA_COMP_TRANSLATION_FAIL;
    }
    const auto* src = reinterpret_cast<const uint8_t*>(static_cast<uintptr_t>(d.src_addr));
    const bool fault =
        o_.fault_every > 0 && compvals_ % o_.fault_every == 0 && o_.fault_at < d.xfer_size;
    CompareArgs a{src, fault ? o_.fault_at : d.xfer_size, 0};
    if (RunGuarded(CompareWords, &a) == kShortRead) {
      // Like the device reading an unmapped page: a fault at the start.
      Complete(rec, DSA_COMP_PAGE_FAULT_NOBOF, 0, 0, d.src_addr);
      return DSA_COMP_PAGE_FAULT_NOBOF;
    }
    if (a.mismatch < a.len) {
      Complete(rec, DSA_COMP_SUCCESS, 1, static_cast<uint32_t>(a.mismatch), 0);
      return DSA_COMP_SUCCESS;
    }
    if (fault) {
      Complete(rec, DSA_COMP_PAGE_FAULT_NOBOF, 0, static_cast<uint32_t>(o_.fault_at),
               d.src_addr + o_.fault_at);
      return DSA_COMP_PAGE_FAULT_NOBOF;
    }
    Complete(rec, DSA_COMP_SUCCESS, 0, d.xfer_size, 0);
    return DSA_COMP_SUCCESS;
  }

  FakeOptions o_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<dsa_hw_desc> queue_;
  unsigned busy_left_;
  bool stop_ = false;
  uint64_t executed_ = 0;  // device thread only
  uint64_t compvals_ = 0;  // device thread only
  std::thread thread_;     // last: starts after the members it uses
};

}  // namespace

std::unique_ptr<WorkQueue> OpenFakeQueue(const std::string& options, std::string* why) {
  FakeOptions o;
  if (!ParseOptions(options, &o, why)) return nullptr;
  return std::make_unique<FakeQueue>(o);
}

}  // namespace dsa
}  // namespace mfd
