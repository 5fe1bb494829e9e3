/**
 * A small hand-written SVG line chart: axes with ticks, a legend, one polyline (with a dot per
 * point) per series. Categorical x (e.g. channel counts, evenly spaced), linear y from zero.
 * No dependency: a few dozen lines of markup that any browser opens.
 */

export interface Series {
  name: string;
  points: { x: number; y: number }[];
  /** Series with the same key share a colour (a method and its QEMU counterpart); default: the name. */
  colorKey?: string;
  /** Drawn dashed (a peer's line next to mfd's, or the receiver's next to the sender's). */
  dashed?: boolean;
  /** The group's class after "series" (default "method"; "peer" for a peer's line). */
  kind?: string;
}

/** A horizontal dashed line across the plot (a peer that does not depend on x, like raw nc). */
export interface Reference {
  name: string;
  y: number;
}

export interface ChartSpec {
  title: string;
  subtitle?: string;
  xLabel: string;
  yLabel: string;
  /** The x categories in order, with their labels. */
  xTicks: { value: number; label: string }[];
  series: Series[];
  references?: Reference[];
  width?: number;
  height?: number;
}

/** Okabe-Ito: distinguishable for colour-blind readers. */
const COLORS = ['#0072B2', '#D55E00', '#009E73', '#CC79A7', '#E69F00', '#56B4E9', '#F0E442', '#000000'];
/** Reference lines: greys with distinct dash patterns. */
const REF_STYLES = [
  { stroke: '#777777', dash: '2 3' },
  { stroke: '#333333', dash: '10 3 2 3' },
  { stroke: '#999999', dash: '1 6' },
];

export function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;');
}

/** Round tick steps (1, 2, 5 x 10^k) covering 0..max with about `count` ticks. */
export function niceTicks(max: number, count = 5): number[] {
  if (!(max > 0) || !Number.isFinite(max)) return [0, 1];
  const raw = max / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = ([1, 2, 5, 10].find((m) => m * mag >= raw) ?? 10) * mag;
  const ticks: number[] = [];
  for (let i = 0; ; i++) {
    const v = Number((i * step).toPrecision(12));
    ticks.push(v);
    if (v >= max) break;
  }
  return ticks;
}

function fmt(n: number): string {
  return Number(n.toFixed(2)).toString();
}

