/** A small XML well-formedness checker and tree, for the bench's SVG tests (no XML dependency). */

export interface XmlElement {
  name: string;
  attrs: Record<string, string>;
  children: XmlElement[];
  text: string;
  parent: XmlElement | null;
}

const NAME = /^[A-Za-z_:][\w:.-]*/;
const ENTITY = /&(?:amp|lt|gt|quot|apos|#\d+|#x[0-9a-fA-F]+);/g;

function checkText(s: string, where: string): string {
  if (s.includes('<')) throw new Error(`bare < in ${where}`);
  const rest = s.replace(ENTITY, '');
  if (rest.includes('&')) throw new Error(`bare & in ${where}: ${s.slice(0, 60)}`);
  return s
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&quot;/g, '"')
    .replace(/&apos;/g, "'")
    .replace(/&amp;/g, '&');
}

/** Parses `xml`, throwing on anything not well-formed; returns the root element. */
export function parseXml(xml: string): XmlElement {
  const body = xml.replace(/^\s*<\?xml[^?]*\?>/, '').replace(/<!--[\s\S]*?-->/g, '');
  const stack: XmlElement[] = [];
  let root: XmlElement | null = null;
  const tokens = body.match(/<[^>]*>|[^<]+/g) ?? [];
  for (const tok of tokens) {
    if (!tok.startsWith('<')) {
      const cur = stack[stack.length - 1];
      if (!cur) {
        if (tok.trim() !== '') throw new Error(`text outside the root: ${tok.slice(0, 40)}`);
        continue;
      }
      cur.text += checkText(tok, `<${cur.name}>`);
      continue;
    }
    if (tok.startsWith('</')) {
      const name = tok.slice(2, -1).trim();
      const open = stack.pop();
      if (!open || open.name !== name) throw new Error(`</${name}> closes <${open?.name ?? 'nothing'}>`);
      continue;
    }
    const selfClosing = tok.endsWith('/>');
    let inner = tok.slice(1, selfClosing ? -2 : -1);
    const nm = NAME.exec(inner);
    if (!nm) throw new Error(`bad tag ${tok.slice(0, 40)}`);
    inner = inner.slice(nm[0].length);
    const attrs: Record<string, string> = {};
    for (;;) {
      if (inner.trim() === '') break;
      const a = /^\s+([A-Za-z_:][\w:.-]*)\s*=\s*("([^"]*)"|'([^']*)')/.exec(inner);
      if (!a) throw new Error(`bad attributes in ${tok.slice(0, 60)}`);
      const key = a[1]!;
      if (key in attrs) throw new Error(`attribute ${key} twice in ${tok.slice(0, 60)}`);
      attrs[key] = checkText(a[3] ?? a[4] ?? '', `attribute ${key}`);
      inner = inner.slice(a[0].length);
    }
    const parent = stack[stack.length - 1] ?? null;
    const el: XmlElement = { name: nm[0], attrs, children: [], text: '', parent };
    if (parent) parent.children.push(el);
    else if (root) throw new Error('two root elements');
    else root = el;
    if (!selfClosing) stack.push(el);
  }
  if (stack.length) throw new Error(`<${stack[stack.length - 1]!.name}> is never closed`);
  if (!root) throw new Error('no root element');
  return root;
}

/** Every element under `el` (itself included) that `pred` accepts, in document order. */
export function findAll(el: XmlElement, pred: (e: XmlElement) => boolean): XmlElement[] {
  const out: XmlElement[] = [];
  const walk = (e: XmlElement): void => {
    if (pred(e)) out.push(e);
    e.children.forEach(walk);
  };
  walk(el);
  return out;
}
