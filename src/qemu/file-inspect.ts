/**
 * `mfd inspect` of a QEMU migration file (QEVM at the given offset): the one main-channel parser
 * (main-channel.ts) run over the file as `recv --qemu --from file:` runs it (file.ts), with
 * handlers that only count: the sections up to the RAM END section, each ramblock with its pages
 * (page and zero records, or a mapped-ram block's set and clear bits, with its header's offsets),
 * the device state and the devices the VM description lists. A problem stops the parse and is
 * reported with its file byte.
 */
import { MfdError, errorText } from '../errors.js';
import type { FileTarget } from '../file/target.js';
import { atOf } from '../inspect/file.js';
import { printable } from '../text.js';
import { MAPPED_RAM, parseMainChannel, type SectionInfo } from './main-channel.js';
import { MAPPED_RAM_HEADER_SIZE, openQemuFile } from './file.js';

const PAGE_SIZE = 4096;
/** Sections listed one by one at most (a live migration has one PART per iteration); the count has them all. */
const MAX_LISTED_SECTIONS = 10_000;

export interface QemuFileBlock {
  name: string;
  size: number;
  /** Page records (stream) or set bits (mapped-ram). */
  dataPages: number;
  /** ZERO records (stream) or clear bits (mapped-ram). */
  zeroPages: number;
  /** mapped-ram: where its header, bitmap and page region are (file bytes). */
  mappedRam?: { headerAt: number; bitmapOffset: number; pagesOffset: number };
}

export interface QemuFileReport {
  file: string;
  offset: number;
  /** Bytes of the file. */
  bytes: number;
  layout: 'stream' | 'mapped-ram';
  machine: string | null;
  capabilities: string[];
  sections: SectionInfo[];
  sectionCount: number;
  ramblocks: QemuFileBlock[];
  /** Everything after the RAM END section; null when the parse did not get there. */
  deviceState: { at: number; bytes: number; vmDescription: boolean; devices: { name: string; instance: number }[] } | null;
  switchoverStart: boolean;
  errors: { at: number; message: string }[];
}

export async function inspectQemuFile(t: FileTarget): Promise<QemuFileReport> {
  const f = openQemuFile(t, PAGE_SIZE);
  const r: QemuFileReport = {
    file: t.path,
    offset: t.offset,
    bytes: f.size,
    layout: 'stream',
    machine: null,
    capabilities: [],
    sections: [],
    sectionCount: 0,
    ramblocks: [],
    deviceState: null,
    switchoverStart: false,
    errors: [],
  };
  const blocks = new Map<string, QemuFileBlock>();
  const block = (name: string): QemuFileBlock => blocks.get(name)!;
  let deviceAt = -1;
  // The header's offsets, read back once the checks of the file's reader passed.
  const mappedRam = {
    block: async (b: { name: string; size: number }): Promise<void> => {
      const headerAt = f.reader.offset;
      await f.mappedRam.block(b);
      const h = f.reader.read(headerAt, MAPPED_RAM_HEADER_SIZE, 'the mapped-ram header');
      const u64 = (o: number): number => Number(h.readBigUInt64BE(o));
      r.ramblocks.push({
        name: b.name,
        size: b.size,
        dataPages: 0,
        zeroPages: 0,
        mappedRam: { headerAt, bitmapOffset: u64(12), pagesOffset: u64(20) },
      });
    },
    pages: f.mappedRam.pages,
  };
  try {
    const s = await parseMainChannel(
      f.reader,
      {
        onConfiguration: () => {},
        onRamStart: (_info, list) => {
          if (r.ramblocks.length === 0) for (const b of list) r.ramblocks.push({ name: b.name, size: b.size, dataPages: 0, zeroPages: 0 });
          for (const b of r.ramblocks) blocks.set(b.name, b);
          return Promise.resolve();
        },
        onZero: (name) => void block(name).zeroPages++,
        onPage: (name) => void block(name).dataPages++,
        onDeviceState: (chunk) => {
          if (deviceAt < 0) deviceAt = f.reader.offset - chunk.length;
        },
        onSection: (x) => {
          r.sectionCount++;
          if (x.type === 'CONFIGURATION') {
            r.machine = x.name ?? null;
          }
          if (r.sections.length < MAX_LISTED_SECTIONS) r.sections.push(x);
        },
      },
      f.where,
      PAGE_SIZE,
      undefined,
      { mappedRam },
    );
    r.capabilities = s.capabilities;
    r.switchoverStart = s.switchoverStart;
    r.deviceState = { at: deviceAt, bytes: s.deviceStateBytes, vmDescription: s.vmDescription, devices: s.devices };
  } catch (e) {
    if (!(e instanceof MfdError)) throw e;
    r.errors.push({ at: atOf(e, f.reader.offset), message: `${errorText(e)} [${e.code}]` });
  } finally {
    f.close();
  }
  if (r.capabilities.length === 0 && r.ramblocks.some((b) => b.mappedRam)) r.capabilities = [MAPPED_RAM];
  r.layout = r.ramblocks.some((b) => b.mappedRam) ? 'mapped-ram' : 'stream';
  return r;
}

export function formatQemuFileReport(r: QemuFileReport): string {
  const lines = [
    `${printable(r.file)}: QEMU migration file at byte ${r.offset}, file of ${r.bytes} bytes: ${r.layout} layout, machine ${printable(r.machine ?? '?')}, capabilities ${r.capabilities.map(printable).join(' ') || 'none'}`,
  ];
  lines.push(`  sections (${r.sectionCount}, up to the device state):`);
  for (const x of r.sections)
    lines.push(
      `    byte ${x.at}: ${x.type}${x.type === 'COMMAND' ? ` ${x.id} ${x.name}` : x.type === 'CONFIGURATION' ? '' : ` id ${x.id}`}${x.name && x.type !== 'COMMAND' ? ` "${printable(x.name)}"` : ''}`,
    );
  if (r.sectionCount > r.sections.length) lines.push(`    ... ${r.sectionCount - r.sections.length} more`);
  for (const b of r.ramblocks) {
    const m = b.mappedRam;
    lines.push(
      `  ramblock ${printable(b.name)}: ${b.size} bytes, ${b.size / PAGE_SIZE} pages: ${b.dataPages} with data, ${b.zeroPages} zero` +
        (m ? `; mapped-ram header at byte ${m.headerAt}, bitmap at byte ${m.bitmapOffset}, pages at byte ${m.pagesOffset}` : ''),
    );
  }
  const d = r.deviceState;
  if (d) {
    lines.push(
      `  device state: ${d.bytes} bytes from byte ${d.at}, ${d.vmDescription ? 'ends with the VM description' : 'no VM description'}`,
    );
    if (d.devices.length > 0) lines.push(`  devices: ${d.devices.map((x) => `${printable(x.name)}/${x.instance}`).join(' ')}`);
  }
  for (const e of r.errors) lines.push(`  error at byte ${e.at}: ${e.message}`);
  return lines.join('\n');
}
