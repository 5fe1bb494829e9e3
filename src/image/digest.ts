/**
 * The ramblock digest ("crc32c-pages-v1"): for every page of a block, its
 * CRC-32C (computed by the addon while the page is hot) is mixed with the
 * page's index, and the mixed values are summed. The sum does not depend on
 * the order in which channels deliver pages, so both sides compute it as
 * pages stream by, and a page that is corrupt or lands at the wrong offset
 * changes it. It guards against bugs and silent corruption, not against an
 * attacker (that is what authenticated channels are for). A last page that
 * runs past the end of the block is digested whole, zero padding included.
 */

/** murmur3's 32-bit finaliser: a bijective avalanche mix. */
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

export class BlockDigest {
  private lo = 0;
  private hi = 0;

  /** Adds page `pageIndex` whose CRC-32C is `crc`. */
  add(pageIndex: number, crc: number): void {
    this.mix(pageIndex, crc, 1);
  }

  /** Takes back an add(pageIndex, crc): a page rewritten in place (recv --qemu) is then added again with its new CRC. */
  remove(pageIndex: number, crc: number): void {
    this.mix(pageIndex, crc, -1);
  }

  private mix(pageIndex: number, crc: number, sign: 1 | -1): void {
    const il = pageIndex >>> 0;
    const ih = Math.floor(pageIndex / 0x100000000) >>> 0;
    this.lo = (this.lo + sign * fmix32(crc ^ fmix32(il ^ 0x9e3779b9) ^ Math.imul(ih, 0x27d4eb2f))) >>> 0;
    this.hi = (this.hi + sign * fmix32((crc + 0x7f4a7c15) ^ fmix32((il + 0x165667b1) >>> 0) ^ ih)) >>> 0;
  }

  /** 16 hex digits. */
  hex(): string {
    return this.hi.toString(16).padStart(8, '0') + this.lo.toString(16).padStart(8, '0');
  }
}
