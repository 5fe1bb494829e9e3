/**
 * What this addon was built with, asked of the addon itself (the build under test may be another
 * one than `pkg-config` would find now: CI points MFD_ADDON_PATH at a build against QPL and
 * QATzip), and what the tests then expect of the qpl and qatzip methods' reports.
 */
import { native } from '../../src/native/load.js';

const qplProbe = native.qplHardwareOpen();
const qzProbe = native.qatzipHardwareOpen(1);

export const built = {
  /** libqpl compiled in (its version, or ""). */
  qpl: qplProbe.version,
  /** QATzip compiled in (its API version, or ""). */
  qatzip: qzProbe.version,
};

/** The qpl method's software path by default (--qpl-sw-engine auto): libqpl's when built with it. */
export const qplSoftwarePath = built.qpl ? 'qpl-software' : 'software';

/** What a summary says of IAA when this build has no device: why not, per build. */
export const noIaa = built.qpl
  ? new RegExp(
      `compiled, no device \\(libqpl ${built.qpl.replace(/\./g, '\\.')}\\): qpl_init_job\\(qpl_path_hardware\\) failed with status \\d+`,
    )
  : /not compiled: pkg-config found no qpl/;

/** What a summary says of QAT when this build has no device: why not, per build. */
export const noQat = built.qatzip
  ? /compiled, no device \(QATzip [\d.]+\): QATzip status -?\d+/
  : /not compiled: pkg-config found no qatzip/;

/** The qpl method's compressionPath without a device, per build. */
export const qplPathNoDevice = built.qpl
  ? /^libqpl [\d.]+ software path \(qpl_path_software\): IAA compiled, no device/
  : /^software deflate \(4 KiB window\): IAA not compiled/;
