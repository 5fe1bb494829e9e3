// A multifd channel's socket driven from a thread of its own: whole packets
// go out as one sendmsg batch (header and payload pieces, straight from the
// caller's buffers) and come in as reads that fill a caller's buffer: the
// receiver asks for a header, judges it, then asks for exactly the payload it
// announced, into a buffer sized to it. The event loop sees a completion per
// packet's part instead of a callback per socket chunk, and the kernel's
// socket copies run beside it, on as many cores as there are channels.
//
// The fd stays owned by the JS socket (libuv closes it). The JS side must not
// close it while an operation is queued or running: shutdown() makes a running
// operation end at once (EPIPE / end of stream) and later ones end with
// ECANCELED, and the completion of the last one says the fd is free.
//
// JS:
//   const ch = new SocketChannel(fd)
//   ch.send(pieces: Uint8Array[], timeoutMs, cb(err, code, left))
//     code 0 once every byte is in the kernel; else -errno, or kStalled when the
//     socket took nothing for timeoutMs; `left` bytes not sent.
//   ch.recv(buf, have, ahead, timeoutMs, cb(err, got, code, aheadGot, aheadCode))
//     buf[0, have) is already filled. Reads until buf is full. `got` is the
//     bytes now in buf; fewer than its length means the stream ended (code 0)
//     or failed (code -errno; kStalled: nothing arrived for timeoutMs).
//     `ahead` (a Uint8Array, or null): once buf is full, what has already
//     arrived is read into it too, up to its length, without waiting
//     (aheadGot bytes; aheadCode -errno if that read failed): the receiver's
//     next header comes with the payload before it, one operation a packet.
//   ch.recvHeaders(buf, have, headerSize, sizeAt, timeoutMs, cb(err, got, code))
//     A packet header into buf[0, headerSize) (buf[0, have) already filled),
//     waiting for it as recv does; then, without waiting, the headers of
//     packets with no payload after it: while the last header read announces
//     none (its big-endian u32 at sizeAt, next_packet_size, is 0) and buf has
//     room for another, the next header is taken when the whole of it has
//     arrived (MSG_PEEK first: a header begun is never taken in part). `got`
//     is headerSize times the headers read, or, below headerSize, as recv's.
//     A run of zero-page packets is one operation, not one each.
//   ch.recvWrite(buf, fd, pageSize, offsets, normal, zero, blockSize, writeZeros,
//                crc, ahead, decoder, pages, timeoutMs,
//                cb(err, got, code, aheadGot, aheadCode, onFile, badPage,
//                   decoded, decodeCode, decodeMessage))
//     A packet's payload read into all of buf, then, on this thread, in the
//     same operation, its `normal` pages digested into crc and written to fd
//     at the offsets, as writePacket does (WritePacketJob: clipped to
//     blockSize, zero pages written when writeZeros). Without a decoder
//     (null) the payload is the pages as they are (compression none: buf is
//     normal * pageSize bytes); with one (a handle from a stream's decoder(),
//     packet_decoder.h), it is decoded into `pages` (normal * pageSize bytes)
//     first. No hop to another thread: the socket's copy, the decoding and
//     the file's copy run on the channel's thread, one completion a packet.
//     `got`: payload bytes in buf (fewer: the stream ended, or the read
//     failed); `onFile`: code is the write's failure (ENOSPC, EPADDING with
//     badPage), not the socket's. A payload that did not decode is written
//     nowhere: `decoded` is -1 with decodeCode and decodeMessage saying why,
//     or the bytes it decoded to when they are not the pages' (decodeCode
//     null); else `decoded` is the pages' bytes. `ahead` as recv, read only
//     once the packet is written.
//   ch.shutdown()   ends the connection both ways; wakes a blocked operation
//   ch.close()      the thread ends after the queued operations
//
// A packet sent from another thread (the channel's compute worker, which made
// it), so it needs no hop through the JS thread:
//   ch.id()                       the channel's number for socketChannelSend
//   ch.onRelayed(cb(token, code, left))  completions of what socketChannelSend
//                                 queued (held weakly: the caller keeps cb)
//   ch.hold() / ch.release()      a packet some thread will send: keeps the
//                                 process alive meanwhile (the JS thread only)
//   ch.relayQueued(token)         whether that packet is queued or being sent
//   socketChannelSend(id, pieces, timeoutMs, token, result: Float64Array(2))
//     any thread. When no send is queued or running on the channel and the
//     socket is writable, sends what it takes at once (MSG_DONTWAIT) from the
//     calling thread; the rest
//     (or all of it, behind queued sends) goes to the channel's thread, whose
//     completion comes to onRelayed. result = [code, left]: code 0, all sent;
//     1, queued (`left` bytes); -errno, failed with `left` bytes not sent
//     (-ECANCELED: the channel is shut down or closed, nothing sent). One lock
//     per channel keeps its packets in the order their senders called.
#include <napi.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common.h"
#include "packet_decoder.h"
#include "packet_io.h"

