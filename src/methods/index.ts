/** Loads every method so each registers itself. */
import './none.js';
import './zlib.js';
import './zstd.js';
import './lz4.js';
import './qpl.js';
import './qatzip.js';

export { allMethodOptions, getMethod, largestPayload, listMethods, methodByFlag } from './registry.js';
export type { CompressionMethod, MethodOption, MethodParams, MethodReceiver, MethodSender } from './method.js';
