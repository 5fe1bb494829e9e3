/** Types for the raw addon layer (mfd.node: built from source or prebuilt, see load.ts). Arguments are validated in TS. */
export interface CpuFeatures {
  sse2?: boolean;
  avx2?: boolean;
  avx512f?: boolean;
  avx512bw?: boolean;
  movdir64b?: boolean;
  enqcmd?: boolean;
}

/** A zstd stream in the addon (QEMU multifd-zstd framing). */
export interface ZstdStream {
  /** The runs into the channel's stream (ZSTD_e_continue), the last flushed (ZSTD_e_flush); bytes written to out. */
  compress(runs: Uint8Array[], out: Uint8Array): number;
  /** Decodes every byte of the pieces into out; bytes decoded. Throws ERR_PAYLOAD_SIZE past out's end, ERR_PAYLOAD_CORRUPT on a zstd error. */
  decompress(pieces: Uint8Array[], out: Uint8Array): number;
  /**
   * The handle SocketChannel.recvWrite takes to decode this (decompressing) stream's payloads on a channel's
   * own thread (addon/packet_decoder.h): the same stream state as decompress(), which the caller never runs
   * at the same time.
   */
  decoder(): DecoderHandle;
  /** Frees the stream's context now rather than at garbage collection (an operation still running it keeps it). */
  close(): void;
}

/** An addon stream's decoder, as recvWrite takes it (an opaque External). */
export type DecoderHandle = { readonly __decoderHandle: unique symbol };

/** A zlib stream in the addon (QEMU multifd-zlib framing). */
export interface ZlibStream {
  /** Deflates whole pages (each run a multiple of pageSize) into out; the last page is sync-flushed. Returns bytes written. */
  deflatePages(runs: Uint8Array[], pageSize: number, out: Uint8Array): number;
  /** Inflates every input byte into out; throws (code ERR_PAYLOAD_CORRUPT / ERR_PAYLOAD_SIZE) on bad or oversized data. */
  inflate(pieces: Uint8Array[], out: Uint8Array): number;
  /** An inflate stream's handle for SocketChannel.recvWrite (as ZstdStream.decoder()). */
  decoder(): DecoderHandle;
  /** Frees the stream now rather than at garbage collection (an operation still running it keeps it). */
  close(): void;
}

/** What a DSA work queue (or the fake) offers. */
export interface DsaQueueInfo {
  id: number;
  /** "enqcmd", "movdir64b", "write" or "fake". */
  submission: string;
  /** False for the fake queue. */
  hardware: boolean;
  batches: boolean;
  maxBatch: number;
}

/**
 * A multifd channel's socket driven from a native thread (addon/socket_channel.cc).
 * Codes are 0, -errno, or ESTALLED (the operation's timeout passed without progress); the fd stays the JS socket's.
 */
