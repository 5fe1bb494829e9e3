/**
 * Fuzz targets of `mfd recv --qemu` (src/qemu/): the main-channel parser fed
 * mutated valid "QEVM" streams in random chunkings, and a live receiveQemu
 * over loopback fed mutated main-channel and multifd bytes. The corpus is
 * whole migrations built here as a QEMU source writes them (configuration,
 * RAM START with the block list, two passes over the blocks in PART sections,
 * END, device state, EOF and VM description), in both sync modes, with and
 * without multifd channels.
 */
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { PathTally } from '../../../src/offload/paths.js';
import { MAX_TOTAL_RAM } from '../../../src/control/protocol.js';
import { silentLogger } from '../../../src/log.js';
import { getMethod } from '../../../src/methods/index.js';
import {
  QEMU_VM_CONFIGURATION,
  QEMU_VM_EOF,
  QEMU_VM_FILE_MAGIC,
  QEMU_VM_FILE_VERSION,
  QEMU_VM_SECTION_END,
  QEMU_VM_SECTION_FOOTER,
  QEMU_VM_SECTION_FULL,
  QEMU_VM_SECTION_PART,
  QEMU_VM_SECTION_START,
  QEMU_VM_SUBSECTION,
  QEMU_VM_VMDESCRIPTION,
  RAM_IDSTR,
  RAM_SAVE_FLAG_CONTINUE,
  RAM_SAVE_FLAG_EOS,
  RAM_SAVE_FLAG_MEM_SIZE,
  RAM_SAVE_FLAG_MULTIFD_FLUSH,
  RAM_SAVE_FLAG_PAGE,
  RAM_SAVE_FLAG_ZERO,
  Writer,
  type SyncMode,
} from '../../../src/qemu/format.js';
import { StreamReader, parseMainChannel, type MainSummary, type RamBlockInfo } from '../../../src/qemu/main-channel.js';
import { receiveQemu } from '../../../src/qemu/recv.js';
import { ramblockFileName } from '../../../src/image/ramblock.js';
import { encodeInitPacket } from '../../../src/wire/init-packet.js';
import { encodePacketHeader } from '../../../src/wire/packet.js';
import { MULTIFD_FLAG_SYNC, packetHeaderSize, pageCount } from '../../../src/wire/constants.js';
import { type FuzzTarget, typed, violation } from './harness.js';
import { applyByteOps, byteOps, edgeU32, makePages, split, type ByteOp, type PageKind } from './mutate.js';
import { mutateStream, streamMutation, type ChannelStream, type StreamMutation, type StreamPacket } from './streams.js';
import { FUZZ_UUID } from './wire.js';

const PS = 4096;
const SECTION_ID = 2;

export interface QemuBlockSpec {
  name: string;
  /** Page kinds of the first pass, one per page. */
  pass1: readonly PageKind[];
  /** Pages sent again in the second pass, with their new kind. */
  pass2: readonly [page: number, kind: PageKind][];
}

export interface QemuMigrationSpec {
  blocks: readonly QemuBlockSpec[];
  /** Multifd channels (0: pages as PAGE records on the main channel). */
  channels: number;
  method: string;
  syncMode: SyncMode;
  /** Zero pages in the multifd packets (QEMU 9.0+) rather than as ZERO records. */
  multifdZero: boolean;
  /** Pages per multifd packet at most. */
  perPacket: number;
  vmDescription: boolean;
  seed: number;
}

/** A whole migration as a QEMU source sends it, and what a receiver must make of it. */
export interface QemuMigration {
  spec: QemuMigrationSpec;
  main: Buffer;
  /** Where each RAM record's be64 starts in `main`. */
  records: number[];
  /** Each multifd channel: its init packet and packets. */
  channels: Pick<ChannelStream, 'init' | 'packets'>[];
  /** Every block's content after both passes. */
  images: Map<string, Buffer>;
  /** The bytes after the RAM END section. */
  deviceState: Buffer;
}

