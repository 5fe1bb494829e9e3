/** mfd's version, from package.json (the one source; --version and every --json output carry it). */
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

export const MFD_VERSION: string = (require('../package.json') as { version: string }).version;
