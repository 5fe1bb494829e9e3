// DSA zero-page detection (see dsa.h): hardware work queues, the per-packet
// batch scan with its CPU fallbacks, the probe, and the N-API surface.
#include "dsa.h"

#include <fcntl.h>
#include <napi.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <thread>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "common.h"
#include "crc32c.h"
#include "packet_io.h"
#include "test_natives.h"
#include "zero_page.h"

namespace mfd {
namespace dsa {

void ScanCounts::Store(double* out) const {
  const uint64_t v[kFields] = {device_pages,     cpu_fault_pages, cpu_error_pages, cpu_busy_pages,
                               cpu_failed_pages, submit_retries,  batches,         descriptors};
  for (size_t i = 0; i < kFields; i++) out[i] = static_cast<double>(v[i]);
}

void Device::Fail(const std::string& why) {
  std::lock_guard<std::mutex> lock(mu);
  if (!failed.load()) fail_reason = why;
  failed.store(true);
}

std::string Device::FailReason() {
  std::lock_guard<std::mutex> lock(mu);
  return fail_reason;
}

namespace {

// ENQCMD retries on a busy shared queue before that unit goes to the CPU.
constexpr int kSubmitRetries = 1000;

inline void Pause() {
#if defined(__x86_64__)
  _mm_pause();
#endif
}

inline void StoreFence() {
#if defined(__x86_64__)
  _mm_sfence();
#else
  std::atomic_thread_fence(std::memory_order_seq_cst);
#endif
}

#if defined(__x86_64__)
// The submission instructions, each with its own target attribute so the rest
// of the addon needs no special compiler flags; only called after the CPUID check.
__attribute__((target("enqcmd"))) int Enqcmd(void* portal, const void* desc) {
  return _enqcmd(portal, desc);
}
__attribute__((target("movdir64b"))) void Movdir64b(void* portal, const void* desc) {
  _movdir64b(portal, desc);
}

bool CpuHas(int ecx_bit) {
  unsigned a = 0, b = 0, c = 0, d = 0;
  __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(0));
  return (c >> ecx_bit) & 1;
}
constexpr int kMovdir64bBit = 28;
constexpr int kEnqcmdBit = 29;
#endif

std::string ReadSysfs(const std::string& file) {
  std::ifstream in(file);
  std::string s;
  std::getline(in, s);
  return s;
}

size_t ReadSysfsSize(const std::string& file, size_t fallback) {
  const std::string s = ReadSysfs(file);
  char* end = nullptr;
  const unsigned long long v = std::strtoull(s.c_str(), &end, 10);
  return (s.empty() || end == s.c_str() || v == 0) ? fallback : static_cast<size_t>(v);
}

// A mapped portal: the instructions write the descriptor straight to the device.
class PortalQueue : public WorkQueue {
 public:
  PortalQueue(void* portal, bool shared, size_t size, size_t max_batch)
      : portal_(portal), shared_(shared), size_(size), max_batch_(max_batch) {}
  ~PortalQueue() override { munmap(portal_, 4096); }
  Submit SubmitOne(const dsa_hw_desc* desc, int*) override {
#if defined(__x86_64__)
    StoreFence();  // the descriptor and its zeroed completion record are visible first
    if (shared_) return Enqcmd(portal_, desc) == 0 ? Submit::kAccepted : Submit::kRetry;
    Movdir64b(portal_, desc);
    return Submit::kAccepted;
#else
    (void)desc;
    return Submit::kError;
#endif
  }
  bool CanBatch() const override { return true; }
  size_t MaxBatch() const override { return max_batch_; }
  size_t Credits() const override { return shared_ ? 0 : size_; }
  const char* Submission() const override { return shared_ ? "enqcmd" : "movdir64b"; }
  bool IsHardware() const override { return true; }