/** Builds `spec` with mfd's method senders for the multifd payloads. */
export async function buildQemuMigration(spec: QemuMigrationSpec): Promise<QemuMigration> {
  const w = new Writer();
  const records: number[] = [];
  const record = (v: number): Writer => {
    records.push(w.length);
    return w.u64(v);
  };
  const machine = Buffer.from('pc-q35-fuzz');
  w.u32(QEMU_VM_FILE_MAGIC).u32(QEMU_VM_FILE_VERSION);
  w.u8(QEMU_VM_CONFIGURATION).u32(machine.length).bytes(machine);
  w.u8(QEMU_VM_SUBSECTION).str('configuration/target-page-bits').u32(1).u32(12);
  w.u8(QEMU_VM_SUBSECTION).str('configuration/uuid').u32(1).bytes(FUZZ_UUID);

  const method = getMethod(spec.method);
  const hs = packetHeaderSize(PS);
  const chans = Array.from({ length: spec.channels }, (_, i) => ({
    init: encodeInitPacket(FUZZ_UUID, i),
    packets: [] as StreamPacket[],
    packetNum: 0n,
  }));
  const senders = chans.map((_, i) =>
    method.sendSetup({ channel: i, pageSize: PS, params: method.params({}), tally: new PathTally('fuzz') }),
  );
  const images = new Map<string, Buffer>(spec.blocks.map((b) => [b.name, Buffer.alloc(b.pass1.length * PS)]));
  const packet = (c: number, flags: number, block: string, normal: number[], zero: number[], payload: Uint8Array[]): void => {
    const ch = chans[c]!;
    const size = payload.reduce((a, p) => a + p.length, 0);
    const header = encodePacketHeader(new Uint8Array(hs), hs, {
      flags,
      pagesAlloc: pageCount(PS),
      normalPages: normal.length,
      zeroPages: zero.length,
      nextPacketSize: size,
      packetNum: ch.packetNum++,
      ramblock: Buffer.from(normal.length + zero.length > 0 ? block : ''),
      offsets: [...normal, ...zero],
    });
    ch.packets.push({ header, payload: Buffer.concat(payload) });
  };
  /** A sync point: SYNC on every channel, and in round mode the MULTIFD_FLUSH record. */
  const sync = (): void => {
    chans.forEach((_, c) => packet(c, MULTIFD_FLAG_SYNC, '', [], [], []));
    if (spec.syncMode === 'round') record(RAM_SAVE_FLAG_MULTIFD_FLUSH);
  };
  const endSection = (): void => {
    if (spec.syncMode === 'section' || spec.channels === 0) chans.forEach((_, c) => packet(c, MULTIFD_FLAG_SYNC, '', [], [], []));
    record(RAM_SAVE_FLAG_EOS).u8(QEMU_VM_SECTION_FOOTER).u32(SECTION_ID);
  };
  let current: string | null = null;
  const pageRecord = (block: string, offset: number, flag: number): void => {
    if (block === current) record(offset + flag + RAM_SAVE_FLAG_CONTINUE);
    else record(offset + flag).str(block);
    current = block;
  };
  let next = 0;
  const pass = async (pages: (b: QemuBlockSpec) => [number, PageKind][], seed: number): Promise<void> => {
    for (const b of spec.blocks) {
      const image = images.get(b.name)!;
      const list = pages(b);
      for (let i = 0; i < list.length; i += spec.perPacket) {
        const normal: number[] = [];
        const zero: number[] = [];
        const data: Buffer[] = [];
        for (const [p, kind] of list.slice(i, i + spec.perPacket)) {
          const page = makePages(kind, 1, PS, seed + p);
          page.copy(image, p * PS);
          const isZero = kind === 'zero';
          if (spec.channels === 0) {
            pageRecord(b.name, p * PS, isZero ? RAM_SAVE_FLAG_ZERO : RAM_SAVE_FLAG_PAGE);
            w.bytes(isZero ? Buffer.from([0]) : page);
          } else if (isZero && !spec.multifdZero) {
            pageRecord(b.name, p * PS, RAM_SAVE_FLAG_ZERO);
            w.u8(0);
          } else if (isZero) {
            zero.push(p * PS);
          } else {
            normal.push(p * PS);
            data.push(page);
          }
        }
        if (normal.length + zero.length === 0) continue;
        const c = next++ % spec.channels;
        const payload = normal.length > 0 ? await senders[c]!.prepare([Buffer.concat(data)], normal.length) : [];
        packet(c, method.flag, b.name, normal, zero, payload);
      }
    }
  };
  try {
    // START: the block list (and in round mode the setup sync).
    const total = spec.blocks.reduce((a, b) => a + b.pass1.length * PS, 0);
    w.u8(QEMU_VM_SECTION_START).u32(SECTION_ID).str(RAM_IDSTR).u32(0).u32(4);
    record(total + RAM_SAVE_FLAG_MEM_SIZE);
    for (const b of spec.blocks) w.str(b.name).u64(b.pass1.length * PS);
    if (spec.syncMode === 'round' && spec.channels > 0) sync();
    endSection();
    // Two passes, each in its own PART and ended by a sync.
    w.u8(QEMU_VM_SECTION_PART).u32(SECTION_ID);
    await pass((b) => b.pass1.map((k, p) => [p, k]), spec.seed);
    if (spec.syncMode === 'round' && spec.channels > 0) sync();
    endSection();
    w.u8(QEMU_VM_SECTION_PART).u32(SECTION_ID);
    await pass((b) => [...b.pass2], spec.seed + 1000);
    if (spec.syncMode === 'round' && spec.channels > 0) sync();
    endSection();
    w.u8(QEMU_VM_SECTION_END).u32(SECTION_ID);
    endSection();
  } finally {
    senders.forEach((s) => s.cleanup());
  }
  const ds = new Writer();
  ds.u8(QEMU_VM_SECTION_FULL)
    .u32(3)
    .str('timer')
    .u32(0)
    .u32(2)
    .bytes(makePages('random', 1, 64, spec.seed))
    .u8(QEMU_VM_SECTION_FOOTER)
    .u32(3);
  ds.u8(QEMU_VM_EOF);
  if (spec.vmDescription) {
    const desc = Buffer.from(JSON.stringify({ page_size: PS, devices: [{ name: 'timer', instance_id: 0 }] }));
    ds.u8(QEMU_VM_VMDESCRIPTION).u32(desc.length).bytes(desc);
  }
  const deviceState = ds.take();
  w.bytes(deviceState);
  return { spec, main: w.take(), records, channels: chans.map(({ init, packets }) => ({ init, packets })), images, deviceState };
}