export interface SocketChannel {
  /** Sends the pieces in order; `left` bytes were not sent when code < 0 (ESTALLED: nothing taken for timeoutMs). */
  send(pieces: Uint8Array[], timeoutMs: number, cb: (err: Error | null, code: number, left: number) => void): void;
  /**
   * Fills buf from `have` to its end; `got` bytes are in buf (fewer: the stream ended, or code < 0). Once it is
   * full, what has already arrived goes into `ahead` (if any) without waiting: aheadGot bytes, aheadCode < 0 if
   * that read failed.
   */
  recv(
    buf: Uint8Array,
    have: number,
    ahead: Uint8Array | null,
    timeoutMs: number,
    cb: (err: Error | null, got: number, code: number, aheadGot: number, aheadCode: number) => void,
  ): void;
  /**
   * A header into buf[0, headerSize) (buf[0, have) already there), waited for as recv() waits; then, without
   * waiting, each next header that has wholly arrived, while the last one read announces no payload (its
   * big-endian u32 at sizeAt is 0) and buf has room. `got`: headerSize times the headers read, or, below
   * headerSize, as recv()'s (the stream ended, or code < 0).
   */
  recvHeaders(
    buf: Uint8Array,
    have: number,
    headerSize: number,
    sizeAt: number,
    timeoutMs: number,
    cb: (err: Error | null, got: number, code: number) => void,
  ): void;
  /**
   * A packet's payload read into all of buf, then its `normal` pages digested into crc and written to fd at
   * the offsets as writePacket does (zero pages after the normal ones, written when writeZeros), on the
   * channel's thread in the same operation. Without a decoder (null) the payload is the pages as they are
   * (compression none; buf is normal * pageSize bytes); with one, it is decoded into `pages` (normal * pageSize
   * bytes) first. `got` bytes are in buf (fewer: the stream ended, or the read failed); `onFile`: code is the
   * write's failure (badPage with EPADDING), not the socket's. `decoded`: the pages' bytes, or, for a payload
   * that did not decode (nothing written), -1 with decodeCode and decodeMessage, or the bytes it decoded to
   * (decodeCode null). `ahead` as recv(), read once the pages are written.
   */
  recvWrite(
    buf: Uint8Array,
    fd: number,
    pageSize: number,
    offsets: Float64Array,
    normal: number,
    zero: number,
    blockSize: number,
    writeZeros: boolean,
    crc: Uint32Array,
    ahead: Uint8Array | null,
    decoder: DecoderHandle | null,
    pages: Uint8Array | null,
    timeoutMs: number,
    cb: (
      err: Error | null,
      got: number,
      code: number,
      aheadGot: number,
      aheadCode: number,
      onFile: boolean,
      badPage: number,
      decoded: number,
      decodeCode: string | null,
      decodeMessage: string,
    ) => void,
  ): void;
  /** Ends the connection both ways; a blocked operation returns, later ones fail with -ECANCELED. */
  shutdown(): void;
  /** The thread ends once the queued operations have completed. */
  close(): void;
  /** The channel's number for socketChannelSend (from any thread). */
  id(): number;
  /** Completions of the sends socketChannelSend queued: code 0, or < 0 with `left` bytes not sent. */
  onRelayed(cb: (token: number, code: number, left: number) => void): void;
  /** A send another thread will make: keeps the process alive until release(). */
  hold(): void;
  release(): void;
  /** Whether a send socketChannelSend queued with `token` is still queued or running. */
  relayQueued(token: number): boolean;
}

/** One direction of a delay line (forward: first device to second). */
export interface DelayLineDirection {
  packets: number;
  /** Bytes forwarded, each packet's 10-byte virtio-net header included. */
  bytes: number;
  /** Packets not forwarded: the queue's limit (256 MiB) was reached, or the write to the other device failed. */
  dropped: number;
  /** The most bytes waiting at once. */
  maxQueuedBytes: number;
}

export interface DelayLineStats {
  /** CPU seconds of the forwarding thread. */
  cpuSec: number;
  forward: DelayLineDirection;
  back: DelayLineDirection;
}

/** Two TUN devices and a thread forwarding each packet from one to the other `delayUs` after it was read. */
export interface DelayLine {
  stats(): DelayLineStats;
  /** Stops the thread and closes the devices (which removes them); the final stats. */
  close(): DelayLineStats;
}

/**
 * The natives' result codes beyond 0 and -errno (addon/common.h's one table), by the name
 * NativeIoError.code gives them (src/native/io-error.ts maps a result to its name).
 */
export interface ResultCodes {
  /** A file ended (or a mapped file shrank) before the bytes asked for. */
  ESHORTREAD: number;
  /** A page past the block's end has non-zero bytes (writePacket). */
  EPADDING: number;
  /** A write moved fewer bytes than asked (never retried). */
  ESHORTWRITE: number;
  /** A socket operation made no progress within its timeout. */
  ESTALLED: number;
}

/** writePacket's and writePacketSync's arguments (before writePacket's callback): one packet's write. */
export type WritePacketArgs = [
  fd: number,
  pieces: Uint8Array[],
  pageSize: number,
  offsets: Float64Array,
  normal: number,
  zero: number,
  blockSize: number,
  writeZeros: boolean,
  crcOut: Uint32Array,
];

