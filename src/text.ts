/**
 * Text that may come from a peer (ramblock names, a peer's error message, a
 * QEMU machine type), made safe to show on a terminal or write to a log: a
 * name like "vm\nsent: FAKE LINE\x1b[31m" must not start a line of its own
 * or move the cursor. Control characters (C0, DEL, C1) are shown as escapes
 * (`\n`, `\r`, `\t`, `\x1b`, `\x9b`), and so are the Unicode line and
 * paragraph separators and the direction overrides and isolates, which can
 * make a line read otherwise than it is (`\u2028`, `\u202e`); a backslash is
 * shown as `\\`, so an escape seen is never the name's own text.
 *
 * Applied once, where text is shown: the CLI's summaries and error line, and
 * every log message (see log.ts).
 */

// eslint-disable-next-line no-control-regex
const UNSAFE = /[\\\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/g;

const NAMED: Record<string, string> = { '\\': '\\\\', '\n': '\\n', '\r': '\\r', '\t': '\\t' };

export function printable(text: string): string {
  return text.replace(
    UNSAFE,
    (c) =>
      NAMED[c] ??
      (c.charCodeAt(0) <= 0xff
        ? `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`
        : `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`),
  );
}

/**
 * A peer's value for an error message, short whatever it is: never the whole
 * of a large or deeply nested value (JSON.stringify of those is megabytes, or
 * a stack overflow).
 */
export function describe(v: unknown): string {
  if (Array.isArray(v)) return `an array of ${v.length}`;
  if (typeof v === 'object' && v !== null) return 'an object';
  if (typeof v === 'string') return JSON.stringify(v.length > 80 ? `${v.slice(0, 80)}...` : v);
  return String(v);
}