const kinds = (n: number, cycle: readonly PageKind[]): PageKind[] => Array.from({ length: n }, (_, i) => cycle[i % cycle.length]!);

/** The corpus: each sync mode, with and without multifd, three methods, zero pages both ways. */
export const QEMU_CORPUS: readonly QemuMigrationSpec[] = [
  {
    blocks: [
      {
        name: 'pc.ram',
        pass1: kinds(12, ['text', 'zero', 'random', 'sparse']),
        pass2: [
          [1, 'text'],
          [2, 'zero'],
          [5, 'sparse'],
        ],
      },
      { name: '/rom@etc/acpi/tables', pass1: kinds(2, ['sparse', 'zero']), pass2: [] },
    ],
    channels: 0,
    method: 'none',
    syncMode: 'section',
    multifdZero: false,
    perPacket: 4,
    vmDescription: true,
    seed: 1,
  },
  {
    blocks: [
      {
        name: 'pc.ram',
        pass1: kinds(16, ['random', 'zero', 'text', 'zero', 'sparse']),
        pass2: [
          [0, 'zero'],
          [1, 'text'],
          [9, 'random'],
        ],
      },
      { name: 'vga.vram', pass1: kinds(3, ['zero', 'text']), pass2: [[0, 'sparse']] },
    ],
    channels: 2,
    method: 'none',
    syncMode: 'round',
    multifdZero: true,
    perPacket: 3,
    vmDescription: true,
    seed: 2,
  },
  {
    blocks: [
      {
        name: 'mem',
        pass1: kinds(10, ['text', 'zero', 'sparse']),
        pass2: [
          [3, 'text'],
          [4, 'zero'],
        ],
      },
    ],
    channels: 1,
    method: 'zstd',
    syncMode: 'section',
    multifdZero: false,
    perPacket: 4,
    vmDescription: false,
    seed: 3,
  },
  {
    blocks: [
      {
        name: 'pc.ram',
        pass1: kinds(9, ['sparse', 'text', 'zero']),
        pass2: [
          [2, 'random'],
          [8, 'zero'],
        ],
      },
      { name: 'pc.bios', pass1: kinds(2, ['text']), pass2: [] },
    ],
    channels: 2,
    method: 'zlib',
    syncMode: 'round',
    multifdZero: false,
    perPacket: 2,
    vmDescription: true,
    seed: 4,
  },
];