export interface MfdBinding {
  resultCodes: Readonly<ResultCodes>;
  /** False when the addon was built without xxhash.h (libxxhash-dev): the delta functions then throw ERR_DELTA_UNAVAILABLE. */
  deltaAvailable: boolean;
  /** XXH_versionNumber() of the xxHash the addon was built with (801 = 0.8.1); absent without it. */
  xxhashVersion?: number;
  /**
   * The XXH3 kernel that hashes delta fingerprints (addon/delta.cc): "avx512", "avx2" or "sse2" on x86-64, chosen by what the CPU
   * runs and checked against the default kernel at load (MFD_DELTA_HASH names another); absent without xxHash.
   */
  deltaHashKernel?: string;
  /** The kernels this CPU runs whose hashes equal the default's, best last; absent without xxHash. */
  deltaHashKernels?: string[];
  /**
   * 16-byte fingerprint entries (96 bits of XXH3-128, u32 page index) of the non-zero pages among `count`, in page order; n entries;
   * with crcOut, every page's CRC-32C; pages flagged in `holes` are zero, never touched (addon/delta.cc). `pages` may be a mapRange
   * mapping: n is then ESHORTREAD (negative) if the file shrank under it.
   */
  deltaFingerprint(
    pages: Uint8Array,
    pageSize: number,
    count: number,
    firstIndex: number,
    out: Uint8Array,
    crcOut: Uint32Array | null,
    holes: Uint8Array | null,
    cb: (err: Error | null, n: number) => void,
  ): void;
  /**
   * deltaFingerprint of the `length` bytes (whole pages) of file `fd` at `position`, in one call off the event loop: the range's
   * holes found (lseek; `span`, [start, end) of the file known to be all data, kept across calls), mapped read-only, its data's
   * page tables populated, hashed on all cores and unmapped; pages in holes never touched. n is ESHORTREAD (negative) when
   * the file is now shorter than `size` or shrinks under the mapping.
   */
  deltaFingerprintFile(
    fd: number,
    position: number,
    length: number,
    size: number,
    pageSize: number,
    firstIndex: number,
    out: Uint8Array,
    crcOut: Uint32Array | null,
    span: Float64Array,
    cb: (err: Error | null, n: number) => void,
  ): void;
  /** Sorts `count` entries in place by key, then index. */
  deltaSort(entries: Uint8Array, count: number, cb: (err: Error | null) => void): void;
  /** out[i]: the index of the sorted table's entry with entry i's key, or 0xffffffff; the number of matches. */
  deltaMatch(table: Uint8Array, tableCount: number, entries: Uint8Array, count: number, out: Uint32Array): number;
  /** `bytes` of zero-filled memory in a mapping of its own (not malloc's heap), unmapped when the buffer goes. */
  deltaAlloc(bytes: number): ArrayBuffer;
  /** Detaches `buffer`: its memory is freed now, not at the garbage collector's next pass; its views are then empty. False when it cannot be. */
  deltaRelease(buffer: ArrayBuffer): boolean;
  /** Creates TUN devices nameA and nameB (IFF_TUN, no packet info, virtio-net header) in this network namespace; throws code ERR_BENCH_LINK. */
  DelayLine: new (nameA: string, nameB: string, delayUs: number) => DelayLine;
  SocketChannel: new (fd: number) => SocketChannel;
  /**
   * From any thread: sends `pieces` on channel `id` (SocketChannel.id()) in order after what is queued on it.
   * With nothing queued, what the socket takes at once goes from this thread; the rest to the channel's
   * thread, completing through its onRelayed(token). result: [code, left]; code 0: sent; 1: `left` bytes
   * queued; < 0: failed with `left` bytes not sent (-ECANCELED: the channel is shut down or closed).
   */
  socketChannelSend(id: number, pieces: Uint8Array[], timeoutMs: number, token: number, result: Float64Array): void;
  /**
   * engine "isal" runs ISA-L's igzip (deflate levels 1..3, inflate of any zlib stream); only when
   * isalVersion is set, otherwise the constructor throws. Default "zlib".
   */
  ZlibStream: new (inflate: boolean, level: number, engine?: 'zlib' | 'isal') => ZlibStream;
  zlibVersion: string;
  /**
   * ISA-L's version (e.g. "2.30.0") when it is available: the addon was built with libisal-dev's
   * headers and libisal.so.2 was loaded at run time (MFD_ISAL_LIBRARY names another file, or "off");
   * else null.
   */
  isalVersion: string | null;
  /** The ISA-L library file loaded (e.g. "/usr/lib/x86_64-linux-gnu/libisal.so.2.0.30"), else null. */
  isalFile: string | null;
  /** Why ISA-L is not available (no headers at build time, no libisal.so.2 on this host), else null. */
  isalUnavailable: string | null;
  /** Upper bound on a sync-flushed deflate of n bytes. */
  zlibCompressBound(n: number): number;
  /**
   * The lz4 method's payload (addon/lz4_block.cc): the runs joined, as a little-endian u32 length
   * then one LZ4 block, written into out (at least the runs' bytes + bytes/255 + 20); bytes written.
   */
  lz4Compress(runs: Uint8Array[], out: Uint8Array): number;
  /**
   * A payload (its pieces in order) decoded into out as lz4Decoder's handle decodes it on a channel's
   * thread: its 4-byte prefix must declare out's length, then its LZ4 block is decoded; the bytes
   * decoded. A payload it refuses throws ERR_PAYLOAD_SIZE or ERR_PAYLOAD_CORRUPT (with the addon's message).
   */
  lz4Decompress(pieces: Uint8Array[], out: Uint8Array): number;
  /** The handle SocketChannel.recvWrite takes to decode lz4 packets on a channel's own thread (the checks of the lz4 method's recv()). */
  lz4Decoder(): DecoderHandle;
  /** liblz4's version (e.g. "1.9.4"), or null when the addon was built without liblz4-dev (then lz4Compress, lz4Decompress and lz4Decoder are absent). */
  lz4Version: string | null;
  /**
   * The zstd method's per-channel stream (addon/zstd_stream.cc), on libzstd: compressing (level,
   * windowLog, 0 for the level's own) or decompressing (windowLog: the largest window accepted).
   * Absent when zstdVersion is null.
   */
  ZstdStream: new (decompress: boolean, level: number, windowLog: number) => ZstdStream;
  /** libzstd's version (e.g. "1.5.4"), or null when the addon was built without libzstd-dev (then ZstdStream is absent). */
  zstdVersion: string | null;
  /** Marks out[i]=1 for each all-zero page; returns how many there are. */
  scanZeroPages(pages: Uint8Array, pageSize: number, pageCount: number, out: Uint8Array): number;
  /**
   * Zero flags (when zeroOut is given) and per-page CRC-32C (when crcOut is given), on the libuv
   * pool. cb gets the zero count, or ESHORTREAD when `pages` is a file mapping whose file shrank.
   * `holes` (with zeroOut) flags pages known to be zero, which are then not read at all.
   */
  analysePages(
    pages: Uint8Array,
    pageSize: number,
    pageCount: number,
    zeroOut: Uint8Array | null,
    crcOut: Uint32Array | null,
    holes: Uint8Array | null,
    cb: (err: Error | null, zerosOrCode: number) => void,
  ): void;
  analysePagesSync(
    pages: Uint8Array,
    pageSize: number,
    pageCount: number,
    zeroOut: Uint8Array | null,
    crcOut: Uint32Array | null,
    holes?: Uint8Array | null,
  ): number;
  /**
   * Where the file has data in [position, position+length): [start, end) pairs (lseek SEEK_DATA/SEEK_HOLE).
   * `until[0]` gets where the last extent really ends (past the range when the data goes on; within it when the range ends in a hole; 0 without data).
   */
  dataExtents(fd: number, position: number, length: number, until?: Float64Array): Float64Array;
  /**
   * [code, mapNs, readNs]: this thread's CPU nanoseconds to touch the whole pages of `extents` ([start, end) pairs,
   * data only) through one fresh read-only mapping over them, and to pread them into a 512 KiB buffer (the cheaper of two
   * rounds each); code 0, or negative (-errno, ESHORTREAD) without times.
   */
  probeImageAccess(fd: number, extents: Float64Array): Float64Array;
  /** Read-only shared mapping of [position, position+length) of the file (position page-aligned). */
  mapRange(fd: number, position: number, length: number): ArrayBuffer;
  /** Detaches a mapRange buffer and unmaps its pages now (otherwise its finalizer does). */
  unmapRange(pages: ArrayBuffer): void;
  /**
   * CRC-32C of each normal page into crcOut, a check that pages past blockSize carry only zero
   * padding, then positional writes of the normal pages (and, with writeZeros, zeros for the zero
   * pages), clipped to blockSize. cb gets 0 or a negative code (-errno, or EPADDING with badPage).
   */
  writePacket(...args: [...WritePacketArgs, cb: (err: Error | null, result: number, badPage: number) => void]): void;
  /** writePacket on the calling thread (a compute worker): [0 or a negative code, badPage]. */
  writePacketSync(...args: WritePacketArgs): [number, number];
  /** CRC-32C of bytes; a seed continues an earlier CRC: crc32c(b, crc32c(a)) === crc32c(a + b). */
  crc32c(bytes: Uint8Array, seed?: number): number;
  /** The same CRC by the addon's own code (SSE4.2 or a table), whichever engine crc32c runs. */
  crc32cBuiltin(bytes: Uint8Array, seed?: number): number;
  /** What computes crc32c: "isa-l 2.30.0 crc32_iscsi", "sse4.2" or "table". */
  crc32cEngine: string;
  /** Copies src to the start of dst and returns `crc` continued over src (one pass, block by block). */
  copyCrc32c(dst: Uint8Array, src: Uint8Array, crc: number): number;
  /** `size` zero bytes (a multiple of 4096) at a 4096-aligned address, freed with the ArrayBuffer: O_DIRECT-ready. */
  alignedBuffer(size: number): ArrayBuffer;
  /**
   * Positional writes (or reads) of pieces[i] at positions[i] on the libuv pool (mode 0 read, 1 write,
   * 2 write and start writeback of the written range with sync_file_range); pieces that follow on
   * from each other share one pwritev/preadv. cb gets 0, -errno, ESHORTWRITE (never retried) or
   * ESHORTREAD (end of file), and [position, bytes asked, bytes moved] of the call that failed.
   */
  positionalIo(
    fd: number,
    mode: 0 | 1 | 2,
    pieces: Uint8Array[],
    positions: Float64Array,
    cb: (err: Error | null, result: number, failure: [number, number, number]) => void,
  ): void;
  /**
   * qpl format: BE u32 length per page, then raw deflate (4 KiB window) or the raw page; IAA (or the
   * fake engine) first when there is one, then the software path: mfd's (software 0, the default) or
   * libqpl's qpl_path_software (1; throws ERR_QPL_UNAVAILABLE when not compiled). Returns bytes
   * written; counts gets [hardware, software, raw, busy fallbacks, error fallbacks, busy retries,
   * software-path library errors].
   */
  qplCompressPages(runs: Uint8Array[], pageSize: number, out: Uint8Array, counts: Float64Array, software?: 0 | 1): number;
  /** Checks every length, decodes each page; throws (code ERR_PAYLOAD_SIZE / ERR_PAYLOAD_CORRUPT) otherwise. Counts and software as above. */
  qplDecompressPages(
    payload: Uint8Array,
    normalPages: number,
    pageSize: number,
    out: Uint8Array,
    counts: Float64Array,
    software?: 0 | 1,
  ): number;
  /** Probes IAA once per process (qpl_init_job on the hardware path); status is qpl_init_job's (-1: not compiled). */
  qplHardwareOpen(): { ok: boolean; reason: string; status: number; version: string; name?: string; hardware?: boolean };
  /** Whether libqpl's software path (qpl_path_software) can run here. */
  qplSoftwareOpen(): { ok: boolean; reason: string };
  /** The engine in use, or null (software only). */
  qplEngine(): { name: string; hardware: boolean } | null;
  /**
   * Tests: installs the fake IAA engine ("busy=N,error_every=K"), or removes any engine (null). The fake
   * is in the test addon: ERR_QPL_UNAVAILABLE until a test has installed it (_installTestNatives).
   */
  _qplSetFakeEngine(options: string | null): { name: string; hardware: boolean } | undefined;
  /**
   * Tests: hands the product the test addon's stand-ins (mfd_test.node's `natives`: the fake DSA work
   * queue, the fake IAA engine). Nothing in the program calls it (test/helpers/test-natives.ts does).
   */
  _installTestNatives(natives: unknown): void;
  /**
   * Opens this thread's QATzip hardware session (sw_backup 0) at `level`; ok only for a hardware session; status is
   * QATzip's. fake: the test stand-in (_qatzipSetFakeHardware) answered.
   */
  qatzipHardwareOpen(level: number): { ok: boolean; reason: string; status: number; version: string; fake?: boolean };
  /** Tests: QATzip's software session stands in for the hardware session ("fake-qat"); false when the build has no QATzip. */
  _qatzipSetFakeHardware(on: boolean): boolean;
  /** Opens this thread's QATzip software session (sw_backup 1, QEMU's call without a device) at `level`. */
  qatzipSoftwareOpen(level: number): { ok: boolean; reason: string; status: number; version: string };
  /** One qzCompress of the packet on the hardware session, or the software one (software true); bytes written; throws ERR_QATZIP with `status`. */
  qatzipCompress(data: Uint8Array, out: Uint8Array, software?: boolean): number;
  /** qatzip's software path: QZ-headed gzip members per 64 KiB of input into out (isalLevel 0: zlib at level); bytes written. */
  qzMembers(input: Uint8Array, level: number, isalLevel: number, out: Uint8Array): number;
  /** Every gzip member of payload into out, by ISA-L (absent without ISA-L); bytes; throws ERR_PAYLOAD_SIZE / ERR_PAYLOAD_CORRUPT. */
  qzInflate?(payload: Uint8Array, out: Uint8Array): number;
  /** One qzDecompress of the payload (hardware or software session); bytes written; throws ERR_PAYLOAD_CORRUPT with `status`. */
  qatzipDecompress(payload: Uint8Array, out: Uint8Array, software?: boolean): number;
  /** Opens (once per process and spec) "dsa:/dev/dsa/wqX.Y" or "fake:opts"; throws (code ERR_DSA_OPEN) with the reason. */
  dsaOpen(spec: string, sysfsRoot: string): DsaQueueInfo;
  /**
   * One packet's zero check on the queue, CPU for what it does not finish, CRC-32C per page. counts
   * gets [device, page-fault, descriptor-error, queue-busy, device-failed, retries, batches, descriptors].
   */
  dsaScan(
    id: number,
    pages: Uint8Array,
    pageSize: number,
    pageCount: number,
    zeroOut: Uint8Array,
    crcOut: Uint32Array,
    counts: Float64Array,
    timeoutMs: number,
    cb: (err: Error | null, zerosOrCode: number) => void,
  ): void;
  dsaStatus(id: number): { failed: boolean; reason: string };
  /** Opens a fresh queue and completes a NOOP on it: the real probe. */
  dsaProbe(spec: string, sysfsRoot: string, timeoutMs: number): Partial<Omit<DsaQueueInfo, 'id'>> & { ok: boolean; reason: string };
  zeroPageAccels(): string[];
  zeroPageAccel(): string;
  _setZeroPageAccel(name: string): boolean;
  cpuFeatures(): CpuFeatures;
}
