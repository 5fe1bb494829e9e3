/** Median and spread of a few runs, and ratios taken pair by pair (run i of mfd against run i of a peer). */

export interface Summary {
  n: number;
  median: number;
  min: number;
  max: number;
  /** (max - min) / median: 0.1 means the runs spread over 10% of the median. */
  relSpread: number;
}

export function median(xs: readonly number[]): number {
  if (xs.length === 0) throw new RangeError('median of no values');
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** The summary of the finite values among `xs`, or null when there are none. */
export function summarize(xs: readonly (number | null | undefined)[]): Summary | null {
  const v = xs.filter((x): x is number => typeof x === 'number' && Number.isFinite(x));
  if (v.length === 0) return null;
  const med = median(v);
  const min = Math.min(...v);
  const max = Math.max(...v);
  return { n: v.length, median: med, min, max, relSpread: med === 0 ? 0 : (max - min) / med };
}

/**
 * Ratios a[i] / b[i] for every run i where both were measured (pairs measured side by side,
 * so load on a shared machine hits both alike), summarized. The median of the ratios, not the
 * ratio of the medians.
 */
export function pairRatios(a: readonly (number | null | undefined)[], b: readonly (number | null | undefined)[]): Summary | null {
  const r: number[] = [];
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    const x = a[i];
    const y = b[i];
    if (typeof x === 'number' && typeof y === 'number' && Number.isFinite(x) && Number.isFinite(y) && y > 0) r.push(x / y);
  }
  return summarize(r);
}
