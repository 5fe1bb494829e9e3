/** An image file, opened once; the zero-page backend reads its packets (positional reads in the addon). */
import fs from 'node:fs';
import { IoError } from '../errors.js';
import type { BlockSpec } from '../image/ramblock.js';

export class ImageSource {
  private constructor(
    readonly name: string,
    readonly path: string,
    readonly fd: number,
    readonly size: number,
  ) {}

  static async open(spec: BlockSpec): Promise<ImageSource> {
    let fd: number;
    try {
      fd = await new Promise<number>((resolve, reject) => fs.open(spec.path, 'r', (e, f) => (e ? reject(e) : resolve(f))));
    } catch (e) {
      throw new IoError(`ERR_${(e as NodeJS.ErrnoException).code ?? 'OPEN'}`, `cannot open image "${spec.path}": ${(e as Error).message}`, e);
    }
    const st = fs.fstatSync(fd);
    if (!st.isFile()) {
      fs.closeSync(fd);
      throw new IoError('ERR_NOT_A_FILE', `image "${spec.path}" is not a regular file`);
    }
    return new ImageSource(spec.name, spec.path, fd, st.size);
  }

  close(): void {
    try {
      fs.closeSync(this.fd);
    } catch {
      /* already closed */
    }
  }
}