namespace mfd {
namespace {

constexpr size_t kMaxIov = 64;  // pieces per sendmsg; more are sent in turns
// kStalled (common.h): the peer took or sent nothing for the operation's
// timeout (the kernel's own ETIMEDOUT, e.g. from keepalive, stays a connection error).

class SocketChannel;
struct Shared;

struct Op {
  enum Kind { kSend, kRecv, kRecvWrite };
  explicit Op(Kind k) : kind(k) {}
  Kind kind;
  // send
  std::vector<std::pair<const uint8_t*, size_t>> pieces;
  // recv
  uint8_t* buf = nullptr;
  size_t cap = 0, have = 0;
  uint8_t* ahead = nullptr;
  size_t ahead_cap = 0, ahead_got = 0;
  int64_t ahead_code = 0;
  int timeout_ms = -1;
  // recvHeaders: the header size (0: a plain recv) and where next_packet_size lies in one
  size_t unit = 0, size_at = 0;
  // recvWrite: the write of the pages read into buf (its pages are set on the thread)
  std::unique_ptr<WritePacketJob> write;
  bool on_file = false;
  // recvWrite with a decoder: buf decoded into pages[0, pages_cap) before the write
  DecoderRef decoder;
  uint8_t* pages = nullptr;
  size_t pages_cap = 0;
  int64_t decoded = 0;
  DecodeFailure decode_failure;
  // result
  int64_t code = 0;
  size_t amount = 0;  // send: bytes left; recv: bytes in buf
  // Queued by socketChannelSend: no callback of its own; completes through
  // the channel's onRelayed with `token`. The caller pins the pieces.
  bool relayed = false;
  double token = 0;
  Shared* shared = nullptr;  // relayed: alive until the completion ran
  // JS side, touched on the JS thread only
  SocketChannel* self = nullptr;  // kept alive by pinned
  Napi::FunctionReference cb;
  std::vector<Napi::ObjectReference> pinned;
};

// The longest single wait: a channel whose environment goes away (a worker
// ending with the channel open) notices within this and stops.
constexpr int kWaitSliceMs = 200;

// Waits until fd is ready for `events`; 0, or kStalled / -ECANCELED (`stop`) / -errno.
int64_t WaitFor(int fd, short events, int timeout_ms, const std::atomic<bool>& stop) {
  struct pollfd p{fd, events, 0};
  int left = timeout_ms;
  for (;;) {
    if (stop.load()) return -ECANCELED;
    const int slice = left < 0 || left > kWaitSliceMs ? kWaitSliceMs : left;
    const int r = poll(&p, 1, slice);
    if (r > 0) return 0;  // ready, hung up or failed: the next call says which
    if (r < 0 && errno != EINTR) return -errno;
    if (r == 0 && left >= 0) {
      left -= slice;
      if (left <= 0) return kStalled;
    }
  }
}

// After a send or recv failed: 0 to try again (interrupted, or ready after
// waiting), else the code to fail with.
int64_t RetryOrFail(int fd, short events, int timeout_ms, const std::atomic<bool>& stop) {
  if (errno == EINTR) return 0;
  if (errno == EAGAIN || errno == EWOULDBLOCK) return WaitFor(fd, events, timeout_ms, stop);
  return -errno;
}

// Moves `n` sent bytes off the front of iov[first...].
void Advance(std::vector<struct iovec>& iov, size_t& first, size_t n) {
  while (n > 0 && first < iov.size()) {
    if (n >= iov[first].iov_len) {
      n -= iov[first].iov_len;
      first++;
    } else {
      iov[first].iov_base = static_cast<uint8_t*>(iov[first].iov_base) + n;
      iov[first].iov_len -= n;
      n = 0;
    }
  }
}

size_t ToIov(const std::vector<std::pair<const uint8_t*, size_t>>& pieces,
             std::vector<struct iovec>* iov) {
  iov->reserve(pieces.size());
  size_t left = 0;
  for (const auto& p : pieces) {
    if (p.second == 0) continue;
    iov->push_back({const_cast<uint8_t*>(p.first), p.second});
    left += p.second;
  }
  return left;
}

void RunSend(int fd, Op* op, const std::atomic<bool>& stop) {
  std::vector<struct iovec> iov;
  size_t left = ToIov(op->pieces, &iov);
  size_t first = 0;
  while (left > 0) {
    struct msghdr msg{};
    msg.msg_iov = iov.data() + first;
    msg.msg_iovlen = std::min(iov.size() - first, kMaxIov);
    const ssize_t w = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0) {
      op->code = RetryOrFail(fd, POLLOUT, op->timeout_ms, stop);
      if (op->code < 0) break;
      continue;
    }
    left -= static_cast<size_t>(w);
    Advance(iov, first, static_cast<size_t>(w));
  }
  op->amount = left;
}

void RunRecv(int fd, Op* op, const std::atomic<bool>& stop) {
  size_t got = op->have;
  while (got < op->cap) {
    const ssize_t r = recv(fd, op->buf + got, op->cap - got, MSG_DONTWAIT);
    if (r > 0) {
      got += static_cast<size_t>(r);
      continue;
    }
    if (r == 0) break;  // end of stream
    op->code = RetryOrFail(fd, POLLIN, op->timeout_ms, stop);
    if (op->code < 0) break;
  }
  op->amount = got;
}

// What has already arrived after a full buf, into `ahead` (if any), without waiting.
void ReadAhead(int fd, Op* op) {
  if (op->amount < op->cap || op->ahead_cap == 0) return;
  ssize_t r;
  do {
    r = recv(fd, op->ahead, op->ahead_cap, MSG_DONTWAIT);
  } while (r < 0 && errno == EINTR);
  if (r > 0) op->ahead_got = static_cast<size_t>(r);
  if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK) op->ahead_code = -errno;
}

