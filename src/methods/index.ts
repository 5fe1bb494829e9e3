/** Loads every method so each registers itself. */
import './none.js';

export { getMethod, listMethods, methodByFlag } from './registry.js';
export type { CompressionMethod, MethodParams, MethodReceiver, MethodSender } from './method.js';
