/**
 * The receiving side of QEMU's main migration channel: the "QEVM" header, the
 * configuration section, the RAM section (START, PARTs, END) record by record,
 * then everything after the RAM END section as an opaque device-state blob up to
 * the source's close. Lengths are bounded; anything mfd cannot handle (another
 * iterative section, device state interleaved with RAM, xbzrle, compress, rdma,
 * postcopy commands, unknown section types or flags) is refused with what and
 * why. Sync points with the multifd channels are numbered ("epochs", see
 * docs/qemu-peer.md): each record is handed on with the epoch it belongs to.
 */
import type { Readable } from 'node:stream';
import { MAX_TOTAL_RAM } from '../control/protocol.js';
import { ConnectionError, ProtocolError, UnsupportedStreamError } from '../errors.js';
import { ByteQueue } from '../transport/byte-queue.js';
import { hex } from '../wire/constants.js';
import {
  MIG_CMDS,
  MIG_CMD_SWITCHOVER_START,
  QEMU_VM_COMMAND,
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
  RAM_FLAGS_MASK,
  RAM_IDSTR,
  RAM_SAVE_FLAG_COMPRESS_PAGE,
  RAM_SAVE_FLAG_CONTINUE,
  RAM_SAVE_FLAG_EOS,
  RAM_SAVE_FLAG_HOOK,
  RAM_SAVE_FLAG_MEM_SIZE,
  RAM_SAVE_FLAG_MULTIFD_FLUSH,
  RAM_SAVE_FLAG_PAGE,
  RAM_SAVE_FLAG_XBZRLE,
  RAM_SAVE_FLAG_ZERO,
  type SyncMode,
} from './format.js';

/** Longest machine type name accepted in the configuration section. */
const MAX_MACHINE_NAME = 256;
/** Most ramblocks accepted in the MEM_SIZE record. */
const MAX_RAMBLOCKS = 4096;
/**
 * Most bytes of device state (everything after the RAM END section) accepted:
 * QEMU's device sections are kilobytes to a few megabytes (guest RAM, video
 * memory included, travels in ramblocks); this only stops a source that never ends.
 */
export const MAX_DEVICE_STATE = 1024 * 1024 * 1024;
/** Bytes queued before the socket is paused. */
const HIGH_WATER = 8 * 1024 * 1024;

/** What the parser reads the main channel with: a socket's bytes (StreamReader) or a file's (file.ts). */
export abstract class MainReader {
  /** The stream offset of the next byte. */
  offset = 0;
  /** While set, every byte taken is also appended here. */
  record: Buffer[] | null = null;

  /** The next `n` bytes (valid until the next call); `what` names them in errors. */
  abstract take(n: number, what: string): Promise<Buffer>;
  /** The next byte without taking it. */
  abstract peek(what: string): Promise<number>;
  /** Hands every byte up to the end to `sink`, then resolves. */
  abstract drain(sink: (b: Buffer) => void): Promise<void>;

  async u8(what: string): Promise<number> {
    return (await this.take(1, what))[0]!;
  }

  async u32(what: string): Promise<number> {
    return (await this.take(4, what)).readUInt32BE(0);
  }

  /** A be64 as [high 32 bits, low 32 bits]. */
  async u64(what: string): Promise<[number, number]> {
    const b = await this.take(8, what);
    return [b.readUInt32BE(0), b.readUInt32BE(4)];
  }

  /** u8 length + bytes. */
  async str(what: string): Promise<string> {
    const n = await this.u8(`${what} length`);
    return (await this.take(n, what)).toString('utf8');
  }
}

/** Pulls exact lengths off a socket (or any readable stream), waiting for bytes; counts what it consumed. */
export class StreamReader extends MainReader {
  private readonly queue = new ByteQueue();
  private wake: (() => void) | null = null;
  private ended = false;
  private error: Error | null = null;
  private paused = false;

  constructor(
    private readonly sock: Readable,
    private readonly where: string,
    initial?: Buffer,
  ) {
    super();
    if (initial) this.queue.push(initial);
    sock.on('data', (c: Buffer) => {
      this.queue.push(c);
      if (this.queue.length > HIGH_WATER && !this.paused) {
        this.paused = true;
        sock.pause();
      }
      this.notify();
    });
    sock.on('end', () => {
      this.ended = true;
      this.notify();
    });
    sock.on('close', () => {
      this.ended = true;
      this.notify();
    });
    sock.on('error', (e) => {
      this.error = e;
      this.notify();
    });
  }

