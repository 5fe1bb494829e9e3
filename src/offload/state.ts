/**
 * The four states a library-backed accelerator can be in, as `mfd accel` and
 * the run summaries name them: not compiled into this build; compiled but no
 * device this process may use; a device that answered busy (QEMU retries,
 * then takes the software path); hardware in use. Read from the addon's
 * probe, whose status is the library's own (QPL's qpl_status, QATzip's QZ_*).
 */
export type BackendState = 'not-compiled' | 'no-device' | 'busy' | 'hardware';

export const STATE_TEXT: Record<BackendState, string> = {
  'not-compiled': 'not compiled',
  'no-device': 'compiled, no device',
  busy: 'device present but busy',
  hardware: 'hardware',
};

export interface Probe {
  ok: boolean;
  /** The library's version, "" when not compiled. */
  version: string;
  status: number;
  /** A test's stand-in answered (fake-qat): there is still no device. */
  fake?: boolean;
}

/** QPL_STS_QUEUES_ARE_BUSY_ERR: no work queue accepted the job. */
const QPL_BUSY = new Set([5]);
/** QZ_NO_INST_ATTACH / QZ_NOSW_NO_INST_ATTACH: every QAT instance is taken by other processes. */
const QZ_BUSY = new Set([13, -103]);

function state(p: Probe, busy: Set<number>): BackendState {
  if (p.version === '') return 'not-compiled';
  if (p.fake) return 'no-device';
  if (p.ok) return 'hardware';
  return busy.has(p.status) ? 'busy' : 'no-device';
}

export const qplState = (p: Probe): BackendState => state(p, QPL_BUSY);
export const qatzipState = (p: Probe): BackendState => state(p, QZ_BUSY);
