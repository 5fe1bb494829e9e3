// A method's packet decoder that a channel's own thread can run: the receiver
// reads a packet's payload, decodes it into the packet's pages, digests and
// writes them in one operation of that thread (SocketChannel::recvWrite), with
// no hop to another thread, as QEMU's channel threads decode into guest RAM.
//
// A decoder belongs to the JS stream object that made it (ZstdStream, ...) and
// is shared with every operation that runs it, so closing the JS object while
// an operation is queued frees nothing under it. One thread at a time runs a
// decoder: a channel's packets are decoded in order, by its thread alone.
#ifndef MFD_PACKET_DECODER_H_
#define MFD_PACKET_DECODER_H_

#include <napi.h>

#include <cstdint>
#include <memory>
#include <string>

#include "common.h"
#include "spans.h"

namespace mfd {

// Why a payload did not decode: code "ERR_PAYLOAD_CORRUPT" or "ERR_PAYLOAD_SIZE", and what.
struct DecodeFailure {
  const char* code = nullptr;
  std::string message;
};

class PacketDecoder {
 public:
  virtual ~PacketDecoder() = default;
  // Decodes every byte of `pieces` (one packet's payload, in order) into out[0, cap): the bytes
  // written (the caller compares them with the pages the header announced), or -1 with *why set.
  // A payload that would decode to more than cap bytes fails with ERR_PAYLOAD_SIZE.
  virtual int64_t Decode(const ByteSpans& pieces, uint8_t* out, size_t cap, DecodeFailure* why) = 0;
};

using DecoderRef = std::shared_ptr<PacketDecoder>;

// A stream's decompress() for JS (a compute worker's): the bytes `d` decoded into `out`, or, for a
// payload it refused, the failure thrown with its code.
inline Napi::Value DecodeForJs(Napi::Env env, PacketDecoder& d, const ByteSpans& pieces,
                               Napi::Uint8Array out) {
  DecodeFailure why;
  const int64_t got = d.Decode(pieces, out.Data(), out.ByteLength(), &why);
  if (got < 0) {
    ThrowCode(env, why.code, why.message);
    return env.Undefined();
  }
  return Napi::Number::New(env, static_cast<double>(got));
}

namespace decoder_handle {
// Marks the External that carries a DecoderRef, so no other External passes for one.
constexpr napi_type_tag kTag = {0x6d66642d64656364ULL, 0x6f6465722d726566ULL};
}  // namespace decoder_handle

// A handle JS passes to recvWrite: an External holding its own reference to `d`.
inline Napi::Value DecoderHandle(Napi::Env env, const DecoderRef& d) {
  auto ext = Napi::External<DecoderRef>::New(env, new DecoderRef(d),
                                             [](Napi::Env, DecoderRef* r) { delete r; });
  ext.TypeTag(&decoder_handle::kTag);
  return ext;
}

// The decoder behind a handle DecoderHandle made; null for any other value.
inline DecoderRef DecoderFromHandle(const Napi::Value& v) {
  if (!v.IsExternal()) return nullptr;
  auto ext = v.As<Napi::External<DecoderRef>>();
  if (!ext.CheckTypeTag(&decoder_handle::kTag)) return nullptr;
  return *ext.Data();
}

}  // namespace mfd

#endif  // MFD_PACKET_DECODER_H_