 private:
  void* portal_;
  bool shared_;
  size_t size_;
  size_t max_batch_;
};

// The kernel submits for us (Linux 6.9.1+ when mapping the portal is refused):
// plain descriptors only, no batches.
class WriteQueue : public WorkQueue {
 public:
  WriteQueue(int fd, bool shared, size_t size) : fd_(fd), shared_(shared), size_(size) {}
  ~WriteQueue() override { close(fd_); }
  Submit SubmitOne(const dsa_hw_desc* desc, int* err) override {
    for (;;) {
      const ssize_t n = write(fd_, desc, sizeof(*desc));
      if (n == static_cast<ssize_t>(sizeof(*desc))) return Submit::kAccepted;
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EBUSY)) return Submit::kRetry;
      *err = n < 0 ? errno : EIO;
      return Submit::kError;
    }
  }
  bool CanBatch() const override { return false; }
  size_t MaxBatch() const override { return 1; }
  size_t Credits() const override { return shared_ ? 0 : size_; }
  const char* Submission() const override { return "write"; }
  bool IsHardware() const override { return true; }

 private:
  int fd_;
  bool shared_;
  size_t size_;
};

}  // namespace

std::unique_ptr<WorkQueue> OpenHardwareQueue(const std::string& path, const std::string& sysfs_root,
                                             std::string* why) {
#if !defined(__x86_64__)
  *why = "DSA needs x86-64";
  return nullptr;
#else
  const int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    *why = "open " + path + ": " + std::strerror(errno);
    return nullptr;
  }
  struct stat st{};
  if (fstat(fd, &st) != 0 || !S_ISCHR(st.st_mode)) {
    close(fd);
    *why = path + " is not a character device (a DSA work queue is /dev/dsa/wqX.Y)";
    return nullptr;
  }
  const std::string name = path.substr(path.find_last_of('/') + 1);
  const std::string dir = sysfs_root + "/bus/dsa/devices/" + name + "/";
  const bool shared = ReadSysfs(dir + "mode") != "dedicated";
  const size_t size = ReadSysfsSize(dir + "size", 16);
  const size_t max_batch = ReadSysfsSize(dir + "max_batch_size", 32);
  const bool has_insn = CpuHas(shared ? kEnqcmdBit : kMovdir64bBit);
  if (has_insn) {
    void* portal = mmap(nullptr, 4096, PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
    if (portal != MAP_FAILED) {
      close(fd);  // the mapping keeps the queue open, as QEMU and QPL do
      return std::make_unique<PortalQueue>(portal, shared, size, max_batch);
    }
  }
  // No mapping (no CAP_SYS_RAWIO since INTEL-SA-01084, or not a DSA device) or
  // no instruction: let the kernel submit through write().
  return std::make_unique<WriteQueue>(fd, shared, size);
#endif
}

namespace {

// Descriptor and completion-record arrays with the alignment DSA requires,
// kept per thread and grown on demand.
struct Arrays {
  dsa_hw_desc* descs = nullptr;           // one per page, 64-byte aligned
  dsa_completion_record* recs = nullptr;  // one per page, 32-byte aligned
  dsa_hw_desc* batch = nullptr;           // one per batch
  dsa_completion_record* batch_recs = nullptr;
  size_t cap = 0;
  void Ensure(size_t n) {
    if (n <= cap) return;
    Abandon();
    std::free(descs);
    std::free(recs);
    std::free(batch);
    std::free(batch_recs);
    cap = n;
    descs = static_cast<dsa_hw_desc*>(std::aligned_alloc(64, n * sizeof(dsa_hw_desc)));
    recs = static_cast<dsa_completion_record*>(
        std::aligned_alloc(64, n * sizeof(dsa_completion_record)));
    batch = static_cast<dsa_hw_desc*>(std::aligned_alloc(64, n * sizeof(dsa_hw_desc)));
    batch_recs = static_cast<dsa_completion_record*>(
        std::aligned_alloc(64, n * sizeof(dsa_completion_record)));
  }
  // After a completion timeout the device may still write these records: never reuse them.
  void Abandon() {
    descs = nullptr;
    recs = nullptr;
    batch = nullptr;
    batch_recs = nullptr;
    cap = 0;
  }
  ~Arrays() {
    std::free(descs);
    std::free(recs);
    std::free(batch);
    std::free(batch_recs);
  }
};
thread_local Arrays t_arrays;

uint8_t Status(const dsa_completion_record* r) {
  return __atomic_load_n(&r->status, __ATOMIC_ACQUIRE) & DSA_COMP_STATUS_MASK;
}

// Waits for a record's status; false after `timeout_ms`.
bool Poll(const dsa_completion_record* r, int timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (unsigned spin = 0;; spin++) {
    if (Status(r) != DSA_COMP_NONE) return true;
    Pause();
    if ((spin & 1023) == 1023) {
      if (std::chrono::steady_clock::now() >= deadline) return false;
      if (spin > (1u << 16)) std::this_thread::yield();
    }
  }
}

// A unit of submission: a batch of n >= 2 descriptors, or one plain descriptor.
struct Unit {
  size_t first;
  size_t n;
  dsa_completion_record* rec;  // the batch's record, or the plain descriptor's
  enum { kPending, kSubmitted, kBusy, kNotSubmitted, kDone, kTimedOut } state = kPending;
};

// Statuses that mean the device itself is broken, not one descriptor.
bool DeviceBroken(uint8_t st) { return st == DSA_COMP_HW_ERR1 || st == DSA_COMP_HW_ERR_DRB; }

std::string StatusName(uint8_t st) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "0x%02x", st);
  return buf;
}

