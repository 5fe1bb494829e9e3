// A delay line for `mfd bench --link RATE,DELAY` on kernels without netem:
// two TUN devices and a thread that forwards every packet read from one to
// the other once it has waited DELAY (a FIFO per direction, so order is kept).
// The bench moves the devices into its two network namespaces (the fds stay
// valid) and shapes the rate with tbf on each device's egress.
//
// The devices carry a virtio-net header (IFF_VNET_HDR) with checksum offload:
// the sending stack leaves the TCP checksum to "hardware", the header says
// so, and the header goes to the other device with the packet, so neither
// side computes checksums in software (as over veth). Without offload support
// the kernel fills the checksum itself; the header is passed along all the same.
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <napi.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common.h"

namespace mfd {
namespace {

// Room for a virtio-net header and a 64 KiB packet; the bench keeps the MTU below.
constexpr size_t kBufBytes = 65536 + 64;
// A direction holds at most this many bytes waiting (a queue limit, like netem's).
constexpr size_t kMaxQueuedBytes = size_t{256} << 20;

uint64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000u + uint64_t(ts.tv_nsec);
}

struct Packet {
  uint64_t due_ns;
  size_t len;
  std::unique_ptr<uint8_t[]> data;
};

struct Direction {
  std::deque<Packet> queue;
  size_t queued_bytes = 0;
  std::atomic<uint64_t> packets{0}, bytes{0}, dropped{0}, max_queued_bytes{0};
};

// Opens a TUN device named `name` in this thread's network namespace; -1 and errno on failure.
int OpenTun(const std::string& name, std::string* err) {
  const int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    *err = std::string("open /dev/net/tun: ") + strerror(errno);
    return -1;
  }
  ifreq ifr;
  std::memset(&ifr, 0, sizeof(ifr));
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI | IFF_VNET_HDR;
  std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    *err = "TUNSETIFF " + name + ": " + strerror(errno);
    close(fd);
    return -1;
  }
  // Checksum offload only; without it the kernel checksums before handing packets over.
  ioctl(fd, TUNSETOFFLOAD, static_cast<unsigned long>(TUN_F_CSUM));
  return fd;
}