  private notify(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  /** Throws the connection's error, if it had one. */
  private checkError(): void {
    if (this.error) throw new ConnectionError('ERR_QEMU_MAIN_CONNECTION', `${this.where}: ${this.error.message}`, {}, this.error);
  }

  /** Waits for more bytes or the end, resuming a paused socket first. */
  private async more(): Promise<void> {
    if (this.paused) {
      this.paused = false;
      this.sock.resume();
    }
    await new Promise<void>((r) => (this.wake = r));
  }

  private async fill(n: number, what: string): Promise<void> {
    while (this.queue.length < n) {
      this.checkError();
      if (this.ended) {
        throw new ConnectionError(
          'ERR_QEMU_MAIN_TRUNCATED',
          `${this.where}: the stream ended at byte ${this.offset + this.queue.length} in the middle of ${what} (received ${this.queue.length} of ${n} bytes)`,
        );
      }
      await this.more();
    }
  }

  async take(n: number, what: string): Promise<Buffer> {
    await this.fill(n, what);
    const b = this.queue.take(n)!;
    this.offset += n;
    this.record?.push(Buffer.from(b));
    return b;
  }

  async peek(what: string): Promise<number> {
    await this.fill(1, what);
    return this.queue.peekUInt8()!;
  }

  async drain(sink: (b: Buffer) => void): Promise<void> {
    for (;;) {
      if (this.queue.length > 0) {
        const n = this.queue.length;
        const b = this.queue.take(n)!;
        this.offset += n;
        sink(b);
        continue;
      }
      this.checkError();
      if (this.ended) return;
      await this.more();
    }
  }
}

export interface RamBlockInfo {
  name: string;
  size: number;
}

export interface RamSectionInfo {
  sectionId: number;
  instance: number;
  version: number;
}

/** What the parser hands on. Page offsets are byte offsets in the block. */
export interface MainHandlers {
  onConfiguration(machine: string, raw: Buffer): void;
  onRamStart(info: RamSectionInfo, blocks: RamBlockInfo[]): Promise<void>;
  /** A ZERO record: the page is filled with `fill` (0 in practice). */
  onZero(block: string, offset: number, fill: number, epoch: number): void;
  onPage(block: string, offset: number, data: Buffer, epoch: number): void;
  /** Device state and the rest of the stream, as it arrives. */
  onDeviceState(chunk: Buffer): void;
  /** Each section or command before the device state, at its first byte (mfd inspect lists them). */
  onSection?(section: SectionInfo): void;
}

export interface SectionInfo {
  /** Byte offset of the section type byte. */
  at: number;
  /** START, PART, END, CONFIGURATION, COMMAND. */
  type: string;
  /** Section id (RAM sections), or the command number. */
  id: number;
  /** START: its idstr; CONFIGURATION: the machine type; COMMAND: its name. */
  name?: string;
}

/**
 * The regions a mapped-ram file (QEMU's capability, file: migrations only) keeps for its blocks
 * (src/qemu/file.ts): `block` is called right after a block's name and used_length in the MEM_SIZE
 * record, takes its MappedRamHeader and bitmap and leaves the reader where the main stream goes
 * on; `pages` hands on every page of every region (onPage, onZero) once the block list is in.
 */
export interface MappedRamReader {
  block(block: RamBlockInfo): Promise<void>;
  pages(epoch: number, h: MainHandlers): Promise<void>;
}

export interface MainOptions {
  /** For a file whose configuration lists the mapped-ram capability; without it such a stream is refused. */
  mappedRam?: MappedRamReader;
}

export interface MainSummary {
  fileVersion: number;
  machine: string | null;
  syncMode: SyncMode;
  /** RAM sections (START, PARTs, END): each ended with EOS. */
  ramSections: number;
  /** RAM_SAVE_FLAG_MULTIFD_FLUSH records. */
  flushes: number;
  /** The epoch count: how many sync points the multifd channels must have passed. */
  syncPoints: number;
  zeroRecords: number;
  pageRecords: number;
  deviceStateBytes: number;
  /** The stream ended with a VM description (else with the bare EOF byte). */
  vmDescription: boolean;
  /** The source sent MIG_CMD_SWITCHOVER_START (QEMU 10.0+ with send-switchover-start on). */
  switchoverStart: boolean;
  /** The capabilities the configuration section lists (QEMU 9.0+: mapped-ram, x-ignore-shared when on). */
  capabilities: string[];
  /** The device sections the VM description lists, in order (empty without one). */
  devices: { name: string; instance: number }[];
}

const SECTION_NAMES: Record<number, string> = {
  [QEMU_VM_EOF]: 'EOF',
  [QEMU_VM_SECTION_START]: 'START',
  [QEMU_VM_SECTION_PART]: 'PART',
  [QEMU_VM_SECTION_END]: 'END',
  [QEMU_VM_SECTION_FULL]: 'FULL',
  [QEMU_VM_SUBSECTION]: 'SUBSECTION',
  [QEMU_VM_VMDESCRIPTION]: 'VMDESCRIPTION',
  [QEMU_VM_CONFIGURATION]: 'CONFIGURATION',
  [QEMU_VM_COMMAND]: 'COMMAND',
};

/**
 * The configuration section's subsections QEMU may send (savevm.c
 * vmstate_configuration) and their field bytes; each at most once, so the
 * section (kept whole for the manifest) stays small.
 */
async function configurationSubsection(r: MainReader, where: string, seen: Set<string>, capabilities: string[]): Promise<string> {
  await r.u8('subsection marker');
  const name = await r.str('subsection name');
  await r.u32('subsection version');
  if (seen.has(name)) throw new ProtocolError('ERR_QEMU_CONFIGURATION', `${where}: configuration subsection "${name}" given twice`);
  seen.add(name);
  if (name === 'configuration/target-page-bits') {
    const bits = await r.u32('target-page-bits');
    if (bits !== 12)
      throw new UnsupportedStreamError(
        `${where}: target page bits ${bits} (pages of ${2 ** bits} bytes); mfd handles 4 KiB target pages only`,
      );
  } else if (name === 'configuration/capabilities') {
    const n = await r.u32('capability count');
    if (n > 256)
      throw new ProtocolError('ERR_QEMU_CONFIGURATION', `${where}: ${n} capabilities in the configuration section, expected at most 256`);
    for (let i = 0; i < n; i++) capabilities.push(await r.str('capability name'));
  } else if (name === 'configuration/uuid') {
    await r.take(16, 'uuid');
  } else {
    throw new UnsupportedStreamError(`${where}: configuration subsection "${name}" is unknown to mfd`);
  }
  return name;
}

/** The configuration section: machine type, the capabilities it lists, and its bytes (type byte included) whole and by subsection. */
export interface Configuration {
  machine: string;
  capabilities: string[];
  /** Type byte, machine type length and name. */
  head: Buffer;
  subsections: { name: string; raw: Buffer }[];
  raw: Buffer;
}

/** Reads a configuration section whose type byte was just taken; `at` names it in errors. */
export async function readConfiguration(r: MainReader, at: string): Promise<Configuration> {
  r.record = [Buffer.from([QEMU_VM_CONFIGURATION])];
  const len = await r.u32('machine type length');
  if (len > MAX_MACHINE_NAME)
    throw new ProtocolError('ERR_QEMU_CONFIGURATION', `${at}: machine type of ${len} bytes, expected at most ${MAX_MACHINE_NAME}`);
  const machine = (await r.take(len, 'machine type')).toString('utf8');
  const head = Buffer.concat(r.record);
  const seen = new Set<string>();
  const capabilities: string[] = [];
  const subsections: Configuration['subsections'] = [];
  while ((await r.peek('configuration subsection')) === QEMU_VM_SUBSECTION) {
    r.record = [];
    const name = await configurationSubsection(r, at, seen, capabilities);
    subsections.push({ name, raw: Buffer.concat(r.record) });
  }
  r.record = null;
  return { machine, capabilities, head, subsections, raw: Buffer.concat([head, ...subsections.map((x) => x.raw)]) };
}

/** QEMU's capability that lays RAM out at fixed file offsets (file: migrations; see src/qemu/file.ts). */
export const MAPPED_RAM = 'mapped-ram';

/**
 * The capabilities a configuration section lists are those source and destination must agree on
 * (QEMU's should_validate_capability): mapped-ram changes the MEM_SIZE record (a file only),
 * x-ignore-shared leaves shared blocks' pages out of the stream.
 */
function checkCapabilities(caps: string[], at: string, mappedRamReader: boolean): void {
  for (const c of caps) {
    if (c === MAPPED_RAM) {
      if (!mappedRamReader)
        throw new UnsupportedStreamError(
          `${at}: the configuration lists capability mapped-ram, which QEMU writes to files only: read it with --from file:PATH`,
          'ERR_QEMU_CAPABILITY',
        );
    } else if (c === 'x-ignore-shared') {
      throw new UnsupportedStreamError(
        `${at}: capability x-ignore-shared: the pages of shared ramblocks are not in the stream, so mfd cannot save them; turn it off on the source`,
        'ERR_QEMU_CAPABILITY',
      );
    } else {
      throw new UnsupportedStreamError(`${at}: capability "${c}" in the configuration is unknown to mfd`, 'ERR_QEMU_CAPABILITY');
    }
  }
}

/**
 * Parses the main channel to its close. `where` names it in errors. The
 * returned summary is complete only when the promise resolves.
 */
export async function parseMainChannel(
  r: MainReader,
  h: MainHandlers,
  where: string,
  pageSize = 4096,
  maxDeviceState = MAX_DEVICE_STATE,
  o: MainOptions = {},
): Promise<MainSummary> {
  const s: MainSummary = {
    fileVersion: 0,
    machine: null,
    syncMode: 'section',
    ramSections: 0,
    flushes: 0,
    syncPoints: 0,
    zeroRecords: 0,
    pageRecords: 0,
    deviceStateBytes: 0,
    vmDescription: false,
    switchoverStart: false,
    capabilities: [],
    devices: [],
  };
  const magic = await r.u32('stream magic');
  if (magic !== QEMU_VM_FILE_MAGIC)
    throw new ProtocolError('ERR_QEMU_MAGIC', `${where}: stream magic ${hex(magic)}, expected ${hex(QEMU_VM_FILE_MAGIC)} ("QEVM")`);
  s.fileVersion = await r.u32('stream version');
  if (s.fileVersion !== QEMU_VM_FILE_VERSION) {
    throw new UnsupportedStreamError(`${where}: stream version ${s.fileVersion}, expected ${QEMU_VM_FILE_VERSION}`, 'ERR_QEMU_VERSION');
  }
  let ram: RamSectionInfo | null = null;
  const blocks = new Map<string, number>();
  let current: string | null = null;
  let modeKnown = false;
  let mappedRam: MappedRamReader | null = null;
  const epoch = (): number => (s.syncMode === 'round' ? s.flushes : s.ramSections);

  const ramRecords = async (kind: number): Promise<void> => {
    const at = (): string => `${where}, RAM ${SECTION_NAMES[kind]} section ${s.ramSections} (byte ${r.offset})`;
    for (;;) {
      const [hi, lo] = await r.u64('RAM record');
      let flags = lo & RAM_FLAGS_MASK;
      const addr = hi * 2 ** 32 + (lo - flags);
      if (flags & RAM_SAVE_FLAG_MULTIFD_FLUSH) {
        if (kind === QEMU_VM_SECTION_START && !modeKnown) s.syncMode = 'round';
        if (s.syncMode !== 'round')
          throw new ProtocolError('ERR_QEMU_RAM_FLAGS', `${at()}: MULTIFD_FLUSH after the START section had none (per-section syncs)`);
        s.flushes++;
        flags &= ~RAM_SAVE_FLAG_MULTIFD_FLUSH;
        if (flags === 0) continue;
      }
      if (flags & RAM_SAVE_FLAG_XBZRLE)
        throw new UnsupportedStreamError(
          `${at()}: an XBZRLE page (capability xbzrle): mfd does not decode xbzrle; turn the capability off`,
        );
      if (flags & RAM_SAVE_FLAG_COMPRESS_PAGE)
        throw new UnsupportedStreamError(
          `${at()}: a COMPRESS_PAGE record (capability compress): mfd does not decode it; use multifd compression instead`,
        );
      if (flags & RAM_SAVE_FLAG_HOOK) throw new UnsupportedStreamError(`${at()}: a HOOK record (RDMA migration): not supported`);
      const base = flags & ~RAM_SAVE_FLAG_CONTINUE;
      if (base === RAM_SAVE_FLAG_EOS) return;
      if (base === RAM_SAVE_FLAG_MEM_SIZE) {
        if (kind !== QEMU_VM_SECTION_START)
          throw new ProtocolError('ERR_QEMU_RAM_FLAGS', `${at()}: MEM_SIZE record outside the START section`);
        if (blocks.size > 0)
          throw new ProtocolError('ERR_QEMU_RAM_FLAGS', `${at()}: a second MEM_SIZE record (the block list is given once)`);
        if (addr === 0 || addr > MAX_TOTAL_RAM) {
          throw new ProtocolError(
            'ERR_QEMU_BLOCKS',
            `${at()}: MEM_SIZE record says ${addr} bytes of RAM, expected 1..${MAX_TOTAL_RAM} (64 TiB)`,
          );
        }
        let sum = 0;
        const list: RamBlockInfo[] = [];
        while (sum < addr) {
          if (list.length >= MAX_RAMBLOCKS) throw new ProtocolError('ERR_QEMU_BLOCKS', `${at()}: more than ${MAX_RAMBLOCKS} ramblocks`);
          const name = await r.str('ramblock name');
          const [bh, bl] = await r.u64('ramblock length');
          const size = bh * 2 ** 32 + bl;
          if (name === '' || blocks.has(name))
            throw new ProtocolError('ERR_QEMU_BLOCKS', `${at()}: ramblock name "${name}" is empty or given twice`);
          if (size === 0 || size % pageSize !== 0 || !Number.isSafeInteger(sum + size)) {
            throw new ProtocolError(
              'ERR_QEMU_BLOCKS',
              `${at()}: ramblock "${name}" has used_length ${size}, expected a positive multiple of ${pageSize}`,
            );
          }
          blocks.set(name, size);
          list.push({ name, size });
          sum += size;
          if (mappedRam) await mappedRam.block({ name, size });
        }
        if (sum !== addr) {
          throw new UnsupportedStreamError(
            `${at()}: ramblock lengths add up to ${sum}, the MEM_SIZE record says ${addr} (extra per-block fields: postcopy page sizes and x-ignore-shared are not supported; mapped-ram is read from files, whose configuration lists it)`,
          );
        }
        await h.onRamStart(ram!, list);
        if (mappedRam) await mappedRam.pages(epoch(), h);
        continue;
      }
      if (base !== RAM_SAVE_FLAG_ZERO && base !== RAM_SAVE_FLAG_PAGE) {
        throw new UnsupportedStreamError(`${at()}: RAM record flags ${hex(flags)} are unknown to mfd`, 'ERR_QEMU_RAM_FLAGS');
      }
      if (!(flags & RAM_SAVE_FLAG_CONTINUE)) current = await r.str('ramblock name');
      if (current === null) throw new ProtocolError('ERR_QEMU_RAM_RECORD', `${at()}: CONTINUE record without a previous ramblock`);
      const size = blocks.get(current);
      if (size === undefined) throw new ProtocolError('ERR_QEMU_RAM_RECORD', `${at()}: unknown ramblock "${current}"`);
      if (addr % pageSize !== 0 || addr >= size) {
        throw new ProtocolError(
          'ERR_QEMU_RAM_RECORD',
          `${at()}: page offset ${addr} out of range for ramblock "${current}" (expected a multiple of ${pageSize} below ${size})`,
        );
      }
      if (base === RAM_SAVE_FLAG_ZERO) {
        s.zeroRecords++;
        h.onZero(current, addr, await r.u8('zero page fill byte'), epoch());
      } else {
        s.pageRecords++;
        h.onPage(current, addr, await r.take(pageSize, 'page data'), epoch());
      }
    }
  };

  const footer = async (id: number): Promise<void> => {
    if ((await r.peek('section footer')) !== QEMU_VM_SECTION_FOOTER) return;
    await r.u8('section footer');
    const fid = await r.u32('section footer id');
    if (fid !== id)
      throw new ProtocolError('ERR_QEMU_FOOTER', `${where}: section footer for section ${fid}, expected ${id} (byte ${r.offset})`);
  };

  for (let first = true; ; first = false) {
    const type = await r.u8('section type');
    const at = `${where}, byte ${r.offset - 1}`;
    if (type === QEMU_VM_CONFIGURATION) {
      if (!first) throw new ProtocolError('ERR_QEMU_SECTION', `${at}: a second configuration section`);
      const { machine, capabilities, raw } = await readConfiguration(r, at);
      s.machine = machine;
      s.capabilities = capabilities;
      h.onSection?.({ at: r.offset - raw.length, type: 'CONFIGURATION', id: 0, name: s.machine });
      checkCapabilities(s.capabilities, at, !!o.mappedRam);
      if (s.capabilities.includes(MAPPED_RAM)) mappedRam = o.mappedRam!;
      h.onConfiguration(s.machine, raw);
      continue;
    }
    if (type === QEMU_VM_SECTION_START) {
      const id = await r.u32('section id');
      const idstr = await r.str('section idstr');
      const instance = await r.u32('instance id');
      const version = await r.u32('version id');
      if (idstr !== RAM_IDSTR) {
        throw new UnsupportedStreamError(
          `${at}: iterative section "${idstr}" (id ${id}) besides RAM (block migration, dirty bitmaps, VFIO or another live-migrated device): mfd cannot save its state, only RAM and the device state after it`,
          'ERR_QEMU_ITERATIVE_SECTION',
        );
      }
      if (ram) throw new ProtocolError('ERR_QEMU_SECTION', `${at}: a second RAM START section`);
      if (version !== 4) throw new UnsupportedStreamError(`${at}: RAM section version ${version}, expected 4`, 'ERR_QEMU_VERSION');
      ram = { sectionId: id, instance, version };
      h.onSection?.({ at: r.offset - 14 - idstr.length, type: 'START', id, name: idstr });
      await ramRecords(type);
      if (blocks.size === 0) throw new ProtocolError('ERR_QEMU_BLOCKS', `${at}: RAM START section without a MEM_SIZE record`);
      modeKnown = true;
      s.ramSections++;
      await footer(id);
      continue;
    }
    if (type === QEMU_VM_SECTION_PART || type === QEMU_VM_SECTION_END) {
      const id = await r.u32('section id');
      if (!ram) throw new ProtocolError('ERR_QEMU_SECTION', `${at}: ${SECTION_NAMES[type]} section ${id} before any START section`);
      if (id !== ram.sectionId) {
        throw new UnsupportedStreamError(
          `${at}: ${SECTION_NAMES[type]} of iterative section id ${id} interleaved with RAM (section ${ram.sectionId}): mfd saves only RAM`,
          'ERR_QEMU_ITERATIVE_SECTION',
        );
      }
      h.onSection?.({ at: r.offset - 5, type: SECTION_NAMES[type]!, id });
      await ramRecords(type);
      s.ramSections++;
      await footer(id);
      if (type === QEMU_VM_SECTION_END) break;
      continue;
    }
    if (type === QEMU_VM_COMMAND) {
      const cmd = (await r.take(2, 'command')).readUInt16BE(0);
      const len = (await r.take(2, 'command length')).readUInt16BE(0);
      h.onSection?.({ at: r.offset - 5, type: 'COMMAND', id: cmd, name: MIG_CMDS[cmd]?.name ?? 'unknown' });
      // SWITCHOVER_START (QEMU 10.0+, sent when the migration property send-switchover-start is on,
      // the default from the 10.0 machine types) is the one command taken, because QEMU defines it
      // as a notification: migration/savevm.c declares it with no payload (mig_cmd_args, .len = 0),
      // its load handler only calls the devices' switchover_start hooks and sends nothing back, and
      // docs/devel/migration/vfio.rst says VFIO's hook starts loading device state that came over
      // multifd ("In the non-multifd mode this function is a NOP"). Device state over multifd is
      // refused anyway (recv.ts), so nothing is lost by noting it. Every other command, known or
      // not, is refused: an unknown one may wait for an answer mfd cannot give.
      if (cmd === MIG_CMD_SWITCHOVER_START) {
        if (len !== 0)
          throw new ProtocolError('ERR_QEMU_COMMAND', `${at}: migration command SWITCHOVER_START with ${len} bytes of data, expected 0`);
        if (s.switchoverStart)
          throw new ProtocolError(
            'ERR_QEMU_COMMAND',
            `${at}: a second SWITCHOVER_START command (QEMU sends one, before the RAM END section)`,
          );
        s.switchoverStart = true;
        continue;
      }
      const known = MIG_CMDS[cmd];
      const what = known ? `${known.name} (${known.why})` : `${cmd} (unknown to mfd, which cannot tell whether it waits for an answer)`;
      throw new UnsupportedStreamError(
        `${at}: migration command ${what}: mfd only receives precopy migrations without a return path`,
        'ERR_QEMU_COMMAND',
      );
    }
    if (type === QEMU_VM_SECTION_FULL || type === QEMU_VM_EOF || type === QEMU_VM_VMDESCRIPTION) {
      throw new UnsupportedStreamError(
        `${at}: ${SECTION_NAMES[type]} section before the RAM END section: device state interleaved with RAM cannot be kept apart without parsing it`,
        'ERR_QEMU_SECTION_ORDER',
      );
    }
    throw new UnsupportedStreamError(`${at}: section type ${hex(type)} is unknown to mfd`, 'ERR_QEMU_SECTION_TYPE');
  }
  s.syncPoints = epoch();
  const tail = new Tail(TAIL_BYTES);
  await r.drain((b) => {
    if (s.deviceStateBytes + b.length > maxDeviceState) {
      throw new ProtocolError(
        'ERR_QEMU_DEVICE_STATE_SIZE',
        `${where}: more than ${maxDeviceState} bytes of device state after the RAM END section (byte ${r.offset}); a QEMU source sends a few megabytes`,
      );
    }
    s.deviceStateBytes += b.length;
    tail.push(b);
    h.onDeviceState(b);
  });
  const desc = checkStreamEnd(tail.bytes(), s.deviceStateBytes, where, pageSize);
  s.vmDescription = desc !== null;
  if (desc && Array.isArray(desc.devices)) {
    for (const d of desc.devices as { name?: unknown; instance_id?: unknown }[])
      s.devices.push({ name: String(d?.name), instance: Number(d?.instance_id) });
  }
  return s;
}

/** The end of the stream is kept to check it: enough for the VM description of a large VM. */
const TAIL_BYTES = 4 * 1024 * 1024;

class Tail {
  private chunks: Buffer[] = [];
  private length = 0;
  constructor(private readonly max: number) {}
  push(b: Buffer): void {
    this.chunks.push(b);
    this.length += b.length;
    while (this.length - this.chunks[0]!.length >= this.max) this.length -= this.chunks.shift()!.length;
  }
  bytes(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

/** The part of QEMU's VM description mfd looks at. */
interface VmDescription {
  page_size?: unknown;
  devices?: unknown;
}

/**
 * A source that dies in the middle of the device state also just closes the
 * connection: the stream must end as QEMU ends it, with the EOF byte (0x00),
 * then (unless suppressed) VMDESCRIPTION: 0x06, be32 length, that many bytes of
 * JSON. Returns the VM description, or null when there was none.
 */
export function checkStreamEnd(tail: Buffer, total: number, where: string, pageSize: number): VmDescription | null {
  const truncated = (why: string): ConnectionError =>
    new ConnectionError(
      'ERR_QEMU_MAIN_TRUNCATED',
      `${where}: the stream ended after ${total} bytes of device state without QEMU's end (${why}); the source may have failed`,
    );
  if (tail.length === 0) throw truncated('nothing after the RAM END section');
  // The VM description starts with "{" right after 00 06 <be32 length>; it runs to the end. JSON
  // text holds no NUL byte, so the last 00 of the tail is in that header: only the 6 positions up
  // to it can start it (trying every 00 06 in the tail made a crafted tail cost a decode of
  // megabytes per candidate).
  const last = tail.lastIndexOf(QEMU_VM_EOF);
  for (let at = last; at >= Math.max(0, last - 5); at--) {
    if (at + 6 >= tail.length || tail[at] !== QEMU_VM_EOF || tail[at + 1] !== QEMU_VM_VMDESCRIPTION || tail[at + 6] !== 0x7b) continue;
    if (tail.readUInt32BE(at + 2) !== tail.length - at - 6) continue;
    let desc: VmDescription;
    try {
      desc = JSON.parse(tail.subarray(at + 6).toString('utf8')) as VmDescription;
    } catch {
      continue;
    }
    if (desc.page_size !== undefined && desc.page_size !== pageSize) {
      throw new UnsupportedStreamError(
        `${where}: the VM description says page_size ${String(desc.page_size)}, mfd handles ${pageSize}`,
        'ERR_QEMU_VERSION',
      );
    }
    return desc;
  }
  if (tail[tail.length - 1] === QEMU_VM_EOF) return null;
  throw truncated('no EOF marker, no VM description at its end');
}