export type MainMutation =
  | { k: 'bytes'; ops: ByteOp[] }
  /** Overwrites a RAM record's be64: `offset` (page index or edge value) with `flags`. */
  | { k: 'record'; index: number; offset: number; flags: number };

/** Flag combinations on the edges of the record checks. */
const RECORD_FLAGS = [
  0x02, 0x04, 0x08, 0x10, 0x20, 0x22, 0x28, 0x24, 0x30, 0x40, 0x80, 0x100, 0x200, 0x202, 0x208, 0x210, 0x220, 0x400, 0x800, 0x0,
] as const;
/** Offsets (bytes) on the edges: in range, past the end, unaligned, beyond 2^53, the 64 TiB cap. */
const RECORD_OFFSETS = [
  0,
  4096,
  8192,
  40960,
  65536,
  4096 * 16,
  4096 * 1024,
  2 ** 32,
  2 ** 40,
  MAX_TOTAL_RAM,
  MAX_TOTAL_RAM + 4096,
  2 ** 52,
  2 ** 63,
] as const;

const mainMutation: fc.Arbitrary<MainMutation> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ k: fc.constant('bytes' as const), ops: byteOps(3) }) },
  {
    weight: 2,
    arbitrary: fc.record({
      k: fc.constant('record' as const),
      index: fc.nat({ max: 1000 }),
      offset: fc.oneof(
        fc.constantFrom(...RECORD_OFFSETS),
        edgeU32.map((v) => v * 4096),
      ),
      flags: fc.constantFrom(...RECORD_FLAGS),
    }),
  },
);

const mainMutations = fc.oneof(
  { weight: 1, arbitrary: fc.constant([] as MainMutation[]) },
  { weight: 8, arbitrary: fc.array(mainMutation, { minLength: 1, maxLength: 3 }) },
);

/** `m.main` after the mutations. */
function mutateMain(m: QemuMigration, muts: readonly MainMutation[]): Buffer {
  let b = Buffer.from(m.main);
  for (const x of muts) {
    if (x.k === 'bytes') {
      b = Buffer.from(applyByteOps(b, x.ops));
      continue;
    }
    const at = m.records[x.index % m.records.length]!;
    if (at + 8 > b.length) continue;
    const v = BigInt(x.offset) - (BigInt(x.offset) % 4096n) + BigInt(x.flags);
    b.writeBigUInt64BE(BigInt.asUintN(64, v), at);
  }
  return b;
}

/** A socket as far as StreamReader uses it. */
class FakeSocket extends EventEmitter {
  pause(): this {
    return this;
  }
  resume(): this {
    return this;
  }
}

/** Device state accepted in the parser runs: small, so the cap is reached. */
const FUZZ_MAX_DEVICE_STATE = 4096;
/** A run of the parser must settle this soon after its input ended. */
const PARSE_HANG_MS = 2000;

interface ParserInput {
  seed: number;
  mutations: readonly MainMutation[];
  cuts: readonly number[];
}

