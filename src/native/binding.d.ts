/** Types for the raw addon layer (build/Release/mfd.node). Arguments are validated in TS. */
export interface CpuFeatures {
  sse2?: boolean;
  avx2?: boolean;
  avx512f?: boolean;
  avx512bw?: boolean;
  movdir64b?: boolean;
  enqcmd?: boolean;
}

export interface MfdBinding {
  /** Marks out[i]=1 for each all-zero page; returns how many there are. */
  scanZeroPages(pages: Uint8Array, pageSize: number, pageCount: number, out: Uint8Array): number;
  /** Zero flags (when zeroOut is given) and per-page CRC-32C (when crcOut is given), on the libuv pool. */
  analysePages(
    pages: Uint8Array,
    pageSize: number,
    pageCount: number,
    zeroOut: Uint8Array | null,
    crcOut: Uint32Array | null,
    cb: (err: Error | null, zeros: number) => void,
  ): void;
  analysePagesSync(pages: Uint8Array, pageSize: number, pageCount: number, zeroOut: Uint8Array | null, crcOut: Uint32Array | null): number;
  crc32c(bytes: Uint8Array): number;
  zeroPageAccels(): string[];
  zeroPageAccel(): string;
  _setZeroPageAccel(name: string): boolean;
  cpuFeatures(): CpuFeatures;
}
