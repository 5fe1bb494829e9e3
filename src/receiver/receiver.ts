/**
 * The receiver path: listen; the first 4 bytes of each connection tell the
 * control channel ('MFDC') from a multifd channel (0x11223344). The hello sets
 * up outputs and method; channels are matched by id and uuid; when the sender
 * reports completion and every channel has drained, page coverage, packet
 * counts and digests are verified before any output takes its final name.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import {
  ConnectionError,
  ExitCode,
  IoError,
  MfdError,
  ProtocolError,
  RemoteError,
  ResumeError,
  asMfdError,
  InterruptedError,
  errorText,
} from '../errors.js';
import type { Logger } from '../log.js';
import { getMethod, type CompressionMethod, type MethodParams, type MethodReceiver } from '../methods/index.js';
import { native } from '../native/load.js';
import {
  CONTROL_MAGIC,
  CONTROL_PREAMBLE_SIZE,
  DIGEST_ALGORITHM,
  MAX_HAVE_NUMBERS,
  checkPreamble,
  encodeFrame,
  type Complete,
  type ControlMessage,
  type Hello,
} from '../control/protocol.js';
import { ControlChannel } from '../transport/control-channel.js';
import { ByteQueue } from '../transport/byte-queue.js';
import { PEER_REASON_GRACE_MS } from '../transport/connect.js';
import { plainSecurity, type ChannelBinding, type ChannelSecurity } from '../transport/security.js';
import { checkInitPacket, decodeInitPacket, uuidFromString, uuidToString } from '../wire/init-packet.js';
import { INIT_PACKET_SIZE, MULTIFD_MAGIC, hex, packetHeaderSize } from '../wire/constants.js';
import type { PacketHeader } from '../wire/packet.js';
import { buildStats, newChannelCounters, type ChannelCounters, type RunStats } from '../stats/stats.js';
import { Output } from './output.js';
import { createFreshSync } from '../io/no-follow.js';
import { Reserve } from './reserve.js';
import { NativeChannel } from '../transport/native-channel.js';
import { DataChannel, packetChecks, readPool, type ChannelHost, type Decoder, type TargetBlock } from './data-channel.js';
import { ComputePool, defaultPoolSize } from '../compute/pool.js';
import { emptyPathCounts, PathTally } from '../offload/paths.js';
import { createDecoder } from './decoder.js';
import { openTargets, resolveTargets, verifyBlocks, verifyChannels } from './targets.js';
import {
  BlockJournal,
  JOURNAL_INTERVAL_MS,
  Journals,
  checkJournal,
  discardJournal,
  journalPathFor,
  loadJournal,
  type JournalFile,
} from './journal.js';
import { digestRuns, limitRuns, runPages, shareRuns } from '../image/resume.js';
import { PageBudget } from './page-bitmap.js';
import type { OpenExtension, RecvExtension } from './extension.js';

export interface RecvOptions {
  host: string;
  port: number;
  /** Directory for ramblocks without an explicit mapping. */
  outputDir?: string;
  /** Explicit ramblock name -> output path. */
  outputMap?: Map<string, string>;
  /** Write into existing outputs (zeroing zero pages) instead of a temporary file renamed at the end. */
  inPlace?: boolean;
  /** fsync each output before it takes its final name (as rsync --fsync). */
  fsync?: boolean;
  logger: Logger;
  /** Compute worker threads for offloaded methods (default: min(channels, cores)). */
  threads?: number;
  /** Save each multifd channel's raw bytes (init packet onwards) to DIR/channel-N.bin, for `mfd inspect`. */
  dumpStreams?: string;
  /** Idle time after which a silent channel fails the migration. */
  timeoutMs?: number;
  /** A decoder falling back from hardware is an error (--require-hardware). */
  requireHardware?: boolean;
  /**
   * Keep a progress journal beside each output (default on): after a failure
   * the temporary output and its journal stay, for `mfd send --resume`.
   */
  journal?: boolean;
  /** Time between journal checkpoints (default 1 s). */
  journalIntervalMs?: number;
  /**
   * After a failure that left a journal, keep listening this long for
   * `mfd send --resume`; after one that a sender caused with nothing kept,
   * this long for the next sender (0: exit at once, the default).
   */
  resumeWaitMs?: number;
  /** Delta transfer (src/delta/receiver.ts): the bases offered to a sender that asks (`mfd recv --delta`). */
  extension?: RecvExtension;
  /** How connections authenticate (TLS, PSK); default none. A refused connection is logged and closed, the migration goes on. */
  security?: ChannelSecurity;
  onListening?: (address: net.AddressInfo) => void;
  onProgress?: (doneBytes: number, totalBytes: number) => void;
  signal?: AbortSignal;
}

export interface RecvResult {
  stats: RunStats;
}

