/**
 * The --qemu halves of `mfd recv` and `mfd send`: options that do not apply are
 * refused by name, results are printed as a short summary or one JSON object.
 */
import type { Command } from 'commander';
import { UsageError } from '../errors.js';
import type { QemuRecvResult } from './recv.js';
import type { QemuSendResult } from './replay.js';
import { printable } from '../text.js';

/** Refuses each option of `keys` the user gave (command line or environment) together with --qemu. */
export function refuseWithQemu(cmd: Command, keys: Record<string, string>, why: string): void {
  for (const [key, flag] of Object.entries(keys)) {
    const src = cmd.getOptionValueSource(key);
    if (src === 'cli' || src === 'env') throw new UsageError(`${flag} cannot be used with --qemu: ${why}`);
  }
}

export function formatQemuRecv(r: QemuRecvResult): string {
  const m = r.manifest;
  const lines = [
    m.file
      ? `read QEMU migration file ${printable(m.file.path)} (${m.file.mappedRam ? 'mapped-ram' : 'stream'}, from byte ${m.file.offset}) in ${(r.totalTimeMs / 1000).toFixed(2)} s: machine ${printable(m.qemu.machineType ?? '?')}`
      : `received a QEMU migration in ${(r.totalTimeMs / 1000).toFixed(2)} s: machine ${printable(m.qemu.machineType ?? '?')}, ${m.multifd ? `${m.channels} multifd channels, ${m.method}` : 'no multifd'}, syncs per ${m.syncMode === 'round' ? 'pass' : 'RAM section'}`,
    ...m.ramblocks.map((b) => `  ramblock ${printable(b.name)}: ${b.size} bytes -> ${b.file} (digest ${b.digest})`),
    `  device state: ${m.deviceState.size} bytes -> ${m.deviceState.file}`,
    `  manifest: ${printable(r.manifestPath)}`,
  ];
  return lines.join('\n');
}

export function formatQemuSend(r: QemuSendResult, file?: { path: string; mappedRam: boolean }): string {
  return [
    file
      ? `wrote QEMU migration file ${printable(file.path)} (${file.mappedRam ? 'mapped-ram' : 'stream'}) in ${(r.totalTimeMs / 1000).toFixed(2)} s: machine ${r.machineType ?? '?'}`
      : `replayed into QEMU in ${(r.totalTimeMs / 1000).toFixed(2)} s: machine ${r.machineType ?? '?'}, ${r.channels ? `${r.channels} multifd channels, ${r.compression}` : 'no multifd'}`,
    `  ${r.shape}`,
    `  ${r.ramblocks.length} ramblocks, ${r.normalPages} pages with data, ${r.zeroPages} zero pages, device state ${r.deviceStateBytes} bytes, ${r.wireBytes} bytes ${file ? 'in the file' : 'on the wire'}`,
    file
      ? `  load it with migrate-incoming file:${printable(file.path)} (capabilities${file.mappedRam ? ' mapped-ram on, multifd as you like' : ' mapped-ram and multifd off'}), then cont`
      : '  the destination finishes loading on its own: check query-migrate there, then cont',
  ].join('\n');
}