/** Parses `bytes` (in `cuts` pieces, a macrotask apart) and checks everything the parser hands on. */
async function parseChecked(m: QemuMigration, bytes: Buffer, cuts: readonly number[], unmutated: boolean): Promise<string> {
  const sock = new FakeSocket();
  const reader = new StreamReader(sock as unknown as net.Socket, 'fuzz main channel');
  let blocks: Map<string, number> | null = null;
  let lastEpoch = 0;
  let zeros = 0;
  let pages = 0;
  let deviceBytes = 0;
  const model = new Map<string, Buffer>();
  function fail(why: string): never {
    return violation(`main channel: ${why}`);
  }
  const parsed = parseMainChannel(
    reader,
    {
      onConfiguration(machine, raw) {
        if (machine.length > 256 || raw.length > 128 * 1024)
          fail(`configuration of ${raw.length} bytes, machine type of ${machine.length}`);
      },
      async onRamStart(_info, list: RamBlockInfo[]) {
        if (blocks) fail('a second block list');
        if (list.length === 0 || list.length > 4096) fail(`${list.length} ramblocks`);
        const total = list.reduce((a, b) => a + b.size, 0);
        if (total > MAX_TOTAL_RAM) fail(`ramblocks of ${total} bytes in all`);
        blocks = new Map();
        for (const b of list) {
          if (b.name === '' || blocks.has(b.name) || !(b.size > 0) || b.size % PS !== 0) fail(`ramblock ${JSON.stringify(b)}`);
          blocks.set(b.name, b.size);
          if (unmutated) model.set(b.name, Buffer.alloc(b.size));
        }
      },
      onZero(block, offset, fill, epoch) {
        check(block, offset, epoch);
        zeros++;
        model.get(block)?.fill(fill, offset, offset + PS);
      },
      onPage(block, offset, data, epoch) {
        check(block, offset, epoch);
        if (data.length !== PS) fail(`page of ${data.length} bytes`);
        pages++;
        if (model.has(block)) data.copy(model.get(block)!, offset);
      },
      onDeviceState(chunk) {
        deviceBytes += chunk.length;
        if (deviceBytes > FUZZ_MAX_DEVICE_STATE)
          fail(`${deviceBytes} bytes of device state handed on, the cap is ${FUZZ_MAX_DEVICE_STATE}`);
      },
    },
    'fuzz main channel',
    PS,
    FUZZ_MAX_DEVICE_STATE,
  ).then(
    (s) => s,
    (e: unknown) => e,
  );
  function check(block: string, offset: number, epoch: number): void {
    const size = blocks?.get(block);
    if (size === undefined) fail(`a page of ramblock "${block}", which is not in the block list`);
    if (!(offset >= 0 && offset < size && offset % PS === 0)) fail(`page offset ${offset} in ramblock "${block}" of ${size} bytes`);
    if (!Number.isInteger(epoch) || epoch < lastEpoch) fail(`epoch ${epoch} after ${lastEpoch}`);
    lastEpoch = epoch;
  }
  for (const piece of split(bytes, cuts)) {
    sock.emit('data', Buffer.from(piece));
    await new Promise((r) => setImmediate(r));
  }
  sock.emit('end');
  let timer: NodeJS.Timeout | undefined;
  const end = await Promise.race([parsed, new Promise<'hang'>((r) => (timer = setTimeout(() => r('hang'), PARSE_HANG_MS)))]);
  clearTimeout(timer);
  if (end === 'hang') fail(`did not settle within ${PARSE_HANG_MS} ms of the stream's end`);
  if (end instanceof Error || !(typeof end === 'object' && end !== null && 'syncPoints' in end)) return typed(end, 'main channel').code;
  const s = end as MainSummary;
  if (s.zeroRecords !== zeros || s.pageRecords !== pages || s.deviceStateBytes !== deviceBytes)
    fail(`summary ${JSON.stringify(s)} disagrees with ${zeros} zero, ${pages} page records, ${deviceBytes} device bytes handed on`);
  if (!blocks) fail('success without a block list');
  if (unmutated) {
    if (deviceBytes !== m.deviceState.length) fail(`device state of ${deviceBytes} bytes, sent ${m.deviceState.length}`);
    if (m.spec.channels === 0)
      for (const [name, image] of m.images) if (!model.get(name)?.equals(image)) fail(`ramblock "${name}" differs from what was sent`);
  }
  return 'ok';
}