/**
 * Receives one migration. With `resumeWaitMs`, a migration that fails with a
 * journal kept, or that its sender failed (see failedBySender), is followed by
 * another on the same listening socket, which waits that long for a sender
 * (`mfd send --resume`, or a new one); when none comes, the failure is the
 * result.
 */
export async function receive(opts: RecvOptions): Promise<RecvResult> {
  if (opts.dumpStreams !== undefined) {
    try {
      fs.mkdirSync(opts.dumpStreams, { recursive: true });
    } catch (e) {
      throw new IoError(
        `ERR_${(e as NodeJS.ErrnoException).code ?? 'MKDIR'}`,
        `--dump-streams: cannot create directory "${opts.dumpStreams}": ${(e as Error).message}`,
        e,
      );
    }
  }
  // One listening socket for every attempt; its connections, once authenticated, go to the current one.
  let current: Migration | null = null;
  // Connections that arrive while a failed attempt cleans up (its last checkpoint flushes the
  // outputs, which can take seconds) wait for the next attempt, if one comes.
  const held: [net.Socket, string, ChannelBinding | null][] = [];
  const secure = (opts.security ?? plainSecurity).createServer({
    onAccepted: (s, peer, binding) => {
      if (current && !current.over) return current.accept(s, peer, binding);
      if (held.length < MAX_HELD_CONNECTIONS) held.push([s, peer, binding]);
      else s.destroy();
    },
    onRefused: (peer, why) => opts.logger.warn({ peer }, `connection from ${peer} refused: ${why}`),
  });
  const server = secure.server;
  const waitMs = opts.resumeWaitMs ?? 0;
  let failure: MfdError | null = null;
  try {
    for (let attempt = 0; ; attempt++) {
      const run = new Migration(attempt === 0 ? opts : { ...opts, helloTimeoutMs: waitMs }, server);
      current = run;
      try {
        const result = run.run();
        for (const [s, peer, binding] of held.splice(0)) run.accept(s, peer, binding);
        return await result;
      } catch (e) {
        const err = e as MfdError;
        // The wait ended without a sender: the last real failure is the result.
        if (failure && run.waitedInVain) throw failure;
        // A refused resume leaves the journals of the failure before it: keep waiting for the right sender.
        const kept = run.keptJournal || (failure !== null && err instanceof ResumeError);
        failure = err;
        if (waitMs <= 0 || err instanceof InterruptedError || !(kept || run.failedBySender(err))) throw err;
        const addr = server.address() as net.AddressInfo;
        const next = kept
          ? 'with its progress journal kept: waiting %s for mfd send --resume'
          : 'with nothing kept: waiting %s for the next sender';
        opts.logger.warn(
          { code: err.code },
          `migration failed (${errorText(err)}) ${next.replace('%s', `${waitMs / 1000} s on ${addr.address}:${addr.port}`)}`,
        );
      }
    }
  } finally {
    server.close(() => {});
    secure.closePending();
    for (const [s] of held.splice(0)) s.destroy();
  }
}

/** Connections held for the next attempt at most (a sender opens 1 + channels, at most 256). */
const MAX_HELD_CONNECTIONS = 1 + 256;

/** How often the receiver says `busy` while it verifies and commits. */
const BUSY_INTERVAL_MS = 1000;

interface MigrationOptions extends RecvOptions {
  /** Fail when no hello has arrived this long after the start (waiting for a resume). */
  helloTimeoutMs?: number;
}

class Migration {
  private readonly log: Logger;
  private startNs = process.hrtime.bigint();
  private readonly sockets = new Set<net.Socket>();
  private control: ControlChannel | null = null;
  /** What the control connection proved (PSK): the hello must carry its uuid. */
  private controlBinding: ChannelBinding | null = null;
  private hello: Hello | null = null;
  private uuid: Uint8Array | null = null;
  private method: CompressionMethod | null = null;
  private params: MethodParams = {};
  /** Pages per decode path, all channels. */
  private tally: PathTally | null = null;
  private compressionPath = '';
  private readonly receivers: MethodReceiver[] = [];
  private compute: ComputePool | null = null;
  private readonly blocks = new Map<string, TargetBlock>();
  /** What the received and written bitmaps of every block may cost together. */
  private readonly budget = new PageBudget();
  private readonly outputs: Output[] = [];
  private channels: (DataChannel | undefined)[] = [];
  private counters: ChannelCounters[] = [];
  private complete: Complete | null = null;
  private settled = false;
  private finishing = false;
  private doneBytes = 0;
  private totalBytes = 0;
  private readonly timeoutMs: number;
  /** Fails the migration when a channel has not connected in time (see watchChannels). */
  private channelWatch: NodeJS.Timeout | null = null;
  /** Fails the migration when every channel has ended and `complete` does not come (see watchComplete). */
  private completeWatch: NodeJS.Timeout | null = null;
  /** Fails a migration waiting for a resume when no hello comes. */
  private helloWatch: NodeJS.Timeout | null = null;
  private resolve!: (r: RecvResult) => void;
  private reject!: (e: MfdError) => void;
  private journals: Journals | null = null;
  /** Set up from a journal (a resume): its files predate this run. */
  private resumed = false;
  /** Pages the outputs held when a resume began. */
  private heldPages = 0;
  /** Digesting the held pages (read back from the outputs), beside the transfer; awaited before verifying. */
  private heldDigest: Promise<void> = Promise.resolve();
  /** The extension (delta transfer), when the hello asked and this receiver offers it. */
  private extension: OpenExtension | null = null;
  /** The failure left the temporary outputs and their journals for a resume. */
  keptJournal = false;
  /** Failed waiting for a hello that never came. */
  waitedInVain = false;