struct Evaluate {
  const uint8_t* pages;
  size_t page_size;
  size_t count;
  uint8_t* zero_out;
  uint32_t* crc_out;
  const dsa_completion_record* recs;
  // Per page: 0 = the device decided, 1 = finish from bytes_completed, 2 = whole page on the CPU.
  const uint8_t* how;
};

// Decides each page (device result or CPU check), then fills the CRCs.
int64_t EvaluatePages(void* p) {
  const auto* e = static_cast<Evaluate*>(p);
  const size_t ps = e->page_size;
  size_t zeros = 0;
  for (size_t i = 0; i < e->count; i++) {
    const uint8_t* page = e->pages + i * ps;
    const dsa_completion_record& r = e->recs[i];
    bool zero;
    if (e->how[i] == 0) {
      zero = r.result == 0;
    } else if (e->how[i] == 1 && r.result != 0 && r.bytes_completed != 0) {
      zero = false;  // the device saw a non-zero word before the fault
    } else {
      // The device reached bytes_completed (rounded down to its 8-byte words;
      // a value past the page is not trusted).
      size_t from = e->how[i] == 1 ? (r.bytes_completed & ~size_t{7}) : 0;
      if (from > ps) from = 0;
      zero = BufferIsZero(page + from, ps - from);
    }
    e->zero_out[i] = zero ? 1 : 0;
    zeros += zero ? 1 : 0;
  }
  if (e->crc_out != nullptr) {
    const uint32_t zc = ZeroPageCrc(ps);
    for (size_t i = 0; i < e->count;) {
      if (e->zero_out[i]) {
        e->crc_out[i++] = zc;
        continue;
      }
      size_t j = i;
      while (j < e->count && !e->zero_out[j]) j++;
      Crc32cPages(e->pages + i * ps, ps, j - i, e->crc_out + i);
      i = j;
    }
  }
  return static_cast<int64_t>(zeros);
}

// Submits with bounded retries; takes a credit on queues that have them.
Submit SubmitUnit(Device* dev, const dsa_hw_desc* d, ScanCounts* c) {
  WorkQueue* wq = dev->wq.get();
  const size_t credits = wq->Credits();
  if (credits > 0) {
    // A dedicated queue gives no feedback: never more descriptors out than its size.
    int64_t cur = dev->in_flight.load();
    for (int spins = 0;; spins++) {
      if (cur < static_cast<int64_t>(credits) && dev->in_flight.compare_exchange_weak(cur, cur + 1))
        break;
      if (spins >= kSubmitRetries) return Submit::kRetry;
      Pause();
      cur = dev->in_flight.load();
    }
  }
  int err = 0;
  for (int attempt = 0;; attempt++) {
    const Submit s = wq->SubmitOne(d, &err);
    if (s == Submit::kAccepted) return s;
    if (s == Submit::kError) {
      if (credits > 0) dev->in_flight.fetch_sub(1);
      dev->Fail(std::string(wq->Submission()) + " submission failed: " + std::strerror(err));
      return s;
    }
    c->submit_retries++;
    if (attempt >= kSubmitRetries) {
      if (credits > 0) dev->in_flight.fetch_sub(1);
      return Submit::kRetry;
    }
    Pause();
  }
}

}  // namespace

