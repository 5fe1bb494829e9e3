/** Loads every zero-page backend so each registers itself. */
import './cpu.js';
import './none.js';
import './dsa.js';

export { getDetector, listDetectors, HOLE_PATH } from './detector.js';
export type { ZeroPageDetector, ZeroPageScanner, DetectorOptions } from './detector.js';
