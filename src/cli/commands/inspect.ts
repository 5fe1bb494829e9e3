/** `mfd inspect`: read raw multifd channel streams (from `mfd recv --dump-streams` or a capture of QEMU's). */
import { Command, Option } from 'commander';
import { UsageError, ProtocolError } from '../../errors.js';
import { extractSink, formatReport, inspectStream, type PageSink } from '../../inspect/inspect.js';
import { pageSizeOption } from '../options.js';
import type { CommandContext } from '../main.js';

export function inspectCommand(ctx: CommandContext): Command {
  return new Command('inspect')
    .summary('read raw multifd channel streams: init packet, every packet, totals, errors')
    .description(
      'Reads channel streams (a channel\'s bytes as they crossed the wire) written by mfd or QEMU 7.2 to 10.x.\n' +
        'Prints the init packet, one line per packet and totals; every problem with its byte offset.\n' +
        'Exit 3 when a stream has errors.',
    )
    .argument('<stream...>', 'stream files (e.g. DIR/channel-0.bin from mfd recv --dump-streams)')
    .addOption(pageSizeOption())
    .addOption(new Option('--extract <name=file>', 'rebuild ramblock NAME from the streams into FILE (zero pages as holes)'))
    .option('--json', 'one JSON object: every stream report, and the extraction')
    .action(async (streams: string[], o: { pageSize: number; extract?: string; json?: boolean }) => {
      let extract: ReturnType<typeof extractSink> | null = null;
      let sink: PageSink | undefined;
      if (o.extract) {
        const eq = o.extract.indexOf('=');
        if (eq <= 0) throw new UsageError(`Expected NAME=FILE for --extract but received "${o.extract}"`);
        extract = extractSink(o.extract.slice(0, eq), o.extract.slice(eq + 1), o.pageSize);
        sink = extract.sink;
      }
      const reports = [];
      for (const s of streams) reports.push(await inspectStream(s, o.pageSize, sink));
      const pages = extract?.close();
      if (o.json) ctx.out(JSON.stringify({ streams: reports, ...(o.extract ? { extract: { target: o.extract, pages } } : {}) }));
      else {
        for (const r of reports) ctx.out(formatReport(r));
        if (o.extract) ctx.out(`extracted ${pages} pages to ${o.extract}`);
      }
      const errors = reports.reduce((a, r) => a + r.errors.length, 0);
      if (errors > 0) throw new ProtocolError('ERR_STREAM_INVALID', `${errors} error(s) in the streams`);
    });
}