int64_t Scan(Device* dev, const uint8_t* pages, size_t ps, size_t count, uint8_t* zero_out,
             uint32_t* crc_out, ScanCounts* c, int timeout_ms) {
  if (count == 0) return 0;
  if (dev->failed.load()) {
    c->cpu_failed_pages += count;
    return AnalysePagesGuarded(pages, ps, count, zero_out, crc_out);
  }
  WorkQueue* wq = dev->wq.get();
  Arrays& a = t_arrays;
  a.Ensure(count);
  for (size_t i = 0; i < count; i++) {
    dsa_hw_desc& d = a.descs[i];
    std::memset(&d, 0, sizeof d);
    std::memset(&a.recs[i], 0, sizeof a.recs[i]);
    d.opcode = DSA_OPCODE_COMPVAL;
    d.flags = IDXD_OP_FLAG_RCR | IDXD_OP_FLAG_CRAV;
    d.completion_addr = reinterpret_cast<uintptr_t>(&a.recs[i]);
    d.src_addr = reinterpret_cast<uintptr_t>(pages + i * ps);
    d.comp_pattern = 0;
    d.xfer_size = static_cast<uint32_t>(ps);
  }
  // Units: batches of up to max_batch where the queue takes batches, a single
  // descriptor submitted plain (a batch needs two or more).
  std::vector<Unit> units;
  const size_t per = wq->CanBatch() ? std::max<size_t>(1, wq->MaxBatch()) : 1;
  for (size_t i = 0; i < count; i += per) {
    const size_t n = std::min(per, count - i);
    units.push_back({i, n, n == 1 ? &a.recs[i] : &a.batch_recs[units.size()]});
  }
  for (size_t u = 0; u < units.size(); u++) {
    Unit& unit = units[u];
    const dsa_hw_desc* d = &a.descs[unit.first];
    if (unit.n > 1) {
      dsa_hw_desc& b = a.batch[u];
      std::memset(&b, 0, sizeof b);
      std::memset(unit.rec, 0, sizeof *unit.rec);
      b.opcode = DSA_OPCODE_BATCH;
      b.flags = IDXD_OP_FLAG_RCR | IDXD_OP_FLAG_CRAV;
      b.completion_addr = reinterpret_cast<uintptr_t>(unit.rec);
      b.desc_list_addr = reinterpret_cast<uintptr_t>(&a.descs[unit.first]);
      b.desc_count = static_cast<uint32_t>(unit.n);
      d = &b;
    }
    if (dev->failed.load()) {
      unit.state = Unit::kNotSubmitted;
      continue;
    }
    const Submit s = SubmitUnit(dev, d, c);
    unit.state = s == Submit::kAccepted ? Unit::kSubmitted
                 : s == Submit::kRetry  ? Unit::kBusy
                                        : Unit::kNotSubmitted;
    if (s == Submit::kAccepted) {
      c->descriptors += unit.n;
      if (unit.n > 1) c->batches++;
    }
  }
  // how[i]: 0 device decided, 1 finish from bytes_completed, 2 whole page on the CPU.
  std::vector<uint8_t> how(count, 2);
  bool abandon = false;
  for (Unit& unit : units) {
    if (unit.state == Unit::kBusy) {
      c->cpu_busy_pages += unit.n;
      continue;
    }
    if (unit.state == Unit::kNotSubmitted) {
      c->cpu_failed_pages += unit.n;
      continue;
    }
    // After one timeout the device is failed: the other units get one look, not another wait.
    if (!Poll(unit.rec, abandon ? 0 : timeout_ms)) {
      unit.state = Unit::kTimedOut;
      abandon = true;
      dev->Fail("no completion within " + std::to_string(timeout_ms) + " ms (" + wq->Submission() +
                " submission)");
      c->cpu_failed_pages += unit.n;
      continue;
    }
    if (wq->Credits() > 0) dev->in_flight.fetch_sub(1);
    unit.state = Unit::kDone;
    const uint8_t bst = Status(unit.rec);
    if (unit.n > 1 && bst != DSA_COMP_SUCCESS && bst != DSA_COMP_BATCH_FAIL &&
        bst != DSA_COMP_BATCH_PAGE_FAULT) {
      // The batch itself was refused: nothing in it ran.
      dev->Fail("batch descriptor failed with status " + StatusName(bst));
      c->cpu_failed_pages += unit.n;
      continue;
    }
    for (size_t i = unit.first; i < unit.first + unit.n; i++) {
      const uint8_t st = Status(&a.recs[i]);
      if (st == DSA_COMP_SUCCESS) {
        how[i] = 0;
        c->device_pages++;
      } else if (st == DSA_COMP_PAGE_FAULT_NOBOF || st == DSA_COMP_PAGE_FAULT_IR) {
        how[i] = 1;
        c->cpu_fault_pages++;
      } else {
        if (DeviceBroken(st))
          dev->Fail("descriptor failed with status " + StatusName(st) + " (hardware error)");
        c->cpu_error_pages++;
      }
    }
  }
  Evaluate e{pages, ps, count, zero_out, crc_out, a.recs, how.data()};
  const int64_t r = RunGuarded(EvaluatePages, &e);
  if (abandon) a.Abandon();  // leaked on purpose: the device may still write them
  return r;
}

