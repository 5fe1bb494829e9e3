/** Loads every method so each registers itself. */
import './none.js';
import './zlib.js';
import './zstd.js';
import './lz4.js';
import './qpl.js';
import './qatzip.js';

export { allMethodOptions, getMethod, largestPayload, listMethods, methodByFlag, methodChoice } from './registry.js';
export type { MethodChoice, MethodName, MethodRegistry, ParamsOfMethod } from './registry.js';
export type { CompressionMethod, MethodOption, MethodParams, MethodReceiver, MethodSender, ParamsOf } from './method.js';