async function qemuCorpus(): Promise<QemuMigration[]> {
  const out: QemuMigration[] = [];
  for (const spec of QEMU_CORPUS) out.push(await buildQemuMigration(spec));
  return out;
}

/** (a) The main-channel parser: mutated valid streams, random chunkings. */
export async function qemuMainTarget(): Promise<FuzzTarget<ParserInput>> {
  const corpus = await qemuCorpus();
  return {
    name: 'qemu-main',
    corpusSize: corpus.length,
    async: true,
    arbitrary: fc.record({
      seed: fc.nat({ max: corpus.length - 1 }),
      mutations: mainMutations,
      cuts: fc.array(fc.nat({ max: 1 << 20 }), { maxLength: 6 }),
    }),
    run(x) {
      const m = corpus[x.seed]!;
      return parseChecked(m, mutateMain(m, x.mutations), x.cuts, x.mutations.length === 0);
    },
    close() {},
  };
}

/** The receiver's idle timeout in the end-to-end runs. */
const RECEIVER_TIMEOUT_MS = 1000;
/** Longest an end-to-end run may take: the receiver's timeout and slack. */
const HANG_MS = 5000;

interface RecvInput {
  seed: number;
  main: readonly MainMutation[];
  /** Mutations of one multifd channel's stream each (header fields, offsets, names, payloads, dropped or replayed packets, bytes). */
  channels: readonly { channel: number; muts: StreamMutation[] }[];
  cuts: readonly number[];
  /** The main channel connects first (QEMU's order), else after the multifd channels. */
  mainFirst: boolean;
}

function connectTo(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => resolve(s));
    s.on('error', reject);
  });
}

/** Writes `bytes` in pieces and ends the connection (none when the receiver has stopped listening: it failed already). */
async function sendAll(port: number, bytes: Buffer, cuts: readonly number[], sockets: net.Socket[]): Promise<void> {
  const s = await connectTo(port).catch(() => null);
  if (!s) return;
  sockets.push(s);
  s.removeAllListeners('error');
  s.on('error', () => {});
  for (const piece of split(bytes, cuts)) s.write(piece);
  s.end();
}

/** Everything under `dir`, as relative paths. */
function listTree(dir: string): string[] {
  return (fs.readdirSync(dir, { recursive: true }) as string[]).sort();
}

/** One live migration of `main` and `channels` into a receiver writing to `out` (inside `box`). */
async function receiveChecked(
  m: QemuMigration,
  main: Buffer,
  channels: Buffer[],
  x: RecvInput,
  box: string,
  out: string,
  unmutated: boolean,
): Promise<string> {
  const abort = new AbortController();
  const sockets: net.Socket[] = [];
  let listening!: (port: number) => void;
  const port = new Promise<number>((r) => (listening = r));
  const ended: Promise<unknown> = receiveQemu({
    host: '127.0.0.1',
    port: 0,
    outputDir: out,
    logger: silentLogger,
    timeoutMs: RECEIVER_TIMEOUT_MS,
    signal: abort.signal,
    onListening: (a) => listening(a.port),
  }).then(
    (r) => r,
    (e: unknown) => ({ error: e }),
  );
  let timer: NodeJS.Timeout | undefined;
  try {
    const p = await Promise.race([port, ended.then(() => 0)]);
    if (p === 0) violation(`receiver did not listen: ${JSON.stringify(await ended)}`);
    const sendMain = (): Promise<void> => sendAll(p, main, x.cuts, sockets);
    if (x.mainFirst) await sendMain();
    await Promise.all(channels.map((c) => sendAll(p, c, x.cuts, sockets)));
    if (!x.mainFirst) await sendMain();
    const end = await Promise.race([ended, new Promise<'hang'>((r) => (timer = setTimeout(() => r('hang'), HANG_MS)))]);
    if (end === 'hang') {
      abort.abort('fuzz: hang');
      await ended;
      violation(`receiver did not end within ${HANG_MS} ms of every connection's end (its timeout is ${RECEIVER_TIMEOUT_MS} ms)`);
    }
    const outside = listTree(box).filter((f) => f !== 'out' && !f.startsWith(`out${path.sep}`));
    if (outside.length > 0) violation(`files outside the output directory: ${outside.join(', ')}`);
    if (typeof end === 'object' && end !== null && 'error' in end) {
      const e = typed(end.error, 'recv --qemu');
      const left = listTree(out);
      if (left.length > 0) violation(`files left after ${e.code}: ${left.slice(0, 5).join(', ')}`);
      return e.code;
    }
    const r = end as Awaited<ReturnType<typeof receiveQemu>>;
    const want = [...r.manifest.ramblocks.map((b) => b.file), 'device-state', 'manifest.json'].sort();
    const got = listTree(out);
    if (JSON.stringify(got) !== JSON.stringify(want)) violation(`success left ${got.join(', ')}, expected ${want.join(', ')}`);
    for (const b of r.manifest.ramblocks) {
      if (b.file !== ramblockFileName(b.name)) violation(`ramblock "${b.name}" written to ${b.file}`);
      const size = fs.statSync(path.join(out, b.file)).size;
      if (size !== b.size) violation(`ramblock "${b.name}": file of ${size} bytes, declared ${b.size}`);
    }
    if (unmutated) {
      for (const [name, image] of m.images) {
        if (!fs.readFileSync(path.join(out, ramblockFileName(name))).equals(image))
          violation(`ramblock "${name}" differs from what was sent`);
      }
      if (!fs.readFileSync(path.join(out, 'device-state')).equals(m.deviceState)) violation('device state differs from what was sent');
    }
    return 'ok';
  } finally {
    clearTimeout(timer);
    abort.abort('fuzz: done');
    for (const s of sockets) s.destroy();
    await ended;
  }
}