bool Probe(WorkQueue* wq, int timeout_ms, std::string* why) {
  auto* d = static_cast<dsa_hw_desc*>(std::aligned_alloc(64, sizeof(dsa_hw_desc)));
  auto* r = static_cast<dsa_completion_record*>(std::aligned_alloc(64, 64));
  std::memset(d, 0, sizeof *d);
  std::memset(r, 0, 64);
  d->opcode = DSA_OPCODE_NOOP;
  d->flags = IDXD_OP_FLAG_RCR | IDXD_OP_FLAG_CRAV;
  d->completion_addr = reinterpret_cast<uintptr_t>(r);
  int err = 0;
  Submit s = Submit::kRetry;
  for (int i = 0; i < kSubmitRetries && s == Submit::kRetry; i++) s = wq->SubmitOne(d, &err);
  bool ok = false;
  if (s == Submit::kError) {
    *why = std::string(wq->Submission()) + " submission failed: " + std::strerror(err);
  } else if (s == Submit::kRetry) {
    *why = "the work queue stayed busy";
  } else if (!Poll(r, timeout_ms)) {
    *why = "NOOP descriptor accepted through " + std::string(wq->Submission()) +
           " but no completion within " + std::to_string(timeout_ms) + " ms";
    std::free(d);
    return false;  // r is leaked on purpose: a late completion may still land there
  } else if (Status(r) != DSA_COMP_SUCCESS) {
    *why = "NOOP descriptor completed with status " + StatusName(Status(r));
  } else {
    ok = true;
  }
  std::free(d);
  std::free(r);
  return ok;
}