class DelayLine : public Napi::ObjectWrap<DelayLine> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(
        env, "DelayLine",
        {InstanceMethod("stats", &DelayLine::Stats), InstanceMethod("close", &DelayLine::Close)});
  }

  /* new DelayLine(nameA: string, nameB: string, delayUs: number) */
  explicit DelayLine(const Napi::CallbackInfo& info) : Napi::ObjectWrap<DelayLine>(info) {
    size_t delay_us = 0;
    if (!RequireArgs(info, 3) || !RequireSize(info, 2, "delayUs", &delay_us)) return;
    if (!info[0].IsString() || !info[1].IsString()) {
      Napi::TypeError::New(info.Env(), "Expected two device names").ThrowAsJavaScriptException();
      return;
    }
    delay_ns_ = uint64_t(delay_us) * 1000;
    std::string err;
    for (int i = 0; i < 2; i++) {
      const std::string name = info[i].As<Napi::String>().Utf8Value();
      if (name.empty() || name.size() >= IFNAMSIZ) {
        err = "device name \"" + name + "\" must be 1 to 15 bytes";
        break;
      }
      tun_[i] = OpenTun(name, &err);
      if (tun_[i] < 0) break;
    }
    if (err.empty()) {
      stop_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
      if (stop_fd_ < 0) err = std::string("eventfd: ") + strerror(errno);
    }
    if (!err.empty()) {
      CloseFds();
      ThrowCode(info.Env(), "ERR_BENCH_LINK", "delay line: " + err);
      return;
    }
    thread_ = std::thread([this] { Run(); });
  }

  ~DelayLine() override { Stop(); }

 private:
  void CloseFds() {
    for (int* fd : {&tun_[0], &tun_[1], &stop_fd_}) {
      if (*fd >= 0) close(*fd);
      *fd = -1;
    }
  }

  void Stop() {
    if (thread_.joinable()) {
      const uint64_t one = 1;
      if (write(stop_fd_, &one, sizeof(one)) <
          0) { /* the thread still sees POLLIN or never started */
      }
      thread_.join();
    }
    CloseFds();
  }

  std::unique_ptr<uint8_t[]> TakeBuffer() {
    if (free_.empty()) return std::unique_ptr<uint8_t[]>(new uint8_t[kBufBytes]);
    auto b = std::move(free_.back());
    free_.pop_back();
    return b;
  }

  // Reads every packet waiting on tun_[from] into its direction's FIFO.
  void Drain(int from) {
    Direction& d = dir_[from];
    for (;;) {
      auto buf = TakeBuffer();
      const ssize_t n = read(tun_[from], buf.get(), kBufBytes);
      if (n <= 0) {
        free_.push_back(std::move(buf));
        return;
      }
      if (d.queued_bytes + size_t(n) > kMaxQueuedBytes) {
        d.dropped.fetch_add(1, std::memory_order_relaxed);
        free_.push_back(std::move(buf));
        continue;
      }
      d.queued_bytes += size_t(n);
      if (d.queued_bytes > d.max_queued_bytes.load(std::memory_order_relaxed))
        d.max_queued_bytes.store(d.queued_bytes, std::memory_order_relaxed);
      d.queue.push_back({NowNs() + delay_ns_, size_t(n), std::move(buf)});
    }
  }

  // Writes the packets of direction `from` that are due; returns the next due time (0: none
  // waiting).
  uint64_t Deliver(int from, uint64_t now) {
    Direction& d = dir_[from];
    while (!d.queue.empty() && d.queue.front().due_ns <= now) {
      Packet& p = d.queue.front();
      if (write(tun_[1 - from], p.data.get(), p.len) == ssize_t(p.len)) {
        d.packets.fetch_add(1, std::memory_order_relaxed);
        d.bytes.fetch_add(p.len, std::memory_order_relaxed);
      } else {
        d.dropped.fetch_add(1, std::memory_order_relaxed);
      }
      d.queued_bytes -= p.len;
      free_.push_back(std::move(p.data));
      d.queue.pop_front();
    }
    return d.queue.empty() ? 0 : d.queue.front().due_ns;
  }

  void Run() {
    pthread_setname_np(pthread_self(), "mfd-delayline");
    // Wake-ups within a microsecond of the due time, not the default 50 us slack.
    prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
    // Ahead of the runs' processes on a busy machine (the bench runs as root): a packet waits for
    // the delay, not for a CPU. Its CPU use is bounded by the link's rate.
    sched_param sp;
    std::memset(&sp, 0, sizeof(sp));
    sp.sched_priority = 1;
    pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp);
    pollfd fds[3] = {{tun_[0], POLLIN, 0}, {tun_[1], POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    for (;;) {
      const uint64_t now = NowNs();
      uint64_t next = 0;
      for (int from = 0; from < 2; from++) {
        const uint64_t due = Deliver(from, now);
        if (due != 0 && (next == 0 || due < next)) next = due;
      }
      timespec wait;
      if (next != 0) {
        const uint64_t ns = next > now ? next - now : 0;
        wait.tv_sec = time_t(ns / 1000000000u);
        wait.tv_nsec = long(ns % 1000000000u);
      }
      const int r = ppoll(fds, 3, next != 0 ? &wait : nullptr, nullptr);
      if (r < 0 && errno != EINTR) break;
      if (fds[2].revents != 0) break;
      for (int from = 0; from < 2; from++) {
        if (fds[from].revents & (POLLERR | POLLHUP | POLLNVAL))
          fds[from].fd = -1;  // device gone
        else if (fds[from].revents & POLLIN)
          Drain(from);
      }
    }
    timespec cpu;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu);
    cpu_ns_.store(uint64_t(cpu.tv_sec) * 1000000000u + uint64_t(cpu.tv_nsec));
  }

  double CpuSec() {
    if (thread_.joinable()) {
      clockid_t id;
      timespec cpu;
      if (pthread_getcpuclockid(thread_.native_handle(), &id) == 0 && clock_gettime(id, &cpu) == 0)
        return double(cpu.tv_sec) + double(cpu.tv_nsec) / 1e9;
    }
    return double(cpu_ns_.load()) / 1e9;
  }

  /* stats() -> { cpuSec, forward: { packets, bytes, dropped, maxQueuedBytes }, back: {...} } */
  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto o = Napi::Object::New(env);
    o.Set("cpuSec", Napi::Number::New(env, CpuSec()));
    const char* names[2] = {"forward", "back"};
    for (int i = 0; i < 2; i++) {
      auto d = Napi::Object::New(env);
      d.Set("packets", Napi::Number::New(env, double(dir_[i].packets.load())));
      d.Set("bytes", Napi::Number::New(env, double(dir_[i].bytes.load())));
      d.Set("dropped", Napi::Number::New(env, double(dir_[i].dropped.load())));
      d.Set("maxQueuedBytes", Napi::Number::New(env, double(dir_[i].max_queued_bytes.load())));
      o.Set(names[i], d);
    }
    return o;
  }

  /* close() -> stats(): stops the thread and closes the devices (which removes them). */
  Napi::Value Close(const Napi::CallbackInfo& info) {
    Stop();
    return Stats(info);
  }

  uint64_t delay_ns_ = 0;
  int tun_[2] = {-1, -1};
  int stop_fd_ = -1;
  Direction dir_[2];
  std::vector<std::unique_ptr<uint8_t[]>> free_;
  std::atomic<uint64_t> cpu_ns_{0};
  std::thread thread_;
};

}  // namespace

void InitDelayLine(Napi::Env env, Napi::Object exports) {
  exports.Set("DelayLine", DelayLine::Define(env));
}

}  // namespace mfd