  /**
   * The failure was the doing of a sender this attempt served (it went silent
   * or away, broke the protocol, failed verification or failed itself), not of
   * this host: the receiver may serve the next sender.
   */
  failedBySender(err: MfdError): boolean {
    const theirs: number[] = [ExitCode.PROTOCOL, ExitCode.CONNECTION, ExitCode.VERIFY, ExitCode.REMOTE, ExitCode.AUTH, ExitCode.RESUME];
    return this.hello !== null && theirs.includes(err.exitCode);
  }

  /** Finished, either way: new connections are not this attempt's. */
  get over(): boolean {
    return this.settled;
  }

  constructor(
    private readonly opts: MigrationOptions,
    private readonly server: net.Server,
  ) {
    this.log = opts.logger;
    this.timeoutMs = opts.timeoutMs ?? 60_000;
  }

  run(): Promise<RecvResult> {
    return new Promise<RecvResult>((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
      this.start();
    });
  }

  private start(): void {
    // A migration waiting for a resume takes over the listening socket of the one that failed.
    this.server.removeAllListeners('error');
    this.server.on('error', (e: NodeJS.ErrnoException) =>
      this.fail(
        new ConnectionError(`ERR_${e.code ?? 'LISTEN'}`, `cannot listen on ${this.opts.host}:${this.opts.port}: ${e.message}`, {}, e),
      ),
    );
    if (!this.server.listening) {
      this.server.listen({ host: this.opts.host, port: this.opts.port }, () => {
        const addr = this.server.address() as net.AddressInfo;
        this.log.info({ address: addr.address, port: addr.port }, `listening on ${addr.address}:${addr.port}`);
        this.opts.onListening?.(addr);
      });
    }
    const wait = this.opts.helloTimeoutMs;
    if (wait !== undefined) {
      this.helloWatch = setTimeout(() => {
        this.waitedInVain = true;
        this.fail(new ConnectionError('ERR_RESUME_WAIT', `no sender came to resume within ${wait} ms`));
      }, wait);
    }
    this.opts.signal?.addEventListener('abort', () => this.fail(new InterruptedError(String(this.opts.signal?.reason ?? 'abort'))), {
      once: true,
    });
  }

  /** An authenticated connection (any connection without authentication): control or multifd? */
  accept(sock: net.Socket, peer: string, binding: ChannelBinding | null): void {
    if (this.settled) return void sock.destroy();
    this.sockets.add(sock);
    sock.on('close', () => this.sockets.delete(sock));
    const q = new ByteQueue();
    const since = performance.now();
    const reject = (why: string): void => {
      this.log.warn({ peer }, `connection from ${peer} refused: ${why}`);
      sock.destroy();
    };
    sock.setTimeout(this.timeoutMs, () => reject(`nothing received for ${this.timeoutMs} ms`));
    sock.on('error', () => {});
    const onData = (c: Buffer): void => {
      q.push(c);
      const magic = q.peekUInt32BE();
      if (magic === null) return;
      // Wait for the whole preamble or init packet, then hand the connection over.
      const need = magic === CONTROL_MAGIC ? CONTROL_PREAMBLE_SIZE : magic === MULTIFD_MAGIC ? INIT_PACKET_SIZE : 0;
      if (q.length < need) return;
      sock.off('data', onData);
      if (magic === CONTROL_MAGIC) this.onControl(sock, peer, q, binding, reject, since);
      else if (magic === MULTIFD_MAGIC) this.onDataChannel(sock, peer, q, binding, reject);
      else reject(`unknown channel magic ${hex(magic)}, expected ${hex(CONTROL_MAGIC)} (control) or ${hex(MULTIFD_MAGIC)} (multifd)`);
    };
    sock.on('data', onData);
  }

