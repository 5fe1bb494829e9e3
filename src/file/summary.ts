/** One line about the migration file of a save or restore, for the human summary. */
import { formatBytes } from '../stats/stats.js';

export interface FileLine {
  path: string;
  offset: number;
  layout: string;
  bytes: number;
  directIo?: boolean;
  records?: number;
  writer?: { bufferSize: number; buffers: number; writes: number; waits: number } | string;
}

export function formatFileSummary(f: FileLine): string {
  const parts = [`layout ${f.layout}`, `starts at byte ${f.offset}`, `${f.bytes} bytes (${formatBytes(f.bytes)})`];
  if (f.directIo) parts.push('direct I/O');
  if (f.records !== undefined) parts.push(`${f.records} records`);
  if (typeof f.writer === 'object')
    parts.push(
      `writer: ${f.writer.buffers} x ${formatBytes(f.writer.bufferSize)} buffers, ${f.writer.writes} writes, filler waited ${f.writer.waits} times`,
    );
  else if (f.writer) parts.push(`writer: ${f.writer}`);
  return `  file: ${f.path}: ${parts.join(', ')}`;
}
