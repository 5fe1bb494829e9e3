/** Runs of consecutive normal (non-zero) pages of a packet, as views: the method's input. */
export function pageRuns(pages: Uint8Array, zero: Uint8Array, count: number, pageSize: number): Uint8Array[] {
  const runs: Uint8Array[] = [];
  let start = -1;
  for (let i = 0; i < count; i++) {
    if (zero[i]) {
      if (start >= 0) runs.push(pages.subarray(start * pageSize, i * pageSize));
      start = -1;
    } else if (start < 0) start = i;
  }
  if (start >= 0) runs.push(pages.subarray(start * pageSize, count * pageSize));
  return runs;
}
