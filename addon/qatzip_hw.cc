// The qatzip method's hardware path: Intel QAT through QATzip, compiled when
// binding.gyp's `pkg-config --exists qatzip` succeeds (MFD_HAVE_QATZIP), else
// a stub that says why not. Used only when a hardware session comes up
// (hw_session_stat == QZ_OK): without hardware the method's own software path
// (src/methods/qatzip.ts) emits the members QAT would, so this code never
// stands in for software. One session per thread, as QATzip sessions are not
// shared; one qzCompress per packet (QEMU's non-streaming use).
#include <napi.h>

#include <string>

#include "common.h"

#ifdef MFD_HAVE_QATZIP
#include <qatzip.h>
#endif

namespace mfd {
namespace {

#ifdef MFD_HAVE_QATZIP
struct ThreadSession {
  QzSession_T sess{};
  int level = 0;
  int status = QZ_NONE;  // qzSetupSessionDeflate's result, then hw_session_stat
  bool up = false;
  bool Open(int lvl) {
    if (up && level == lvl) return true;
    if (up) {
      qzTeardownSession(&sess);
      qzClose(&sess);
      up = false;
    }
    level = lvl;
    // sw_backup 0: a session that comes up is a hardware session; software is ours.
    int rc = qzInit(&sess, 0);
    if (rc != QZ_OK && rc != QZ_DUPLICATE) {
      status = rc;
      return false;
    }
    QzSessionParamsDeflate_T p;
    qzGetDefaultsDeflate(&p);
    p.common_params.comp_lvl = static_cast<unsigned>(lvl);
    p.common_params.sw_backup = 0;
    rc = qzSetupSessionDeflate(&sess, &p);
    status = rc == QZ_OK ? sess.hw_session_stat : rc;
    up = rc == QZ_OK && sess.hw_session_stat == QZ_OK;
    return up;
  }
  ~ThreadSession() {
    if (up) {
      qzTeardownSession(&sess);
      qzClose(&sess);
    }
  }
};
thread_local ThreadSession t_session;
#endif

/* qatzipHardwareOpen(level) -> { ok, reason, version } (probes this thread's session) */
Napi::Value QatzipHardwareOpen(const Napi::CallbackInfo& info) {
  size_t level = 1;
  if (!RequireArgs(info, 1) || !RequireSize(info, 0, "level", &level)) return info.Env().Undefined();
  Napi::Object o = Napi::Object::New(info.Env());
#ifdef MFD_HAVE_QATZIP
  const bool ok = t_session.Open(static_cast<int>(level));
  o.Set("ok", ok);
  o.Set("reason", ok ? std::string("QATzip hardware session up")
                     : "no QAT hardware session (QATzip status " + std::to_string(t_session.status) + ")");
#if defined(QATZIP_API_VERSION_NUM_MAJOR) && defined(QATZIP_API_VERSION_NUM_MINOR)
  o.Set("version", std::to_string(QATZIP_API_VERSION_NUM_MAJOR) + "." + std::to_string(QATZIP_API_VERSION_NUM_MINOR));
#else
  o.Set("version", "unknown");
#endif
#else
  o.Set("ok", false);
  o.Set("reason", "not compiled: pkg-config found no qatzip when the addon was built (install QATzip and rebuild)");
  o.Set("version", "");
#endif
  return o;
}

// One call on this thread's session: qzCompress (last = 1) or qzDecompress
// of the whole input into out; returns the bytes written.
Napi::Value Run(const Napi::CallbackInfo& info, bool compress) {
  if (!RequireArgs(info, 2) || !RequireBytes(info, 0, "input") || !RequireBytes(info, 1, "out")) return info.Env().Undefined();
#ifdef MFD_HAVE_QATZIP
  auto in = info[0].As<Napi::Uint8Array>();
  auto out = info[1].As<Napi::Uint8Array>();
  unsigned int src_len = static_cast<unsigned int>(in.ByteLength());
  unsigned int dst_len = static_cast<unsigned int>(out.ByteLength());
  int rc = QZ_NONE;
  if (t_session.up) {
    rc = compress ? qzCompress(&t_session.sess, in.Data(), &src_len, out.Data(), &dst_len, 1)
                  : qzDecompress(&t_session.sess, in.Data(), &src_len, out.Data(), &dst_len);
  }
  if (rc != QZ_OK || src_len != in.ByteLength()) {
    ThrowCode(info.Env(), compress ? "ERR_QATZIP" : "ERR_PAYLOAD_CORRUPT",
              std::string(compress ? "qzCompress" : "qzDecompress") + " failed with status " + std::to_string(rc));
    return info.Env().Undefined();
  }
  return Napi::Number::New(info.Env(), dst_len);
#else
  (void)compress;
  ThrowCode(info.Env(), "ERR_QATZIP", "QATzip is not compiled into this build");
  return info.Env().Undefined();
#endif
}

/* qatzipCompress(data, out) -> bytes: one qzCompress of the packet's pages */
Napi::Value QatzipCompress(const Napi::CallbackInfo& info) { return Run(info, true); }

/* qatzipDecompress(payload, out) -> bytes written */
Napi::Value QatzipDecompress(const Napi::CallbackInfo& info) { return Run(info, false); }

}  // namespace

void InitQatzip(Napi::Env env, Napi::Object exports) {
  exports.Set("qatzipHardwareOpen", Napi::Function::New(env, QatzipHardwareOpen, "qatzipHardwareOpen"));
  exports.Set("qatzipCompress", Napi::Function::New(env, QatzipCompress, "qatzipCompress"));
  exports.Set("qatzipDecompress", Napi::Function::New(env, QatzipDecompress, "qatzipDecompress"));
}

}  // namespace mfd