  /** A control connection (`since`: when it was accepted): the migration's, unless one is already. */
  private onControl(
    sock: net.Socket,
    peer: string,
    q: ByteQueue,
    binding: ChannelBinding | null,
    refuse: (why: string) => void,
    since: number,
  ): void {
    if (this.control) {
      this.log.warn(
        { peer },
        `second control connection from ${peer} refused: busy with migration ${this.hello?.uuid ?? '(hello not in yet)'}`,
      );
      // Told why, so that sender reports a busy receiver rather than a reset connection.
      return void sock.end(
        encodeFrame({
          type: 'error',
          code: 'ERR_BUSY',
          message: `busy with another migration (${this.hello?.uuid ?? 'starting'}), one at a time`,
        }),
      );
    }
    if (binding && binding.role !== 'control')
      return refuse(`control channel on a connection authenticated as multifd channel ${binding.channel}`);
    this.controlBinding = binding;
    try {
      checkPreamble(q.take(CONTROL_PREAMBLE_SIZE)!);
    } catch (e) {
      return this.fail(e);
    }
    sock.setTimeout(0);
    const ctl = new ControlChannel(sock, peer, q.take(q.length)!);
    this.control = ctl;
    this.log.info({ peer }, 'control channel connected');
    void this.converse(ctl, peer, Math.max(0, this.timeoutMs - (performance.now() - since)));
  }