namespace {

std::mutex g_devices_lock;
std::vector<std::unique_ptr<Device>> g_devices;  // for the life of the process, shared by threads

struct QueueSpec {
  std::unique_ptr<WorkQueue> wq;
  std::string why;
};

// "dsa:/dev/dsa/wqX.Y" or "fake:options".
QueueSpec OpenSpec(const std::string& spec, const std::string& sysfs_root) {
  QueueSpec q;
  if (spec.rfind("dsa:", 0) == 0) {
    q.wq = OpenHardwareQueue(spec.substr(4), sysfs_root, &q.why);
  } else if (spec.rfind("fake:", 0) == 0) {
    const TestNatives* t = InstalledTestNatives();
    if (t != nullptr)
      q.wq = t->open_fake_dsa(spec.substr(5), &q.why);
    else
      q.why =
          "the fake work queue is test code, in mfd_test.node, which this process has not loaded";
  } else {
    q.why = "expected dsa:/dev/dsa/wqX.Y, received \"" + spec + "\"";
  }
  return q;
}

Napi::Object Describe(Napi::Env env, WorkQueue* wq) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("submission", wq->Submission());
  o.Set("hardware", wq->IsHardware());
  o.Set("batches", wq->CanBatch());
  o.Set("maxBatch", static_cast<double>(wq->MaxBatch()));
  return o;
}

/* dsaOpen(spec, sysfsRoot) -> { id, submission, hardware, batches, maxBatch }; one device per spec
 * per process */
