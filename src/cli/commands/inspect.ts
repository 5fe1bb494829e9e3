/** `mfd inspect`: read raw multifd channel streams (from `mfd recv --dump-streams` or a capture of QEMU's). */
import { Command, Option } from 'commander';
import { ExitCode, UsageError, ProtocolError, VerifyError } from '../../errors.js';
import { extractSink, formatReport, inspectStream, type PageSink, type StreamReport } from '../../inspect/inspect.js';
import { formatFileReport, inspectFile, isMigrationFile, type FileReport } from '../../inspect/file.js';
import { isFileUri, parseFileUri } from '../../file/target.js';
import { pageSizeOption } from '../options.js';
import type { CommandContext } from '../context.js';
import { inspectJson } from '../json.js';
import { isQemuMigrationFile } from '../../qemu/file.js';
import { formatQemuFileReport, inspectQemuFile, type QemuFileReport } from '../../qemu/file-inspect.js';

export function inspectCommand(ctx: CommandContext): Command {
  return new Command('inspect')
    .summary('read migration files or raw multifd channel streams: headers, every packet, totals, errors')
    .description(
      "Reads channel streams (a channel's bytes as they crossed the wire) written by mfd or QEMU 7.2 to 10.x,\n" +
        "migration files from mfd send --to file:PATH, and QEMU's own (migrate file:PATH, stream or mapped-ram layout),\n" +
        'recognised by their magic (file:PATH,offset=N too).\n' +
        'Prints headers, one line per packet and totals (a file: its ramblock table, bitmaps and trailer;\n' +
        'a QEMU file: its sections, ramblocks and pages).\n' +
        'Every payload is decoded by its method (--headers-only skips that); QEMU 10 device-state packets are listed.\n' +
        "Streams are read by the receiver's channel reader (QEMU-tolerant profile), up to the first problem,\n" +
        'reported with its byte offset: a payload that does not decode, a flag bit no QEMU version defines,\n' +
        'a packet kind it cannot read. Exit 3 when a stream or file has errors.',
    )
    .argument('<stream...>', 'stream files (e.g. DIR/channel-0.bin from mfd recv --dump-streams) or migration files')
    .addOption(pageSizeOption())
    .addOption(new Option('--extract <name=file>', 'rebuild ramblock NAME from the streams into FILE (zero pages as holes)'))
    .option('--headers-only', 'frame and check the packet headers without decoding the payloads')
    .option('--json', 'one JSON object: every stream report, and the extraction')
    .action(async (streams: string[], o: { pageSize: number; extract?: string; headersOnly?: boolean; json?: boolean }) => {
      let extract: ReturnType<typeof extractSink> | null = null;
      let sink: PageSink | undefined;
      if (o.extract) {
        const eq = o.extract.indexOf('=');
        if (eq <= 0) throw new UsageError(`Expected NAME=FILE for --extract but received "${o.extract}"`);
        if (o.headersOnly)
          throw new UsageError('--extract rebuilds pages from the decoded payloads; it cannot be used with --headers-only');
        extract = extractSink(o.extract.slice(0, eq), o.extract.slice(eq + 1), o.pageSize);
        sink = extract.sink;
      }
      const reports: StreamReport[] = [];
      const files: FileReport[] = [];
      const qemuFiles: QemuFileReport[] = [];
      for (const s of streams) {
        const target = isFileUri(s) ? parseFileUri(s, 'inspect') : { path: s, offset: 0 };
        if (isQemuMigrationFile(target)) {
          if (o.extract)
            throw new UsageError(
              `--extract reads channel streams; read a QEMU migration file with mfd recv --qemu --from file:${target.path}`,
            );
          qemuFiles.push(await inspectQemuFile(target));
        } else if (isFileUri(s) || isMigrationFile(target)) {
          if (o.extract)
            throw new UsageError(`--extract reads channel streams; restore a migration file with mfd recv --from file:${target.path}`);
          files.push(await inspectFile(target));
        } else reports.push(await inspectStream(s, o.pageSize, sink, { headersOnly: o.headersOnly }));
      }
      const pages = extract?.close();
      if (o.json) ctx.out(JSON.stringify(inspectJson(reports, files, o.extract ? { target: o.extract, pages: pages! } : null, qemuFiles)));
      else {
        for (const r of qemuFiles) ctx.out(formatQemuFileReport(r));
        for (const r of files) ctx.out(formatFileReport(r));
        for (const r of reports) ctx.out(formatReport(r));
        if (o.extract) ctx.out(`extracted ${pages} pages to ${o.extract}`);
      }
      const errors = [...reports, ...files, ...qemuFiles].reduce((a, r) => a + r.errors.length, 0);
      // A file whose records read well but whose pages do not verify (coverage, digest): as recv --from, exit 5.
      const failed = files.find((r) => r.check && !r.check.ok && r.check.exitCode === ExitCode.VERIFY);
      if (failed?.check && !failed.check.ok)
        throw new VerifyError(failed.check.code, `migration file "${failed.file}": ${failed.check.message}`);
      const fileCount = files.length + qemuFiles.length;
      if (errors > 0)
        throw new ProtocolError(
          'ERR_STREAM_INVALID',
          `${errors} error(s) in the ${fileCount > 0 ? (reports.length > 0 ? 'streams and migration files' : 'migration file' + (fileCount > 1 ? 's' : '')) : 'streams'}`,
        );
    });
}