uint32_t LoadBigEndian32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

// recvHeaders: the first header, waited for; then whole headers that have arrived, while the last
// one read announces no payload (so that what follows it is a header too).
void RunRecvHeaders(int fd, Op* op, const std::atomic<bool>& stop) {
  const size_t room = op->cap;
  op->cap = op->unit;
  RunRecv(fd, op, stop);
  op->cap = room;
  if (op->code < 0 || op->amount < op->unit) return;
  size_t end = op->unit;
  while (end + op->unit <= room && LoadBigEndian32(op->buf + end - op->unit + op->size_at) == 0) {
    ssize_t r;
    do {
      r = recv(fd, op->buf + end, room - end, MSG_PEEK | MSG_DONTWAIT);
    } while (r < 0 && errno == EINTR);
    if (r <= 0) break;  // nothing more yet, the end, or a failure: the next read's to report
    size_t take = 0;
    const size_t arrived = static_cast<size_t>(r);
    while (take + op->unit <= arrived) {
      take += op->unit;
      if (LoadBigEndian32(op->buf + end + take - op->unit + op->size_at) != 0) break;
    }
    if (take == 0) break;
    // Peeked, so all there: one reader, so the read takes exactly those bytes.
    size_t got = 0;
    while (got < take) {
      const ssize_t n = recv(fd, op->buf + end + got, take - got, MSG_DONTWAIT);
      if (n > 0) {
        got += static_cast<size_t>(n);
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else {
        break;
      }
    }
    end += got;
    if (got < take) {
      // Not there after all: keep the whole headers read, and fail what was left of the last
      // (no peer can make this happen: it would be a kernel's broken MSG_PEEK).
      op->code = -EPROTO;
      end -= got % op->unit;
      break;
    }
  }
  op->amount = end;
}

// recvWrite: the payload into buf, then its pages digested and written.
void RunRecvWrite(int fd, Op* op, const std::atomic<bool>& stop) {
  RunRecv(fd, op, stop);
  if (op->amount < op->cap || op->code < 0) return;
  if (op->decoder) {
    op->decoded =
        op->decoder->Decode({{op->buf, op->cap}}, op->pages, op->pages_cap, &op->decode_failure);
    if (op->decoded != static_cast<int64_t>(op->pages_cap)) return;  // refused: nothing written
    op->write->pages = {{op->pages, op->pages_cap}};
  } else {
    op->decoded = static_cast<int64_t>(op->cap);
    op->write->pages = {{op->buf, op->cap}};
  }
  op->code = op->write->Run();
  op->on_file = op->code < 0;
  if (op->code == 0) ReadAhead(fd, op);
}

void Complete(Napi::Env env, Napi::Function, std::nullptr_t*, Op* op);
using Completions = Napi::TypedThreadSafeFunction<std::nullptr_t, Op, Complete>;

// What the thread and the JS object share; the thread keeps it alive until it ends.
struct Shared {
  ~Shared();
  int fd;
  uint32_t id = 0;  // socketChannelSend's name for it (Registry)
  std::mutex lock;
  std::condition_variable wake;
  std::deque<Op*> queue;
  bool closing = false;
  std::atomic<bool> cancelled{false};
  // The environment is going away: a waiting operation gives up (within kWaitSliceMs).
  std::atomic<bool> stop{false};
  // The completions' function is gone (its environment was torn down with the
  // channel open): the thread must not touch it. Under `lock`, as every use of
  // `done` from the thread is.
  bool done_gone = false;
  Completions done;
  // Sends queued or running on the thread, and whether one failed (then what
  // socketChannelSend queues is not sent: the stream is cut). Under `lock`.
  size_t sends = 0;
  bool send_failed = false;
  // Tokens of relayed sends queued or running. Under `lock`.
  std::vector<double> relays;
  // The JS object, while it lives (the JS thread only).
  SocketChannel* owner = nullptr;
};

// Every channel by id, for socketChannelSend from any thread.
std::mutex registry_lock;
std::unordered_map<uint32_t, std::weak_ptr<Shared>> registry;
uint32_t next_id = 1;

Shared::~Shared() {
  std::lock_guard<std::mutex> l(registry_lock);
  registry.erase(id);
}

// An operation that can no longer complete in JS: its references belong to a
// gone environment and are left alone.
void Drop(Op* op) {
  op->cb.SuppressDestruct();
  for (auto& p : op->pinned) p.SuppressDestruct();
  delete op;
}

// The completions' finalizer, on the JS thread: after the thread released the
// function (the normal end), or at teardown of the environment with the
// channel open. Either way the thread stops and never touches `done` again.
void DoneGone(Napi::Env, std::shared_ptr<Shared>* holder, std::nullptr_t*) {
  std::shared_ptr<Shared> s = *holder;
  delete holder;
  std::lock_guard<std::mutex> l(s->lock);
  s->done_gone = true;
  s->closing = true;
  s->cancelled = true;
  s->stop = true;
  s->wake.notify_one();
}

void ThreadMain(std::shared_ptr<Shared> s) {
  for (;;) {
    Op* op;
    {
      std::unique_lock<std::mutex> l(s->lock);
      s->wake.wait(l, [&] { return !s->queue.empty() || s->closing; });
      if (s->queue.empty()) break;
      op = s->queue.front();
      s->queue.pop_front();
    }
    bool cut;
    {
      std::lock_guard<std::mutex> l(s->lock);
      cut = op->relayed && s->send_failed;
    }
    if (s->cancelled.load() || cut) {
      op->code = -ECANCELED;
      op->amount = op->have;
      for (const auto& p : op->pieces) op->amount += p.second;  // a send: nothing of it sent
    } else if (op->kind == Op::kSend) {
      RunSend(s->fd, op, s->stop);
    } else if (op->kind == Op::kRecvWrite) {
      RunRecvWrite(s->fd, op, s->stop);
    } else if (op->unit > 0) {
      RunRecvHeaders(s->fd, op, s->stop);
    } else {
      RunRecv(s->fd, op, s->stop);
      ReadAhead(s->fd, op);
    }
    std::lock_guard<std::mutex> l(s->lock);
    if (op->kind == Op::kSend) {
      s->sends--;
      if (op->code < 0) s->send_failed = true;
      if (op->relayed) {
        auto it = std::find(s->relays.begin(), s->relays.end(), op->token);
        if (it != s->relays.end()) s->relays.erase(it);
      }
    }
    if (s->done_gone || s->done.NonBlockingCall(op) != napi_ok) Drop(op);
  }
  std::lock_guard<std::mutex> l(s->lock);
  for (Op* op : s->queue) Drop(op);
  s->queue.clear();
  if (!s->done_gone) s->done.Release();
}

class SocketChannel : public Napi::ObjectWrap<SocketChannel> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(
        env, "SocketChannel",
        {InstanceMethod<&SocketChannel::Send>("send"), InstanceMethod<&SocketChannel::Recv>("recv"),
         InstanceMethod<&SocketChannel::RecvHeaders>("recvHeaders"),
         InstanceMethod<&SocketChannel::RecvWrite>("recvWrite"),
         InstanceMethod<&SocketChannel::Shutdown>("shutdown"),
         InstanceMethod<&SocketChannel::Close>("close"), InstanceMethod<&SocketChannel::Id>("id"),
         InstanceMethod<&SocketChannel::OnRelayed>("onRelayed"),
         InstanceMethod<&SocketChannel::Hold>("hold"),
         InstanceMethod<&SocketChannel::Release>("release"),
         InstanceMethod<&SocketChannel::RelayQueued>("relayQueued")});
  }

  explicit SocketChannel(const Napi::CallbackInfo& info) : Napi::ObjectWrap<SocketChannel>(info) {
    size_t fd;
    if (!RequireArgs(info, 1) || !RequireSize(info, 0, "fd", &fd)) return;
    s_ = std::make_shared<Shared>();
    s_->fd = static_cast<int>(fd);
    auto* holder = new std::shared_ptr<Shared>(s_);
    s_->done = Completions::New(info.Env(), "mfd.SocketChannel", 0, 1, nullptr, DoneGone, holder);
    if (static_cast<napi_threadsafe_function>(s_->done) == nullptr) {
      // Not made (the environment is going away, the exception pending): no thread, no operations.
      delete holder;
      s_.reset();
      return;
    }
    s_->done.Unref(info.Env());  // only pending operations keep the process alive
    s_->owner = this;
    {
      std::lock_guard<std::mutex> l(registry_lock);
      s_->id = next_id++;
      registry[s_->id] = s_;
    }
    try {
      std::thread(ThreadMain, s_).detach();
    } catch (const std::system_error& e) {
      s_->done.Release();
      s_.reset();
      ThrowCode(info.Env(), "ERR_THREAD",
                std::string("SocketChannel: cannot start a thread: ") + e.what());
    }
  }

  ~SocketChannel() override {
    if (s_) {
      s_->owner = nullptr;
      Stop();
    }
  }

  // An operation finished: on the JS thread.
  void Finished(Napi::Env env) {
    if (--pending_ == 0 && s_) s_->done.Unref(env);
  }

  // A relayed send finished: on the JS thread.
  void Relayed(Napi::Env env, const Op& op) {
    if (relayed_cb_.IsEmpty()) return;
    Napi::Function cb = relayed_cb_.Value();  // a weak reference: the JS side holds the function
    if (cb.IsEmpty()) return;
    cb.Call({Napi::Number::New(env, op.token), Napi::Number::New(env, static_cast<double>(op.code)),
             Napi::Number::New(env, static_cast<double>(op.amount))});
  }

 private:
  void Stop() {
    std::lock_guard<std::mutex> l(s_->lock);
    s_->closing = true;
    s_->wake.notify_one();
  }

  bool Submit(const Napi::CallbackInfo& info, Op* op, size_t cb_arg) {
    if (!s_ || closed_) {
      delete op;
      Napi::Error::New(info.Env(), "SocketChannel: closed").ThrowAsJavaScriptException();
      return false;
    }
    op->self = this;
    op->cb = Napi::Persistent(info[cb_arg].As<Napi::Function>());
    op->pinned.push_back(Napi::Persistent(info.This().As<Napi::Object>()));
    if (pending_++ == 0) s_->done.Ref(info.Env());
    std::lock_guard<std::mutex> l(s_->lock);
    if (op->kind == Op::kSend) s_->sends++;
    s_->queue.push_back(op);
    s_->wake.notify_one();
    return true;
  }

  static int TimeoutArg(const Napi::CallbackInfo& info, size_t i) {
    const double t = info[i].As<Napi::Number>().DoubleValue();
    return t >= 0 && t < 2147483647.0 ? static_cast<int>(t) : -1;
  }

  // send(pieces, timeoutMs, cb)
  Napi::Value Send(const Napi::CallbackInfo& info) {
    auto* op = new Op(Op::kSend);
    std::vector<Napi::Value> keep;
    if (!RequireArgs(info, 3) || !RequireByteList(info, 0, "pieces", &op->pieces, &keep) ||
        !info[1].IsNumber() || !RequireFunction(info, 2)) {
      delete op;
      return info.Env().Undefined();
    }
    op->timeout_ms = TimeoutArg(info, 1);
    for (auto& v : keep) op->pinned.push_back(Napi::Persistent(v.As<Napi::Object>()));
    Submit(info, op, 2);
    return info.Env().Undefined();
  }

  // recv(buf, have, ahead, timeoutMs, cb)
  Napi::Value Recv(const Napi::CallbackInfo& info) {
    auto* op = new Op(Op::kRecv);
    if (!RequireArgs(info, 5) || !RequireBytes(info, 0, "buf") ||
        !RequireSize(info, 1, "have", &op->have) ||
        (!info[2].IsNull() && !RequireBytes(info, 2, "ahead")) || !info[3].IsNumber() ||
        !RequireFunction(info, 4)) {
      delete op;
      return info.Env().Undefined();
    }
    auto buf = info[0].As<Napi::Uint8Array>();
    op->buf = buf.Data();
    op->cap = buf.ByteLength();
    if (op->have > op->cap) {
      delete op;
      Napi::RangeError::New(info.Env(), "SocketChannel.recv: have is past the end of buf")
          .ThrowAsJavaScriptException();
      return info.Env().Undefined();
    }
    if (!info[2].IsNull()) {
      auto ahead = info[2].As<Napi::Uint8Array>();
      op->ahead = ahead.Data();
      op->ahead_cap = ahead.ByteLength();
      op->pinned.push_back(Napi::Persistent(ahead.As<Napi::Object>()));
    }
    op->timeout_ms = TimeoutArg(info, 3);
    op->pinned.push_back(Napi::Persistent(buf.As<Napi::Object>()));
    Submit(info, op, 4);
    return info.Env().Undefined();
  }

  // recvHeaders(buf, have, headerSize, sizeAt, timeoutMs, cb)
  Napi::Value RecvHeaders(const Napi::CallbackInfo& info) {
    auto* op = new Op(Op::kRecv);
    if (!RequireArgs(info, 6) || !RequireBytes(info, 0, "buf") ||
        !RequireSize(info, 1, "have", &op->have) ||
        !RequireSize(info, 2, "headerSize", &op->unit) ||
        !RequireSize(info, 3, "sizeAt", &op->size_at) || !info[4].IsNumber() ||
        !RequireFunction(info, 5)) {
      delete op;
      return info.Env().Undefined();
    }
    auto buf = info[0].As<Napi::Uint8Array>();
    op->buf = buf.Data();
    op->cap = buf.ByteLength();
    if (op->unit == 0 || op->unit > op->cap || op->have > op->unit || op->size_at + 4 > op->unit) {
      delete op;
      Napi::RangeError::New(info.Env(),
                            "SocketChannel.recvHeaders: need 0 < headerSize <= buf's length, have "
                            "<= headerSize and sizeAt + 4 <= headerSize")
          .ThrowAsJavaScriptException();
      return info.Env().Undefined();
    }
    op->timeout_ms = TimeoutArg(info, 4);
    op->pinned.push_back(Napi::Persistent(buf.As<Napi::Object>()));
    Submit(info, op, 5);
    return info.Env().Undefined();
  }

  // recvWrite(buf, fd, pageSize, offsets, normal, zero, blockSize, writeZeros, crc, ahead,
  //           decoder, pages, timeoutMs, cb)
  Napi::Value RecvWrite(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto* op = new Op(Op::kRecvWrite);
    op->write = std::make_unique<WritePacketJob>();
    WritePacketJob& w = *op->write;
    size_t fd, ps, block_size;
    if (!RequireArgs(info, 14) || !RequireBytes(info, 0, "buf") ||
        !RequireSize(info, 1, "fd", &fd) || !RequireSize(info, 2, "pageSize", &ps) ||
        !RequireSize(info, 4, "normal", &w.normal) || !RequireSize(info, 5, "zero", &w.zero) ||
        !RequireSize(info, 6, "blockSize", &block_size) || !info[7].IsBoolean() ||
        !RequireUint32Array(info, 8, "crc", w.normal) ||
        (!info[9].IsNull() && !RequireBytes(info, 9, "ahead")) ||
        (!info[11].IsNull() && !RequireBytes(info, 11, "pages")) || !info[12].IsNumber() ||
        !RequireFunction(info, 13)) {
      delete op;
      if (!env.IsExceptionPending())
        Napi::TypeError::New(env,
                             "recvWrite(buf, fd, pageSize, offsets, normal, zero, blockSize, "
                             "writeZeros, crc, ahead, decoder, pages, timeoutMs, cb)")
            .ThrowAsJavaScriptException();
      return env.Undefined();
    }
    auto buf = info[0].As<Napi::Uint8Array>();
    if (!info[10].IsNull()) {
      op->decoder = DecoderFromHandle(info[10]);
      if (!op->decoder) {
        delete op;
        Napi::TypeError::New(env, "recvWrite: decoder must be a stream's decoder() handle or null")
            .ThrowAsJavaScriptException();
        return env.Undefined();
      }
    }
    const bool offsets_ok = info[3].IsTypedArray() &&
                            info[3].As<Napi::TypedArray>().TypedArrayType() == napi_float64_array &&
                            info[3].As<Napi::Float64Array>().ElementLength() >= w.normal + w.zero;
    const size_t page_bytes = w.normal * ps;
    const bool sizes_ok =
        op->decoder
            ? !info[11].IsNull() && info[11].As<Napi::Uint8Array>().ByteLength() == page_bytes
            : buf.ByteLength() == page_bytes;
    if (!offsets_ok || ps == 0 || !sizes_ok) {
      delete op;
      Napi::RangeError::New(env,
                            "recvWrite: offsets must be a Float64Array of normal + zero; the "
                            "pages (buf without a decoder) normal * pageSize bytes")
          .ThrowAsJavaScriptException();
      return env.Undefined();
    }
    auto offsets = info[3].As<Napi::Float64Array>();
    auto crc = info[8].As<Napi::Uint32Array>();
    op->buf = buf.Data();
    op->cap = buf.ByteLength();
    w.fd = static_cast<int>(fd);
    w.page_size = ps;
    w.offsets = offsets.Data();
    w.block_size = static_cast<int64_t>(block_size);
    w.write_zeros = info[7].As<Napi::Boolean>().Value();
    w.crc_out = crc.Data();
    op->pinned.push_back(Napi::Persistent(buf.As<Napi::Object>()));
    op->pinned.push_back(Napi::Persistent(offsets.As<Napi::Object>()));
    op->pinned.push_back(Napi::Persistent(crc.As<Napi::Object>()));
    if (!info[9].IsNull()) {
      auto ahead = info[9].As<Napi::Uint8Array>();
      op->ahead = ahead.Data();
      op->ahead_cap = ahead.ByteLength();
      op->pinned.push_back(Napi::Persistent(ahead.As<Napi::Object>()));
    }
    if (op->decoder) {
      auto pages = info[11].As<Napi::Uint8Array>();
      op->pages = pages.Data();
      op->pages_cap = pages.ByteLength();
      op->pinned.push_back(Napi::Persistent(pages.As<Napi::Object>()));
    }
    op->timeout_ms = TimeoutArg(info, 12);
    Submit(info, op, 13);
    return env.Undefined();
  }

  Napi::Value Shutdown(const Napi::CallbackInfo& info) {
    if (s_ && !s_->cancelled.exchange(true)) shutdown(s_->fd, SHUT_RDWR);
    return info.Env().Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    if (s_ && !closed_) {
      closed_ = true;
      Stop();
    }
    return info.Env().Undefined();
  }

  Napi::Value Id(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), s_ ? s_->id : 0);
  }

  // onRelayed(cb): cb(token, code, left) for each send socketChannelSend queued.
  Napi::Value OnRelayed(const Napi::CallbackInfo& info) {
    if (!RequireArgs(info, 1) || !RequireFunction(info, 0)) return info.Env().Undefined();
    relayed_cb_ = Napi::Weak(info[0].As<Napi::Function>());
    return info.Env().Undefined();
  }

  // A send another thread will make: the process stays alive until release().
  Napi::Value Hold(const Napi::CallbackInfo& info) {
    if (s_ && pending_++ == 0) s_->done.Ref(info.Env());
    return info.Env().Undefined();
  }

  Napi::Value Release(const Napi::CallbackInfo& info) {
    if (s_ && pending_ > 0) Finished(info.Env());
    return info.Env().Undefined();
  }

  // relayQueued(token): a send socketChannelSend queued with `token` is still to complete.
  Napi::Value RelayQueued(const Napi::CallbackInfo& info) {
    if (!RequireArgs(info, 1) || !info[0].IsNumber()) return info.Env().Undefined();
    const double token = info[0].As<Napi::Number>().DoubleValue();
    bool queued = false;
    if (s_) {
      std::lock_guard<std::mutex> l(s_->lock);
      queued = std::find(s_->relays.begin(), s_->relays.end(), token) != s_->relays.end();
    }
    return Napi::Boolean::New(info.Env(), queued);
  }

  std::shared_ptr<Shared> s_;
  size_t pending_ = 0;
  bool closed_ = false;
  Napi::FunctionReference relayed_cb_;
};