Napi::Value JS_dsaOpen(const Napi::CallbackInfo& info) {
  if (!RequireArgs(info, 2) || !info[0].IsString() || !info[1].IsString()) {
    Napi::TypeError::New(info.Env(), "dsaOpen(spec: string, sysfsRoot: string)")
        .ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  const std::string spec = info[0].As<Napi::String>();
  std::lock_guard<std::mutex> lock(g_devices_lock);
  size_t id = 0;
  for (; id < g_devices.size() && g_devices[id]->spec != spec; id++) {
  }
  if (id == g_devices.size()) {
    QueueSpec q = OpenSpec(spec, info[1].As<Napi::String>());
    if (!q.wq) {
      ThrowCode(info.Env(), "ERR_DSA_OPEN", q.why);
      return info.Env().Undefined();
    }
    auto dev = std::make_unique<Device>();
    dev->spec = spec;
    dev->wq = std::move(q.wq);
    g_devices.push_back(std::move(dev));
  }
  Napi::Object o = Describe(info.Env(), g_devices[id]->wq.get());
  o.Set("id", static_cast<double>(id));
  return o;
}

Device* DeviceArg(const Napi::CallbackInfo& info, size_t i) {
  size_t id = 0;
  if (!RequireSize(info, i, "device", &id)) return nullptr;
  std::lock_guard<std::mutex> lock(g_devices_lock);
  if (id >= g_devices.size()) {
    Napi::RangeError::New(info.Env(), "no such DSA device").ThrowAsJavaScriptException();
    return nullptr;
  }
  return g_devices[id].get();
}

/* dsaStatus(id) -> { failed, reason } */
Napi::Value JS_dsaStatus(const Napi::CallbackInfo& info) {
  if (!RequireArgs(info, 1)) return info.Env().Undefined();
  Device* dev = DeviceArg(info, 0);
  if (dev == nullptr) return info.Env().Undefined();
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("failed", dev->failed.load());
  o.Set("reason", dev->FailReason());
  return o;
}

/* dsaProbe(spec, sysfsRoot, timeoutMs) -> { ok, reason, submission?, hardware? } (a fresh queue,
 * not kept) */
Napi::Value JS_dsaProbe(const Napi::CallbackInfo& info) {
  size_t timeout = 0;
  if (!RequireArgs(info, 3) || !info[0].IsString() || !info[1].IsString() ||
      !RequireSize(info, 2, "timeoutMs", &timeout)) {
    if (!info.Env().IsExceptionPending())
      Napi::TypeError::New(info.Env(), "dsaProbe(spec, sysfsRoot, timeoutMs)")
          .ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  QueueSpec q = OpenSpec(info[0].As<Napi::String>(), info[1].As<Napi::String>());
  Napi::Object o = q.wq ? Describe(info.Env(), q.wq.get()) : Napi::Object::New(info.Env());
  std::string why = q.why;
  const bool ok = q.wq && Probe(q.wq.get(), static_cast<int>(timeout), &why);
  o.Set("ok", ok);
  o.Set("reason", ok ? "NOOP descriptor completed" : why);
  return o;
}

class ScanWorker : public Napi::AsyncWorker {
 public:
  ScanWorker(Napi::Function cb, Device* dev, const uint8_t* pages, size_t ps, size_t count,
             uint8_t* zero_out, uint32_t* crc_out, double* counts_out, int timeout_ms)
      : Napi::AsyncWorker(cb, "mfd.dsaScan"),
        dev_(dev),
        pages_(pages),
        ps_(ps),
        count_(count),
        zero_out_(zero_out),
        crc_out_(crc_out),
        counts_out_(counts_out),
        timeout_ms_(timeout_ms) {}
  void Pin(const Napi::Value& v) { pinned_.push_back(Napi::Persistent(v.As<Napi::Object>())); }
  void Execute() override {
    result_ = Scan(dev_, pages_, ps_, count_, zero_out_, crc_out_, &counts_, timeout_ms_);
  }
  void OnOK() override {
    counts_.Store(counts_out_);
    Callback().Call({Env().Null(), Napi::Number::New(Env(), static_cast<double>(result_))});
  }

 private:
  Device* dev_;
  const uint8_t* pages_;
  size_t ps_, count_;
  uint8_t* zero_out_;
  uint32_t* crc_out_;
  double* counts_out_;
  int timeout_ms_;
  ScanCounts counts_;
  int64_t result_ = 0;
  std::vector<Napi::ObjectReference> pinned_;
};

/* dsaScan(id, pages, pageSize, pageCount, zeroOut, crcOut, countsOut: Float64Array(8), timeoutMs,
 * cb(err, zerosOrCode)) */
Napi::Value JS_dsaScan(const Napi::CallbackInfo& info) {
  size_t ps = 0, count = 0, timeout = 0;
  if (!RequireArgs(info, 9)) return info.Env().Undefined();
  Device* dev = DeviceArg(info, 0);
  if (dev == nullptr || !RequireBytes(info, 1, "pages") || !RequireSize(info, 2, "pageSize", &ps) ||
      !RequireSize(info, 3, "pageCount", &count) || !RequireBytes(info, 4, "zeroOut", count) ||
      !RequireUint32Array(info, 5, "crcOut", count) ||
      !RequireSize(info, 7, "timeoutMs", &timeout) || !RequireFunction(info, 8)) {
    return info.Env().Undefined();
  }
  if (!info[6].IsTypedArray() ||
      info[6].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array ||
      info[6].As<Napi::Float64Array>().ElementLength() < ScanCounts::kFields) {
    Napi::TypeError::New(info.Env(), "Expected a Float64Array(8) for countsOut")
        .ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  auto pages = info[1].As<Napi::Uint8Array>();
  if (ps == 0 || ps > (1u << 20) || count > pages.ByteLength() / ps) {
    Napi::RangeError::New(info.Env(), "dsaScan: pages buffer too small for pageCount pages")
        .ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  auto* w =
      new ScanWorker(info[8].As<Napi::Function>(), dev, pages.Data(), ps, count,
                     info[4].As<Napi::Uint8Array>().Data(), info[5].As<Napi::Uint32Array>().Data(),
                     info[6].As<Napi::Float64Array>().Data(), static_cast<int>(timeout));
  for (size_t i : {1, 4, 5, 6}) w->Pin(info[i]);
  w->Queue();
  return info.Env().Undefined();
}

}  // namespace
}  // namespace dsa

void InitDsa(Napi::Env env, Napi::Object exports) {
  exports.Set("dsaOpen", Napi::Function::New(env, dsa::JS_dsaOpen, "dsaOpen"));
  exports.Set("dsaScan", Napi::Function::New(env, dsa::JS_dsaScan, "dsaScan"));
  exports.Set("dsaStatus", Napi::Function::New(env, dsa::JS_dsaStatus, "dsaStatus"));
  exports.Set("dsaProbe", Napi::Function::New(env, dsa::JS_dsaProbe, "dsaProbe"));
}

}  // namespace mfd