/** (b) A live `recv --qemu` over loopback: mutated main-channel and multifd bytes. */
export async function qemuRecvTarget(): Promise<FuzzTarget<RecvInput>> {
  const corpus = await qemuCorpus();
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'mfd-fuzz-qemu-'));
  let n = 0;
  return {
    name: 'qemu-recv',
    corpusSize: corpus.length,
    async: true,
    arbitrary: fc.record({
      seed: fc.nat({ max: corpus.length - 1 }),
      main: fc.oneof(
        { weight: 2, arbitrary: fc.constant([] as MainMutation[]) },
        { weight: 3, arbitrary: fc.array(mainMutation, { minLength: 1, maxLength: 2 }) },
      ),
      channels: fc.oneof(
        { weight: 2, arbitrary: fc.constant([]) },
        {
          weight: 2,
          arbitrary: fc.array(fc.record({ channel: fc.nat({ max: 7 }), muts: fc.array(streamMutation, { minLength: 1, maxLength: 2 }) }), {
            minLength: 1,
            maxLength: 2,
          }),
        },
      ),
      cuts: fc.array(fc.nat({ max: 1 << 20 }), { maxLength: 4 }),
      mainFirst: fc.oneof({ weight: 4, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
    }),
    async run(x) {
      const m = corpus[x.seed]!;
      // The magic stays: a connection without it is not a QEMU main channel, and a receiver
      // without one waits for QEMU to connect, as it should (the parser target mutates it).
      let main = mutateMain(m, x.main);
      if (main.length < 4) main = Buffer.alloc(4);
      main.writeUInt32BE(QEMU_VM_FILE_MAGIC, 0);
      const muts = m.channels.map(() => [] as StreamMutation[]);
      for (const c of x.channels) if (muts.length > 0) muts[c.channel % muts.length]!.push(...c.muts);
      const channels = m.channels.map((c, i) => mutateStream(c, muts[i]!));
      const box = path.join(root, String(n++));
      const out = path.join(box, 'out');
      fs.mkdirSync(out, { recursive: true });
      try {
        return await receiveChecked(m, main, channels, x, box, out, x.main.length === 0 && x.channels.length === 0);
      } finally {
        fs.rmSync(box, { recursive: true, force: true });
      }
    },
    close() {
      fs.rmSync(root, { recursive: true, force: true });
    },
  };
}
