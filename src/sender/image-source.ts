/** An image file read in packet-sized slabs with positional reads. */
import fs from 'node:fs';
import { IoError } from '../errors.js';
import type { BlockSpec } from '../image/ramblock.js';

export class ImageSource {
  private constructor(
    readonly name: string,
    readonly path: string,
    private readonly fd: number,
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

  /**
   * Reads `length` bytes at `position` into the start of `buf`. A short read
   * means the file shrank under us, which is an error, never a short page.
   */
  read(buf: Uint8Array, position: number, length: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const step = (done: number): void => {
        if (done === length) return resolve();
        fs.read(this.fd, buf, done, length - done, position + done, (err, n) => {
          if (err) return reject(new IoError(`ERR_${err.code ?? 'READ'}`, `reading image "${this.path}" at offset ${position + done}: ${err.message}`, err));
          if (n === 0) {
            return reject(
              new IoError('ERR_IMAGE_SHRANK', `image "${this.path}" shrank while sending: read ${position + done} bytes, expected ${this.size}`),
            );
          }
          step(done + n);
        });
      };
      step(0);
    });
  }

  close(): void {
    try {
      fs.closeSync(this.fd);
    } catch {
      /* already closed */
    }
  }
}
