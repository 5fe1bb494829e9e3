/**
 * A packet of pages sent from the thread that made it, without a hop through the channel's owner:
 * its header encoded into the caller's buffer, then header and payload handed to
 * native.socketChannelSend, which sends at once what the socket takes and queues the rest on the
 * channel's native thread, behind what is queued there (addon/socket_channel.cc). The channel's
 * compute worker sends the packets it compresses so; the pipeline, a packet wholly in holes.
 */
import { native } from '../native/load.js';
import { pageCount } from '../wire/constants.js';
import { encodePagesHeader } from '../wire/packet.js';

/**
 * Where and as what a packet goes: its header is encoded into `header` (shared with the main thread,
 * which recycles it with the slab) and header and payload go to native.socketChannelSend on channel
 * `id` (SocketChannel.id()), with `token` (from the channel's expectRelay on the main thread) for a
 * completion that comes to the main thread.
 */
export interface PacketSend {
  id: number;
  token: number;
  timeoutMs: number;
  header: Uint8Array;
  flags: number;
  packetNum: bigint;
  ramblock: Uint8Array;
  /** False: zero_pages 0 in the header (see PipelineOptions.zeroPagesInPackets). */
  zeroPagesInPackets: boolean;
}

/** A packet's page offsets (for its header) and socketChannelSend's result: reused, one packet at a time a thread. */
let offsets: Float64Array | null = null;
const sendResult = new Float64Array(2);

/**
 * Encodes the header of a packet of `pages` pages at `offset` (or at the pages `list` names), their zero
 * flags in `zero`, and sends it with `payload`. Returns what socketChannelSend did: code 0, sent; 1, the
 * rest (`left` bytes) queued on the channel's thread; < 0, failed (-errno) with `left` bytes not sent.
 */
export function sendPagesPacket(
  send: PacketSend,
  pageSize: number,
  offset: number,
  pages: number,
  list: Uint32Array | undefined,
  zero: Uint8Array,
  zeros: number,
  payload: Uint8Array,
): { code: number; left: number } {
  const perPacket = pageCount(pageSize);
  if (!offsets || offsets.length < perPacket) offsets = new Float64Array(perPacket);
  encodePagesHeader(
    send.header,
    send.header.length,
    {
      flags: send.flags,
      pageSize,
      packetNum: send.packetNum,
      ramblock: send.ramblock,
      pages,
      first: offset / pageSize,
      list,
      zero,
      zeros,
      zeroPagesInHeader: send.zeroPagesInPackets,
      payloadBytes: payload.length,
    },
    offsets,
  );
  native.socketChannelSend(send.id, payload.length > 0 ? [send.header, payload] : [send.header], send.timeoutMs, send.token, sendResult);
  return { code: sendResult[0]!, left: sendResult[1]! };
}