  /**
   * The control channel's first message, within `ms`; null when none came (the
   * connection is then dropped and the migration waits for another sender).
   */
  private async awaitHello(ctl: ControlChannel, peer: string, ms: number): Promise<ControlMessage | null> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), ms)));
    const m = await Promise.race([ctl.next(), late]).finally(() => clearTimeout(timer));
    if (m !== null || this.settled) return m;
    const why = `no hello within ${this.timeoutMs} ms of connecting`;
    this.log.warn({ peer }, `control connection from ${peer} dropped: ${why}; waiting for another sender`);
    this.control = null;
    this.controlBinding = null;
    // Told why, then closed (at once if it does not read either).
    ctl.socket.setTimeout(PEER_REASON_GRACE_MS, () => ctl.socket.destroy());
    ctl.socket.end(encodeFrame({ type: 'error', code: 'ERR_CONTROL_TIMEOUT', message: `receiver: ${why}` }));
    return null;
  }

  private async converse(ctl: ControlChannel, peer: string, helloMs: number): Promise<void> {
    try {
      const hello = await this.awaitHello(ctl, peer, helloMs);
      if (hello === null) return;
      if (hello.type !== 'hello')
        throw new ProtocolError('ERR_CONTROL_UNEXPECTED', `control channel: received "${hello.type}", expected "hello"`);
      if (this.helloWatch) clearTimeout(this.helloWatch);
      const have = await this.setup(hello);
      const offered = await this.extension?.offer(ctl);
      ctl.send({ type: 'ready', ...(have ? { have } : {}), ...offered });
      this.watchChannels(hello.channels);
      let m = await ctl.next();
      // Delta written in place: the pages to stash before any is written (the channels connect after the answer).
      if (m.type === 'stash') {
        if (!this.extension?.stash)
          throw new ProtocolError(
            'ERR_CONTROL_UNEXPECTED',
            'control channel: received "stash", expected "complete" (no delta base is written in place)',
          );
        const beat = setInterval(() => ctl.send({ type: 'busy', what: 'stashing pages of the output written in place' }), BUSY_INTERVAL_MS);
        try {
          await this.extension.stash(ctl, m);
        } finally {
          clearInterval(beat);
        }
        // The channels connect from now on: their wait starts again.
        if (this.channelWatch) clearTimeout(this.channelWatch);
        if (!this.settled) this.watchChannels(hello.channels);
        m = await ctl.next();
      }
      // A sender's sampled pre-check (src/control/delta.ts) that no extension read: nothing to check it against.
      if (m.type === 'sample' && hello.deltaSample && !this.extension) m = await ctl.next();
      if (m.type === 'error') throw new RemoteError('sender', m.code, m.message);
      if (m.type !== 'complete')
        throw new ProtocolError('ERR_CONTROL_UNEXPECTED', `control channel: received "${m.type}", expected "complete"`);
      if (m.packets.length !== hello.channels) {
        throw new ProtocolError(
          'ERR_CONTROL_MESSAGE',
          `control channel: complete lists ${m.packets.length} channels, expected ${hello.channels}`,
        );
      }
      this.complete = m;
      // Anything after "complete" other than the close is a failure report.
      ctl.next().then(
        (late) => {
          if (!this.settled && late.type === 'error') this.fail(new RemoteError('sender', late.code, late.message));
        },
        (e) => {
          if (!this.settled && !this.finishing) this.fail(e);
        },
      );
      this.maybeFinish();
    } catch (e) {
      this.fail(e);
    }
  }

  /** Sets up method and outputs; for a resume, returns the pages the outputs hold, per ramblock. */
  private async setup(hello: Hello): Promise<Record<string, number[]> | null> {
    this.startNs = process.hrtime.bigint();
    // Before anything on disk is touched: the hello must be the migration the control channel proved.
    const proved = this.controlBinding?.uuid;
    if (proved && Buffer.compare(Buffer.from(proved), Buffer.from(uuidFromString(hello.uuid))) !== 0) {
      throw new ProtocolError(
        'ERR_HELLO_UUID',
        `hello: uuid received ${hello.uuid}, expected ${uuidToString(proved)} (the one the control channel authenticated)`,
      );
    }
    let method: CompressionMethod;
    try {
      method = getMethod(hello.compression);
      this.params = method.params(hello.methodParams);
    } catch (e) {
      throw new ProtocolError('ERR_HELLO_METHOD', `hello: ${(e as Error).message}`);
    }
    if (hello.digest !== DIGEST_ALGORITHM)
      throw new ProtocolError('ERR_HELLO_DIGEST', `hello: digest received "${hello.digest}", expected "${DIGEST_ALGORITHM}"`);
    const requireHardware = this.opts.requireHardware ?? false;
    this.compressionPath = method.path({ params: this.params, requireHardware, receiving: true });
    this.tally = new PathTally(`${method.name} decompression`, requireHardware);
    const targets = { ...this.opts, inPlace: this.opts.inPlace ?? false };
    // A resume: every ramblock's journal must be there and match before any output is touched.
    if (hello.resume && !(this.opts.journal ?? true))
      throw new ResumeError('ERR_RESUME_NO_JOURNAL', 'this receiver keeps no progress journal (--no-journal): send without --resume');
    // Where each output goes, checked (real paths, aliases, links) before any file is touched.
    const finals = resolveTargets(hello.ramblocks, targets, 'hello');
    if (!hello.resume) this.opts.extension?.checkTargets?.(hello, finals, targets.inPlace);
    const journaled = hello.resume ? await this.journaled(hello, finals, targets.inPlace) : null;
    // Starting over: an earlier attempt's journal goes before its partial output is replaced.
    if (!journaled) for (const f of finals) discardJournal(journalPathFor(f));
    this.resumed = journaled !== null;
    await openTargets(
      hello.ramblocks,
      hello.pageSize,
      { ...targets, existing: this.resumed },
      'hello',
      this.blocks,
      this.outputs,
      this.budget,
    );
    for (const b of hello.ramblocks) this.totalBytes += b.size;
    const have = await this.openJournals(hello, journaled);
    if (this.opts.extension && !this.resumed) {
      this.extension = this.opts.extension.open({
        hello,
        finals,
        blocks: this.blocks,
        headerSize: packetHeaderSize(hello.pageSize),
        log: this.log,
        ...(this.journals ? { onWritten: (b: TargetBlock, o: ArrayLike<number>, n: number) => this.journals!.note(b.output, o, n) } : {}),
      });
    }
    this.method = method;
    this.hello = hello;
    this.uuid = uuidFromString(hello.uuid);
    this.channels = new Array(hello.channels).fill(undefined);
    this.counters = Array.from({ length: hello.channels }, (_, i) => newChannelCounters(i));
    this.log.info(
      { uuid: hello.uuid, channels: hello.channels, compression: method.name, ramblocks: hello.ramblocks, resumedPages: this.heldPages },
      'migration set up',
    );
    return have;
  }

  /** Each ramblock's journal, checked against the hello (ResumeError naming what differs). */
  private async journaled(hello: Hello, finals: string[], inPlace: boolean): Promise<Map<string, JournalFile>> {
    const out = new Map<string, JournalFile>();
    for (const [i, b] of hello.ramblocks.entries()) {
      const target = finals[i]!;
      const file = journalPathFor(target);
      const j = await loadJournal(file);
      if (!j)
        throw new ResumeError(
          'ERR_RESUME_NO_JOURNAL',
          `cannot resume ram block "${b.name}": no progress journal at "${file}" (send without --resume for a full migration)`,
        );
      checkJournal(j, file, b, hello.pageSize, Output.writePathFor(target, inPlace));
      out.set(b.name, j);
    }
    return out;
  }

  /**
   * Starts each output's journal. On a resume, the pages the journal holds
   * count as received: marked, and digested by reading them back from the
   * output, so the digest still covers every page of the block.
   */
  private async openJournals(hello: Hello, journaled: Map<string, JournalFile> | null): Promise<Record<string, number[]> | null> {
    if (!(this.opts.journal ?? true)) return null;
    const have: Record<string, number[]> = Object.create(null) as Record<string, number[]>;
    const list: BlockJournal[] = [];
    // Each block's part of ready.have's bound.
    const shares = shareRuns(
      hello.ramblocks.map((b) => journaled?.get(b.name)?.pages.length ?? 0),
      MAX_HAVE_NUMBERS,
    );
    for (const [i, b] of hello.ramblocks.entries()) {
      const t = this.blocks.get(b.name)!;
      const j = new BlockJournal(
        journalPathFor(t.output.finalPath),
        t.output,
        journaled?.get(b.name)?.uuid ?? hello.uuid,
        b,
        hello.pageSize,
        this.budget,
      );
      list.push(j);
      try {
        j.reserve = Reserve.make(t.output.finalPath);
      } catch (e) {
        for (const x of list) x.reserve?.release();
        throw e;
      }
      const journal = journaled?.get(b.name)?.pages;
      if (!journal) continue;
      const held = limitRuns(journal, shares[i]!);
      have[b.name] = held;
      j.hold(held);
      t.seen.setRuns(held);
      this.heldPages += runPages(held);
    }
    if (journaled) {
      // Read back while the missing pages stream in; the digest is a sum, so order does not matter.
      this.heldDigest = (async () => {
        for (const b of hello.ramblocks) {
          const t = this.blocks.get(b.name)!;
          await t.output.use((fd) =>
            digestRuns(
              fd,
              b.size,
              hello.pageSize,
              have[b.name]!,
              t.digest,
              `the partial output "${t.output.writePath}"`,
              () => this.settled,
            ),
          );
        }
      })();
      this.heldDigest.catch((e) => this.fail(e));
    }
    this.journals = new Journals(list, this.opts.journalIntervalMs ?? JOURNAL_INTERVAL_MS, (e) => this.fail(e));
    await this.journals.checkpoint();
    this.journals.start();
    return journaled ? have : null;
  }

  /**
   * A channel that never connects would leave the migration waiting for ever
   * (the idle timeout only covers connected channels): a sender connects every
   * channel right after `ready`, so one still missing after the timeout fails.
   */
  private watchChannels(channels: number): void {
    this.channelWatch = setTimeout(() => {
      const missing = this.channels.findIndex((c) => c === undefined);
      if (missing < 0) return;
      const connected = this.channels.filter((c) => c !== undefined).length;
      this.fail(
        new ConnectionError(
          'ERR_CHANNEL_MISSING',
          `not connected ${this.timeoutMs} ms after the hello was accepted (${connected} of ${channels} channels connected)`,
          { channel: missing },
        ),
      );
    }, this.timeoutMs);
  }

  /**
   * Every channel has ended: the sender's `complete` is all that is left to
   * come, and it comes at once. A sender that never sends it would hold the
   * receiver for ever (no channel is left to time out): after the timeout, fail.
   */
  private watchComplete(): void {
    if (this.completeWatch) return;
    this.completeWatch = setTimeout(() => {
      if (this.complete) return;
      const n = this.channels.length;
      this.fail(
        new ConnectionError(
          'ERR_CONTROL_TIMEOUT',
          `control channel: all ${n} channel${n === 1 ? '' : 's'} ended ${this.timeoutMs} ms ago, but no "complete" came from the sender`,
        ),
      );
    }, this.timeoutMs);
  }

  private onDataChannel(sock: net.Socket, peer: string, q: ByteQueue, binding: ChannelBinding | null, refuse: (why: string) => void): void {
    const hello = this.hello;
    const method = this.method;
    const raw = q.take(INIT_PACKET_SIZE, Buffer.alloc)!;
    const init = decodeInitPacket(raw);
    if (!hello || !method || !this.uuid) return refuse("multifd channel before the control channel's hello");
    const where = `multifd channel from ${peer}`;
    // A PSK proof names the migration and channel it was made for: another one's is refused, the migration goes on.
    if (binding) {
      const what =
        binding.role === 'data'
          ? `multifd channel ${binding.channel} of migration ${uuidToString(binding.uuid)}`
          : `control channel of migration ${uuidToString(binding.uuid)}`;
      if (
        binding.role !== 'data' ||
        Buffer.compare(Buffer.from(binding.uuid), Buffer.from(this.uuid)) !== 0 ||
        binding.channel !== init.id
      ) {
        return refuse(`${where}: authenticated as ${what}, expected multifd channel ${init.id} of migration ${hello.uuid}`);
      }
    }
    if (Buffer.compare(Buffer.from(init.uuid), Buffer.from(this.uuid)) !== 0) {
      // Not this migration's: refuse the connection, keep the migration going.
      try {
        checkInitPacket(init, { uuid: this.uuid, channels: hello.channels }, where);
      } catch (e) {
        return refuse(errorText(e));
      }
    }
    try {
      checkInitPacket(init, { uuid: this.uuid, channels: hello.channels }, where);
      if (this.channels[init.id])
        throw new ProtocolError('ERR_INIT_DUPLICATE', `${where}: received id ${init.id}, which is already set up`);
    } catch (e) {
      return this.fail(e);
    }
    sock.setTimeout(this.timeoutMs, () =>
      this.fail(new ConnectionError('ERR_CHANNEL_TIMEOUT', `no data for ${this.timeoutMs} ms`, { channel: init.id })),
    );
    const counters = this.counters[init.id]!;
    counters.wireBytes += INIT_PACKET_SIZE;
    const rest = q.take(q.length)!;
    if (this.opts.dumpStreams && !this.dump(init.id, sock, [raw, rest])) return;
    // A plain socket goes to a native reader (one read per packet, beside the event loop), which keeps the timeout itself.
    const attached = this.opts.dumpStreams ? null : NativeChannel.attach(sock, true);
    if (attached) sock.setTimeout(0);
    const decoder = this.decoder(init.id, method, hello.pageSize, attached !== null);
    const source = attached ? attached.channel : sock;
    const initial = attached ? Buffer.concat([rest, ...attached.buffered]) : rest;
    this.channels[init.id] = new DataChannel(init.id, source, initial, decoder, counters, this.channelHost());
    this.log.debug({ channel: init.id, peer }, 'multifd channel connected');
  }

  /** Tees a channel's bytes, as they crossed the wire, into DIR/channel-N.bin; false after failing the migration on a write error. */
  private dump(channel: number, sock: net.Socket, first: Buffer[]): boolean {
    const file = path.join(this.opts.dumpStreams!, `channel-${channel}.bin`);
    const io = (op: () => void): boolean => {
      try {
        op();
        return true;
      } catch (e) {
        this.fail(
          new IoError(
            `ERR_${(e as NodeJS.ErrnoException).code ?? 'WRITE'}`,
            `--dump-streams: writing "${file}": ${(e as Error).message}`,
            e,
          ),
        );
        return false;
      }
    };
    let fd = -1;
    if (!io(() => (fd = createFreshSync(file)))) return false;
    sock.once('close', () => fs.closeSync(fd));
    const write = (b: Buffer): boolean => io(() => fs.writeSync(fd, b));
    if (!first.every(write)) return false;
    sock.on('data', (c: Buffer) => void (this.settled || write(c)));
    return true;
  }

  /**
   * The channel's decoder: the method inline, or its state on the channel's compute worker. A channel on
   * its own thread (`native`) decodes there where the method's stream can (threadDecodes): inline, no worker.
   * The workers start with the first channel that needs one.
   */
  private decoder(channel: number, method: CompressionMethod, pageSize: number, native: boolean): Decoder {
    const onThread = native && (method.threadDecodes?.(this.params) ?? false);
    if (method.offload && !onThread) this.compute ??= new ComputePool(this.opts.threads ?? defaultPoolSize(this.hello!.channels));
    return createDecoder({
      channel,
      method,
      pageSize,
      params: this.params,
      tally: this.tally!,
      compute: onThread ? null : this.compute,
      receivers: this.receivers,
      fail: (e) => this.fail(e),
    });
  }

  private host: ChannelHost | null = null;
  private channelHost(): ChannelHost {
    if (this.host) return this.host;
    const hello = this.hello!;
    const method = this.method!;
    this.host = {
      pageSize: hello.pageSize,
      headerSize: packetHeaderSize(hello.pageSize),
      check: { ...packetChecks(method, hello.pageSize, this.blocks), deltaRefs: this.extension !== null },
      ...(this.extension
        ? { refs: (h: PacketHeader, payload: Uint8Array[], channel: number) => this.extension!.apply(h, payload, channel) }
        : {}),
      readPool: readPool(),
      pagesAsSent: method.exactPayload,
      blocks: this.blocks,
      zeroPageCrc: native.crc32c(new Uint8Array(hello.pageSize)),
      // A resumed output holds bytes of the earlier attempt: zero pages must be written as zeros.
      inPlace: (this.opts.inPlace ?? false) || this.resumed,
      readTimeoutMs: this.timeoutMs,
      ...(this.journals
        ? {
            onWritten: (block: TargetBlock, offsets: ArrayLike<number>, count: number) => this.journals!.note(block.output, offsets, count),
          }
        : {}),
      onPages: (bytes) => {
        this.doneBytes += bytes;
        this.opts.onProgress?.(Math.min(this.doneBytes, this.totalBytes), this.totalBytes);
      },
      onIdle: () => this.maybeFinish(),
      // A dropped channel is often the sender hanging up after saying why on the
      // control channel: let that reason arrive and win before failing on the drop.
      fail: (e) => (e instanceof ConnectionError ? setTimeout(() => this.fail(e), PEER_REASON_GRACE_MS).unref() : this.fail(e)),
    };
    return this.host;
  }

  private maybeFinish(): void {
    const done = this.complete;
    if (this.settled || this.finishing || !this.hello) return;
    if (!this.channels.every((c) => c?.idle)) return;
    if (!done) return this.watchComplete();
    this.finishing = true;
    this.finish(done).catch((e) => this.fail(e));
  }

  /** Every channel drained and the sender says it is done: verify, then commit (telling the sender it is busy meanwhile). */
  private async finish(done: Complete): Promise<void> {
    const beat = setInterval(() => this.control?.send({ type: 'busy', what: 'verifying and committing the outputs' }), BUSY_INTERVAL_MS);
    try {
      await this.verifyAndCommit(done);
    } finally {
      clearInterval(beat);
    }
  }

  private async verifyAndCommit(done: Complete): Promise<void> {
    const hello = this.hello!;
    verifyChannels(
      this.channels.map((c) => c!),
      done.packets,
    );
    await this.heldDigest;
    await this.extension?.finish();
    // A failure (Ctrl-C, the sender's late error) may come during any wait: it then owns the outputs.
    if (this.settled) return;
    verifyBlocks(hello.ramblocks, this.blocks, hello.pageSize, done.digests);
    await this.journals?.stop();
    if (this.settled) return;
    await Promise.all(this.outputs.map((o) => o.commit(this.opts.fsync ?? false)));
    if (this.settled) return;
    this.journals?.remove();
    const stats = buildStats(
      {
        side: 'recv',
        uuid: hello.uuid,
        compression: this.method!.name,
        compressionPath: this.compressionPath,
        zeroPageDetection: hello.zeroPageDetection,
        zeroPagePath: 'sender',
        paths: { compression: this.tally!.counts, zeroPage: emptyPathCounts() },
        pageSize: hello.pageSize,
        ramblocks: hello.ramblocks.map((b) => ({
          name: b.name,
          size: b.size,
          path: this.blocks.get(b.name)!.output.finalPath,
          digest: this.blocks.get(b.name)!.digest.hex(),
        })),
      },
      this.counters,
      this.startNs,
    );
    if (this.resumed) stats.resumedPages = this.heldPages;
    this.extension?.stats(stats);
    this.control?.send({ type: 'verdict', ok: true, stats: stats as unknown as Record<string, unknown> });
    this.settle();
    this.control?.close();
    this.resolve({ stats });
  }

  private fail(e: unknown): void {
    if (this.settled) return;
    const err = asMfdError(e);
    // At info: the command reports its failure once, as its last line; a failure followed by a
    // wait for a resume is logged at warn by receive(), with this message.
    this.log.info({ code: err.code, channel: err.channel }, `migration failed: ${errorText(err)}`);
    this.control?.send({ type: 'error', code: err.code, message: errorText(err) });
    this.settle();
    for (const s of this.sockets) s.destroy();
    void this.cleanUp(err).then(() => this.reject(err));
  }

  /**
   * After a failure: a last checkpoint; outputs with pages durably written
   * stay under their temporary names with their journals, for a resume.
   * They go when there is no journal, nothing was written, the checkpoint
   * failed, or the failure says the pages cannot be trusted (a protocol or
   * verification error: a resume would keep the bad pages). A refused resume
   * never opened its outputs, and leaves the files it found as they were.
   */
  private async cleanUp(err: MfdError): Promise<void> {
    // No periodic checkpoint from here on, whatever becomes of the outputs.
    await this.journals?.stop();
    let keep = false;
    const trusted = err.exitCode !== ExitCode.PROTOCOL && err.exitCode !== ExitCode.VERIFY;
    if (this.journals && trusted) {
      try {
        // Into the reserves, which a full disk leaves room for.
        keep = (await this.journals.flush()) > 0 || this.resumed;
      } catch (e) {
        // A journal is only ever replaced after its output was flushed: the one on disk still
        // matches, so a failed last checkpoint loses only the pages since the one before.
        keep = this.resumed || this.journals.blocks.some((b) => b.durablePages > 0);
        this.log.warn(`last checkpoint failed (${(e as Error).message}): ${keep ? 'resuming from the one before' : 'no resume possible'}`);
      }
    } else if (!this.journals && this.resumed) {
      // A resume refused while its outputs were being opened: the files it found stay as they were.
      keep = true;
    }
    if (!keep) this.journals?.remove();
    for (const b of this.journals?.blocks ?? []) b.reserve?.release();
    // Only once no write is left in flight (see WriteGate) is the failure reported.
    await Promise.allSettled(this.outputs.map((o) => (keep ? o.keep() : o.abort())));
    this.keptJournal = keep;
  }

  private settle(): void {
    this.settled = true;
    if (this.channelWatch) clearTimeout(this.channelWatch);
    if (this.completeWatch) clearTimeout(this.completeWatch);
    if (this.helloWatch) clearTimeout(this.helloWatch);
    for (const r of this.receivers) r.cleanup();
    this.extension?.close();
    void this.compute?.close();
    for (const ch of this.channels) if (ch && !ch.ended) ch.destroy();
  }
}
