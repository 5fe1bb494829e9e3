/**
 * What a backend's probe reports (`mfd accel`): compiled or not, its state,
 * the probes made now and the library's own software path. Each method and
 * zero-page backend with hardware behind it makes its own report (its
 * probe()); `mfd accel` asks every one the registries hold.
 */
import type { BackendState } from './state.js';

export interface ProbeResult {
  /** What was probed (a work queue, "hardware job", "hardware session"). */
  target: string;
  ok: boolean;
  reason: string;
  /** How descriptors would be submitted (DSA): enqcmd, movdir64b, write, fake. */
  submission?: string;
}

export interface BackendReport {
  compiled: boolean;
  /** Not compiled; compiled but no device; device present but busy; hardware usable (DSA: by its probes). */
  state: BackendState;
  /** Library version when compiled ("" otherwise). */
  version: string;
  reason: string;
  /** Real probes made now: a QPL hardware job, a QATzip hardware session, a NOOP on each DSA work queue. */
  probes: ProbeResult[];
  /** The library's own software path, usable without a device (QPL's qpl_path_software, QATzip's sw_backup), when compiled. */
  softwarePath?: ProbeResult;
}

/** What a probe may look at: the sysfs root and the run's --accel-path values. */
export interface ProbeContext {
  sysfs: string;
  accelPaths: string[];
}

/** A backend's report under its name in `mfd accel` (e.g. "qpl", "dsa"). */
export interface BackendProbe {
  backend: string;
  report: BackendReport;
}

/**
 * A backend built on an optional library (QPL, QATzip): compiled or not, its state, the hardware
 * probe, and where compiled the library's own software path (opened only then).
 */
export function libraryBackend(
  hw: { ok: boolean; reason: string; version: string },
  state: BackendState,
  library: string,
  hwTarget: string,
  swTarget: string,
  openSoftware: () => { ok: boolean; reason: string },
): BackendReport {
  const compiled = hw.version !== '';
  const sw = compiled ? openSoftware() : null;
  return {
    compiled,
    state,
    version: hw.version,
    reason: compiled ? `built with ${library} ${hw.version}` : hw.reason,
    probes: [{ target: hwTarget, ok: hw.ok, reason: hw.reason }],
    ...(sw ? { softwarePath: { target: swTarget, ok: sw.ok, reason: sw.reason } } : {}),
  };
}