export function lineChart(spec: ChartSpec): string {
  const width = spec.width ?? 720;
  const legendW = 230;
  const refs = (spec.references ?? []).filter((r) => Number.isFinite(r.y));
  const legendRows = spec.series.length + refs.length;
  const m = { top: spec.subtitle ? 62 : 46, right: legendW + 20, bottom: 56, left: 70 };
  // Tall enough for the legend, one row per series.
  const height = spec.height ?? Math.max(420, m.top + 20 + 20 * legendRows + m.bottom);
  const pw = width - m.left - m.right;
  const ph = height - m.top - m.bottom;
  const maxY = Math.max(0, ...[...spec.series.flatMap((s) => s.points.map((p) => p.y)), ...refs.map((r) => r.y)].filter(Number.isFinite));
  const yTicks = niceTicks(maxY);
  const yMax = yTicks[yTicks.length - 1]!;
  const n = spec.xTicks.length;
  const xOf = (value: number): number => {
    const i = spec.xTicks.findIndex((t) => t.value === value);
    // Categories sit in the middle of equal slots, so no point lands on the y axis.
    return m.left + ((i + 0.5) * pw) / Math.max(n, 1);
  };
  const yOf = (v: number): number => m.top + ph - (v / yMax) * ph;
  const o: string[] = [];
  o.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
  );
  o.push(`  <title>${escapeXml(spec.title)}</title>`);
  o.push(`  <rect x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>`);
  o.push(`  <text x="${width / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">${escapeXml(spec.title)}</text>`);
  if (spec.subtitle) o.push(`  <text x="${width / 2}" y="42" text-anchor="middle" fill="#555555">${escapeXml(spec.subtitle)}</text>`);
  // Grid and y ticks.
  o.push('  <g class="y-axis">');
  for (const t of yTicks) {
    const y = fmt(yOf(t));
    o.push(`    <line x1="${m.left}" y1="${y}" x2="${m.left + pw}" y2="${y}" stroke="#e0e0e0"/>`);
    o.push(`    <text x="${m.left - 8}" y="${y}" text-anchor="end" dominant-baseline="middle">${escapeXml(fmt(t))}</text>`);
  }
  o.push(`    <text transform="translate(18 ${m.top + ph / 2}) rotate(-90)" text-anchor="middle">${escapeXml(spec.yLabel)}</text>`);
  o.push('  </g>');
  // x ticks.
  o.push('  <g class="x-axis">');
  for (const t of spec.xTicks) {
    const x = fmt(xOf(t.value));
    o.push(`    <line x1="${x}" y1="${m.top + ph}" x2="${x}" y2="${m.top + ph + 5}" stroke="#333333"/>`);
    o.push(`    <text x="${x}" y="${m.top + ph + 20}" text-anchor="middle">${escapeXml(t.label)}</text>`);
  }
  o.push(`    <text x="${m.left + pw / 2}" y="${height - 12}" text-anchor="middle">${escapeXml(spec.xLabel)}</text>`);
  o.push('  </g>');
  // Axes.
  o.push(`  <line x1="${m.left}" y1="${m.top}" x2="${m.left}" y2="${m.top + ph}" stroke="#333333"/>`);
  o.push(`  <line x1="${m.left}" y1="${m.top + ph}" x2="${m.left + pw}" y2="${m.top + ph}" stroke="#333333"/>`);
  // Series, references and the legend.
  const keys: string[] = [];
  const colorOf = (key: string): string => {
    if (!keys.includes(key)) keys.push(key);
    return COLORS[keys.indexOf(key) % COLORS.length]!;
  };
  const legend = (i: number, color: string, dashed: boolean, name: string): void => {
    const ly = m.top + 10 + i * 20;
    const lx = width - legendW;
    o.push(`  <g class="legend-item">`);
    o.push(
      `    <line x1="${lx}" y1="${ly}" x2="${lx + 24}" y2="${ly}" stroke="${color}" stroke-width="2"${dashed ? ' stroke-dasharray="6 3"' : ''}/>`,
    );
    o.push(`    <text x="${lx + 30}" y="${ly}" dominant-baseline="middle">${escapeXml(name)}</text>`);
    o.push('  </g>');
  };
  spec.series.forEach((s, i) => {
    const color = colorOf(s.colorKey ?? s.name);
    const pts = s.points
      .filter((p) => Number.isFinite(p.y) && spec.xTicks.some((t) => t.value === p.x))
      .sort((a, b) => xOf(a.x) - xOf(b.x));
    o.push(`  <g class="series ${escapeXml(s.kind ?? 'method')}" data-name="${escapeXml(s.name)}">`);
    o.push(
      `    <polyline fill="none" stroke="${color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 3"' : ''} points="${pts.map((p) => `${fmt(xOf(p.x))},${fmt(yOf(p.y))}`).join(' ')}"/>`,
    );
    for (const p of pts) {
      o.push(
        `    <circle cx="${fmt(xOf(p.x))}" cy="${fmt(yOf(p.y))}" r="${s.dashed ? 2.5 : 3.5}" fill="${color}"><title>${escapeXml(`${s.name}: ${fmt(p.y)} at ${p.x}`)}</title></circle>`,
      );
    }
    o.push('  </g>');
    legend(i, color, s.dashed ?? false, s.name);
  });
  refs.forEach((r, j) => {
    const y = fmt(yOf(r.y));
    const st = REF_STYLES[j % REF_STYLES.length]!;
    o.push(`  <g class="reference" data-name="${escapeXml(r.name)}">`);
    o.push(
      `    <line x1="${m.left}" y1="${y}" x2="${m.left + pw}" y2="${y}" stroke="${st.stroke}" stroke-width="1.5" stroke-dasharray="${st.dash}"><title>${escapeXml(`${r.name}: ${fmt(r.y)}`)}</title></line>`,
    );
    o.push('  </g>');
    const ly = m.top + 10 + (spec.series.length + j) * 20;
    const lx = width - legendW;
    o.push(`  <g class="legend-item">`);
    o.push(
      `    <line x1="${lx}" y1="${ly}" x2="${lx + 24}" y2="${ly}" stroke="${st.stroke}" stroke-width="1.5" stroke-dasharray="${st.dash}"/>`,
    );
    o.push(`    <text x="${lx + 30}" y="${ly}" dominant-baseline="middle">${escapeXml(r.name)}</text>`);
    o.push('  </g>');
  });
  o.push('</svg>');
  return o.join('\n') + '\n';
}
