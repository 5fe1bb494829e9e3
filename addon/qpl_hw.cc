// libqpl's two paths behind the engine interface (compiled when binding.gyp's
// `pkg-config --exists qpl` succeeds, which defines MFD_HAVE_QPL), else stubs
// that say why not: IAA (qpl_path_hardware) and QPL's own software path
// (qpl_path_software, what QEMU runs without a device). The job settings are
// QEMU's: op compress, FIRST|LAST|OMIT_VERIFY, level 1, no Huffman table,
// output limited to page_size - 1.
#include "qpl_engine.h"

#ifdef MFD_HAVE_QPL
#include <qpl/qpl.h>

#include <cstdlib>
#include <new>
#endif

namespace mfd {
namespace qpl {

#ifdef MFD_HAVE_QPL
namespace {

// A job per thread and path (a job is not shared by threads).
template <qpl_path_t kPath>
struct ThreadJob {
  qpl_job* job = nullptr;
  qpl_status init = QPL_STS_OK;
  ThreadJob() {
    uint32_t size = 0;
    init = qpl_get_job_size(kPath, &size);
    if (init != QPL_STS_OK) return;
    job = static_cast<qpl_job*>(std::malloc(size));
    if (job == nullptr) {
      init = QPL_STS_OBJECT_ALLOCATION_ERR;
      return;
    }
    init = qpl_init_job(kPath, job);
    if (init != QPL_STS_OK) {
      std::free(job);
      job = nullptr;
    }
  }
  ~ThreadJob() {
    if (job != nullptr) {
      qpl_fini_job(job);
      std::free(job);
    }
  }
};
thread_local ThreadJob<qpl_path_hardware> t_hw_job;
thread_local ThreadJob<qpl_path_software> t_sw_job;

// QEMU's jobs on either path: one page, FIRST|LAST, level 1, no Huffman
// table (fixed codes), output limited by the caller (page_size - 1).
template <qpl_path_t kPath>
class QplEngine : public HwEngine {
 public:
  explicit QplEngine(ThreadJob<kPath>& (*job)()) : job_(job) {}
  HwStatus Compress(const uint8_t* page, size_t ps, uint8_t* out, size_t cap, size_t* len,
                    int* status) override {
    qpl_job* j = job_().job;
    if (j == nullptr) {
      *status = job_().init;
      return HwStatus::kError;
    }
    j->op = qpl_op_compress;
    j->next_in_ptr = const_cast<uint8_t*>(page);
    j->available_in = static_cast<uint32_t>(ps);
    j->next_out_ptr = out;
    j->available_out = static_cast<uint32_t>(cap);
    j->level = qpl_default_level;
    j->flags = QPL_FLAG_FIRST | QPL_FLAG_LAST | QPL_FLAG_OMIT_VERIFY;
    const qpl_status s = qpl_execute_job(j);
    *status = s;
    if (s == QPL_STS_OK) {
      *len = j->total_out;
      return HwStatus::kOk;
    }
    if (s == QPL_STS_QUEUES_ARE_BUSY_ERR) return HwStatus::kBusy;
    if (s == QPL_STS_MORE_OUTPUT_NEEDED) return HwStatus::kTooBig;
    return HwStatus::kError;
  }
  HwStatus Decompress(const uint8_t* in, size_t len, uint8_t* out, size_t ps,
                      int* status) override {
    qpl_job* j = job_().job;
    if (j == nullptr) {
      *status = job_().init;
      return HwStatus::kError;
    }
    j->op = qpl_op_decompress;
    j->next_in_ptr = const_cast<uint8_t*>(in);
    j->available_in = static_cast<uint32_t>(len);
    j->next_out_ptr = out;
    j->available_out = static_cast<uint32_t>(ps);
    j->flags = QPL_FLAG_FIRST | QPL_FLAG_LAST;
    const qpl_status s = qpl_execute_job(j);
    *status = s;
    if (s == QPL_STS_QUEUES_ARE_BUSY_ERR) return HwStatus::kBusy;
    if (s == QPL_STS_OK && (j->total_out != ps || j->total_in != len)) {
      *status = -1;  // decoded, but not to exactly one page from exactly its bytes
      return HwStatus::kError;
    }
    return s == QPL_STS_OK ? HwStatus::kOk : HwStatus::kError;
  }
  const char* Name() const override { return kPath == qpl_path_hardware ? "iaa" : "qpl-software"; }
  bool IsHardware() const override { return kPath == qpl_path_hardware; }

 private:
  ThreadJob<kPath>& (*job_)();
};

ThreadJob<qpl_path_hardware>& HwJob() { return t_hw_job; }
ThreadJob<qpl_path_software>& SwJob() { return t_sw_job; }

}  // namespace

std::unique_ptr<HwEngine> OpenQplHardware(std::string* why, int* status) {
  // QEMU's probe: a job initialised on the hardware path.
  if (t_hw_job.job == nullptr) {
    *status = t_hw_job.init;
    *why = "qpl_init_job(qpl_path_hardware) failed with status " + std::to_string(t_hw_job.init) +
           (t_hw_job.init == QPL_STS_INIT_WORK_QUEUES_NOT_AVAILABLE
                ? " (IAA work queues present but not available to this process)"
                : " (no enabled IAA work queue this process may use)");
    return nullptr;
  }
  *status = QPL_STS_OK;
  return std::make_unique<QplEngine<qpl_path_hardware>>(HwJob);
}

std::unique_ptr<HwEngine> OpenQplSoftware(std::string* why) {
  if (t_sw_job.job == nullptr) {
    *why = "qpl_init_job(qpl_path_software) failed with status " + std::to_string(t_sw_job.init);
    return nullptr;
  }
  return std::make_unique<QplEngine<qpl_path_software>>(SwJob);
}

std::string QplLibraryVersion() { return qpl_get_library_version(); }

#else

std::unique_ptr<HwEngine> OpenQplHardware(std::string* why, int* status) {
  *status = -1;
  *why =
      "not compiled: pkg-config found no qpl when the addon was built (install Intel QPL >= 1.5 "
      "and rebuild)";
  return nullptr;
}

std::unique_ptr<HwEngine> OpenQplSoftware(std::string* why) {
  *why = "not compiled: pkg-config found no qpl when the addon was built";
  return nullptr;
}

std::string QplLibraryVersion() { return ""; }

#endif

}  // namespace qpl
}  // namespace mfd
