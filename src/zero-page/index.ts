/** Loads every zero-page backend so each registers itself. */
import './cpu.js';
import './none.js';

export { getDetector, listDetectors } from './detector.js';
export type { ZeroPageDetector } from './detector.js';