// socketChannelSend(id, pieces, timeoutMs, token, result): see the top.
Napi::Value SocketChannelSend(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ByteSpans pieces;
  size_t id;
  if (!RequireArgs(info, 5) || !RequireSize(info, 0, "id", &id) ||
      !RequireByteList(info, 1, "pieces", &pieces) || !info[2].IsNumber() || !info[3].IsNumber() ||
      !info[4].IsTypedArray() ||
      info[4].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array ||
      info[4].As<Napi::Float64Array>().ElementLength() < 2) {
    if (!env.IsExceptionPending())
      Napi::TypeError::New(env, "socketChannelSend(id, pieces, timeoutMs, token, Float64Array(2))")
          .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  const double t = info[2].As<Napi::Number>().DoubleValue();
  const int timeout_ms = t >= 0 && t < 2147483647.0 ? static_cast<int>(t) : -1;
  const double token = info[3].As<Napi::Number>().DoubleValue();
  double* result = info[4].As<Napi::Float64Array>().Data();
  std::vector<struct iovec> iov;
  size_t left = ToIov(pieces, &iov);
  std::shared_ptr<Shared> s;
  {
    std::lock_guard<std::mutex> l(registry_lock);
    auto it = registry.find(static_cast<uint32_t>(id));
    if (it != registry.end()) s = it->second.lock();
  }
  result[0] = -ECANCELED;
  result[1] = static_cast<double>(left);
  if (!s) return env.Undefined();
  std::lock_guard<std::mutex> l(s->lock);
  if (s->closing || s->cancelled.load()) return env.Undefined();
  size_t first = 0;
  // Only into a socket the kernel calls writable (free room of at least half what it holds): one
  // with a few KiB free would take the packet in slivers, each a wake-up of the receiver, where the
  // channel's thread, waiting for POLLOUT, sends it in large pieces.
  struct pollfd writable{s->fd, POLLOUT, 0};
  if (s->sends == 0 && !s->send_failed && poll(&writable, 1, 0) == 1 &&
      (writable.revents & POLLOUT) != 0) {
    while (left > 0) {
      struct msghdr msg{};
      msg.msg_iov = iov.data() + first;
      msg.msg_iovlen = std::min(iov.size() - first, kMaxIov);
      const ssize_t w = sendmsg(s->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
        s->send_failed = true;
        result[0] = -errno;
        result[1] = static_cast<double>(left);
        return env.Undefined();
      }
      if (w < 0) break;  // the socket is full: the channel's thread waits for room
      left -= static_cast<size_t>(w);
      Advance(iov, first, static_cast<size_t>(w));
    }
  }
  result[1] = static_cast<double>(left);
  if (left == 0) {
    result[0] = 0;
    return env.Undefined();
  }
  auto* op = new Op(Op::kSend);
  for (size_t k = first; k < iov.size(); k++)
    op->pieces.push_back({static_cast<const uint8_t*>(iov[k].iov_base), iov[k].iov_len});
  op->relayed = true;
  op->token = token;
  op->shared = s.get();
  op->timeout_ms = timeout_ms;
  s->sends++;
  s->relays.push_back(token);
  s->queue.push_back(op);
  s->wake.notify_one();
  result[0] = 1;
  return env.Undefined();
}

void Complete(Napi::Env env, Napi::Function, std::nullptr_t*, Op* op) {
  if (env == nullptr) return Drop(op);  // the environment is going away: its references with it
  std::unique_ptr<Op> owned(op);
  Napi::HandleScope scope(env);
  if (op->relayed) {
    // No Finished(): the JS side holds (hold/release) what another thread sends.
    if (op->shared->owner != nullptr) op->shared->owner->Relayed(env, *op);
    return;
  }
  op->self->Finished(env);
  const double code = static_cast<double>(op->code);
  const double amount = static_cast<double>(op->amount);
  if (op->kind == Op::kSend) {
    op->cb.Call({env.Null(), Napi::Number::New(env, code), Napi::Number::New(env, amount)});
  } else if (op->kind == Op::kRecvWrite) {
    const DecodeFailure& why = op->decode_failure;
    op->cb.Call({env.Null(), Napi::Number::New(env, amount), Napi::Number::New(env, code),
                 Napi::Number::New(env, static_cast<double>(op->ahead_got)),
                 Napi::Number::New(env, static_cast<double>(op->ahead_code)),
                 Napi::Boolean::New(env, op->on_file),
                 Napi::Number::New(env, static_cast<double>(op->write->bad_page)),
                 Napi::Number::New(env, static_cast<double>(op->decoded)),
                 why.code != nullptr ? Napi::String::New(env, why.code) : env.Null(),
                 Napi::String::New(env, why.message)});
  } else {
    op->cb.Call({env.Null(), Napi::Number::New(env, amount), Napi::Number::New(env, code),
                 Napi::Number::New(env, static_cast<double>(op->ahead_got)),
                 Napi::Number::New(env, static_cast<double>(op->ahead_code))});
  }
}

}  // namespace

void InitSocketChannel(Napi::Env env, Napi::Object exports) {
  exports.Set("SocketChannel", SocketChannel::Define(env));
  exports.Set("socketChannelSend",
              Napi::Function::New(env, SocketChannelSend, "socketChannelSend"));
}

}  // namespace mfd
