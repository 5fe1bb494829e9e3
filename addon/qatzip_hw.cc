// The qatzip method's QATzip paths, compiled when binding.gyp's
// `pkg-config --exists qatzip` succeeds (MFD_HAVE_QATZIP), else stubs that
// say why not. Two sessions per thread (QATzip sessions are not shared):
// - the hardware session (sw_backup = 0): used only when it comes up on QAT
//   (hw_session_stat == QZ_OK);
// - QATzip's own software session (sw_backup = 1, what QEMU runs without a
//   device): used only when the caller asks for that engine; otherwise the
//   method's own software path (qz_members.cc) emits the members QAT would.
// One qzCompress (last = 1) or qzDecompress per packet, QEMU's non-streaming use.
// QATzip's own logging to stderr is switched off: every status it would log
// comes back to the caller, which words it and logs it through mfd's logger.
#include <napi.h>

#include <string>

#include "common.h"

#ifdef MFD_HAVE_QATZIP
#include <qatzip.h>

#include <atomic>
#include <mutex>
#endif

namespace mfd {
namespace {

#ifdef MFD_HAVE_QATZIP
void Quiet() {
  static std::once_flag once;
  std::call_once(once, [] { qzSetLogLevel(LOG_NONE); });
}

struct ThreadSession {
  const bool software;  // sw_backup: QATzip's software path when there is no hardware
  QzSession_T sess{};
  int level = 0;
  int status = QZ_NONE;  // qzInit's or qzSetupSessionDeflate's failure, else hw_session_stat
  bool up = false;
  explicit ThreadSession(bool sw) : software(sw) {}
  bool Open(int lvl) {
    if (up && level == lvl) return true;
    Close();
    Quiet();
    level = lvl;
    int rc = qzInit(&sess, software ? 1 : 0);
    // QZ_DUPLICATE: the process already initialised (or already failed to; the session says which).
    if (rc != QZ_OK && rc != QZ_DUPLICATE && !(software && rc == QZ_NO_HW)) {
      status = rc;
      return false;
    }
    QzSessionParamsDeflate_T p;
    qzGetDefaultsDeflate(&p);
    p.common_params.comp_lvl = static_cast<unsigned>(lvl);
    p.common_params.sw_backup = software ? 1 : 0;
    rc = qzSetupSessionDeflate(&sess, &p);
    const bool set = rc == QZ_OK || (software && rc == QZ_NO_HW);
    status = set ? static_cast<int>(sess.hw_session_stat) : rc;
    up = set && (software || sess.hw_session_stat == QZ_OK);
    return up;
  }
  void Close() {
    if (!up) return;
    qzTeardownSession(&sess);
    qzClose(&sess);
    sess = QzSession_T{};
    up = false;
  }
  ~ThreadSession() { Close(); }
};
thread_local ThreadSession t_hw(false);
thread_local ThreadSession t_sw(true);

// Tests only: QATzip's software session stands in for a hardware session ("fake-qat", never
// reported as hardware), so the method's hardware branch runs where no QAT device is.
std::atomic<bool> g_fake_hw{false};

// QATzip's status, as its own log would word it.
std::string Status(int rc) {
  const char* what = nullptr;
  switch (rc) {
    case QZ_NO_HW:
    case QZ_NOSW_NO_HW:
      what = "no QAT device";
      break;
    case QZ_NO_MDRV:
    case QZ_NOSW_NO_MDRV:
      what = "no QAT memory driver";
      break;
    case QZ_NO_INST_ATTACH:
    case QZ_NOSW_NO_INST_ATTACH:
      what = "every QAT instance is in use";
      break;
    case QZ_LOW_MEM:
    case QZ_NOSW_LOW_MEM:
      what = "not enough pinned memory";
      break;
    case QZ_BUF_ERROR:
      what = "output buffer too small";
      break;
    case QZ_DATA_ERROR:
      what = "corrupt input";
      break;
    default:
      break;
  }
  return "QATzip status " + std::to_string(rc) + (what ? std::string(": ") + what : std::string());
}

std::string Version() {
#if defined(QATZIP_API_VERSION_NUM_MAJOR) && defined(QATZIP_API_VERSION_NUM_MINOR)
  return std::to_string(QATZIP_API_VERSION_NUM_MAJOR) + "." +
         std::to_string(QATZIP_API_VERSION_NUM_MINOR);
#else
  return "unknown";
#endif
}
#endif

/* qatzipHardwareOpen(level) / qatzipSoftwareOpen(level) -> { ok, reason, status, version }: this
   thread's hardware session (sw_backup 0), or QATzip's software session (sw_backup 1); status is
   QATzip's (hw_session_stat when the session was set up; 0 not compiled). */
Napi::Value Open(const Napi::CallbackInfo& info, bool software) {
  size_t level = 1;
  if (!RequireArgs(info, 1) || !RequireSize(info, 0, "level", &level))
    return info.Env().Undefined();
  Napi::Object o = Napi::Object::New(info.Env());
#ifdef MFD_HAVE_QATZIP
  const bool fake = !software && g_fake_hw.load();
  ThreadSession& t = software || fake ? t_sw : t_hw;
  const bool ok = t.Open(static_cast<int>(level));
  o.Set("ok", ok);
  if (fake) {
    o.Set("fake", true);
    o.Set("status", 0);
    o.Set("reason", ok ? "fake-qat: QATzip's software session stands in for a hardware session"
                       : "fake-qat: " + Status(t.status));
    o.Set("version", Version());
    return o;
  }
  o.Set("status", t.status);
  if (software) {
    o.Set("reason", ok ? "QATzip software session (sw_backup; hardware: " + Status(t.status) + ")"
                       : "QATzip software session failed (" + Status(t.status) + ")");
  } else {
    o.Set("reason", ok ? std::string("QATzip hardware session up") : Status(t.status));
  }
  o.Set("version", Version());
#else
  o.Set("ok", false);
  o.Set("status", 0);
  o.Set("reason",
        "not compiled: pkg-config found no qatzip when the addon was built (install QATzip and "
        "rebuild)");
  o.Set("version", "");
#endif
  return o;
}

Napi::Value QatzipHardwareOpen(const Napi::CallbackInfo& info) { return Open(info, false); }
Napi::Value QatzipSoftwareOpen(const Napi::CallbackInfo& info) { return Open(info, true); }

// One call on this thread's session (the software one when the third argument
// is true): qzCompress (last = 1) or qzDecompress of the whole input into out;
// returns the bytes written. A failure throws with QATzip's status in the
// message and as `status`.
Napi::Value Run(const Napi::CallbackInfo& info, bool compress) {
  if (!RequireArgs(info, 2) || !RequireBytes(info, 0, "input") || !RequireBytes(info, 1, "out"))
    return info.Env().Undefined();
#ifdef MFD_HAVE_QATZIP
  const bool software = info.Length() > 2 && info[2].ToBoolean();
  ThreadSession& t = software || g_fake_hw.load() ? t_sw : t_hw;
  auto in = info[0].As<Napi::Uint8Array>();
  auto out = info[1].As<Napi::Uint8Array>();
  unsigned int src_len = static_cast<unsigned int>(in.ByteLength());
  unsigned int dst_len = static_cast<unsigned int>(out.ByteLength());
  int rc = QZ_NONE;
  if (t.up) {
    rc = compress ? qzCompress(&t.sess, in.Data(), &src_len, out.Data(), &dst_len, 1)
                  : qzDecompress(&t.sess, in.Data(), &src_len, out.Data(), &dst_len);
  }
  if (rc != QZ_OK || src_len != in.ByteLength()) {
    // A failed call leaves the session mid-stream: every later call on it fails too. A fresh one.
    if (t.up) {
      t.Close();
      t.Open(t.level);
    }
    // Decoding stopped short of the input with the output full: the payload decodes past the
    // packet's pages.
    const bool overflow = !compress && rc == QZ_OK && dst_len == out.ByteLength();
    const std::string what = std::string(compress ? "qzCompress" : "qzDecompress") +
                             (software ? " (QATzip software)" : "");
    const std::string msg = rc != QZ_OK ? what + " failed with " + Status(rc)
                            : overflow  ? what + ": the payload decodes past " +
                                              std::to_string(out.ByteLength()) + " bytes"
                                        : what + " consumed " + std::to_string(src_len) + " of " +
                                              std::to_string(in.ByteLength()) + " bytes";
    Napi::Error e = Napi::Error::New(info.Env(), msg);
    // Decoding: more output than the packet's pages is a size error; anything else, corrupt data.
    e.Set("code", compress                         ? "ERR_QATZIP"
                  : rc == QZ_BUF_ERROR || overflow ? "ERR_PAYLOAD_SIZE"
                                                   : "ERR_PAYLOAD_CORRUPT");
    e.Set("status", Napi::Number::New(info.Env(), rc));
    e.ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  return Napi::Number::New(info.Env(), dst_len);
#else
  (void)compress;
  ThrowCode(info.Env(), "ERR_QATZIP", "QATzip is not compiled into this build");
  return info.Env().Undefined();
#endif
}

/* qatzipCompress(data, out, software?) -> bytes: one qzCompress of the packet's pages */
Napi::Value QatzipCompress(const Napi::CallbackInfo& info) { return Run(info, true); }

/* qatzipDecompress(payload, out, software?) -> bytes written */
Napi::Value QatzipDecompress(const Napi::CallbackInfo& info) { return Run(info, false); }

/* _qatzipSetFakeHardware(on) -> whether the fake can run (a build with QATzip): tests only */
Napi::Value QatzipSetFakeHardware(const Napi::CallbackInfo& info) {
#ifdef MFD_HAVE_QATZIP
  g_fake_hw.store(info.Length() > 0 && info[0].ToBoolean());
  return Napi::Boolean::New(info.Env(), true);
#else
  return Napi::Boolean::New(info.Env(), false);
#endif
}

}  // namespace

void InitQatzip(Napi::Env env, Napi::Object exports) {
  exports.Set("qatzipHardwareOpen",
              Napi::Function::New(env, QatzipHardwareOpen, "qatzipHardwareOpen"));
  exports.Set("qatzipSoftwareOpen",
              Napi::Function::New(env, QatzipSoftwareOpen, "qatzipSoftwareOpen"));
  exports.Set("qatzipCompress", Napi::Function::New(env, QatzipCompress, "qatzipCompress"));
  exports.Set("_qatzipSetFakeHardware",
              Napi::Function::New(env, QatzipSetFakeHardware, "_qatzipSetFakeHardware"));
  exports.Set("qatzipDecompress", Napi::Function::New(env, QatzipDecompress, "qatzipDecompress"));
}

}  // namespace mfd
