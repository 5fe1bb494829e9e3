/** Making a new file's name durable, for every writer of outputs, journals and migration files. */
import fs from 'node:fs';
import path from 'node:path';

/** fsync of the directory holding `file`, so a new file's name is durable too. */
export async function syncDirectory(file: string): Promise<void> {
  const fd = await fs.promises.open(path.dirname(path.resolve(file)), 'r');
  try {
    await fd.sync();
  } finally {
    await fd.close();
  }
}
