/**
 * The shape of every --json output, as TypeScript types: the JSON Schema
 * (dist/schema/mfd-json.schema.json) is generated from these at build time
 * (scripts/json-schema.mjs), and the builders below are what the commands
 * print, so the schema cannot drift from the output unseen. Each object
 * starts with mfd-version and schema-version; a migration's result carries
 * QEMU's query-migrate names (status, total-time, ram.*) beside mfd's own.
 */
import type { AccelReport } from '../accel/report.js';
import type { BenchLine } from '../bench/report.js';
import { errorText, type ErrorJson, type MfdError } from '../errors.js';
import type { FileReport } from '../inspect/file.js';
import type { FileSummary } from '../file/save.js';
import type { RestoredFile } from '../file/restore.js';
import type { GenerateResult } from '../image/generate.js';
import type { StreamReport } from '../inspect/inspect.js';
import type { QemuManifest } from '../qemu/manifest.js';
import type { QemuFileReport } from '../qemu/file-inspect.js';
import type { QemuSendResult } from '../qemu/replay.js';
import { migrateInfo, type QemuMigrateInfo, type RunStats } from '../stats/stats.js';
import { versioned, type Versioned } from '../version.js';

/** `mfd send --json`: to a receiver (with its statistics) or to a file (with its summary). */
export type SendJson = Versioned & QemuMigrateInfo & RunStats & { receiver?: Record<string, unknown>; file?: FileSummary };
/** `mfd recv --json`: from a sender, or from a file (with its summary). */
export type RecvJson = Versioned & QemuMigrateInfo & RunStats & { file?: RestoredFile };
/** Any command's `--json` when it fails (QEMU's status "failed" and error-desc). */
export type FailureJson = Versioned & { status: 'failed'; 'error-desc': string; error: ErrorJson };
/** `mfd send --qemu --json`: a replay into a QEMU destination. */
export type QemuSendJson = Versioned & { status: 'completed'; 'total-time': number } & QemuSendResult;
/** `mfd recv --qemu --json`: a migration received from QEMU. */
export type QemuRecvJson = Versioned & {
  status: 'completed';
  'total-time': number;
  totalTimeMs: number;
  manifestPath: string;
} & QemuManifest;
/** `mfd inspect --json`. */
export type InspectJson = Versioned & {
  streams: StreamReport[];
  files?: FileReport[];
  qemuFiles?: QemuFileReport[];
  extract?: { target: string; pages: number };
};
/** `mfd accel --json`. */
export type AccelJson = Versioned & AccelReport;
/** `mfd gen-image --json`. */
export type GenImageJson = Versioned & { file: string } & GenerateResult;
/** `mfd bench --json`: one object per line, told apart by `type` (also results.jsonl). */
export type BenchJsonLine = Versioned & BenchLine;

/** What a migration's result carries beside its statistics. */
export interface RunExtra {
  receiver?: Record<string, unknown>;
  file?: FileSummary | RestoredFile;
}

export function runJson(stats: RunStats, extra: RunExtra = {}): SendJson | RecvJson {
  return versioned({ ...migrateInfo(stats), ...stats, ...extra });
}

/** error-desc: where and what, as the command's stderr line says it; `error` keeps them apart. */
export function failureJson(e: MfdError): FailureJson {
  return versioned({ status: 'failed' as const, 'error-desc': errorText(e), error: e.toJSON() });
}

export function qemuSendJson(r: QemuSendResult): QemuSendJson {
  return versioned({ status: 'completed' as const, 'total-time': Math.round(r.totalTimeMs), ...r });
}

export function qemuRecvJson(r: { totalTimeMs: number; manifestPath: string; manifest: QemuManifest }): QemuRecvJson {
  return versioned({
    status: 'completed' as const,
    'total-time': Math.round(r.totalTimeMs),
    totalTimeMs: r.totalTimeMs,
    manifestPath: r.manifestPath,
    ...r.manifest,
  });
}

export function inspectJson(
  streams: StreamReport[],
  files: FileReport[],
  extract: { target: string; pages: number } | null,
  qemuFiles: QemuFileReport[] = [],
): InspectJson {
  return versioned({
    streams,
    ...(files.length > 0 ? { files } : {}),
    ...(qemuFiles.length > 0 ? { qemuFiles } : {}),
    ...(extract ? { extract } : {}),
  });
}
