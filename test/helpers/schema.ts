/** Validates real --json outputs against the generated JSON Schema (dist/schema/mfd-json.schema.json) with ajv. */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv } from 'ajv';

const file = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'dist', 'schema', 'mfd-json.schema.json');
const ajv = new Ajv({ allErrors: true, strict: false });
ajv.addSchema(JSON.parse(fs.readFileSync(file, 'utf8')) as object, 'mfd');

export type OutputKind =
  | 'SendJson'
  | 'RecvJson'
  | 'FailureJson'
  | 'QemuSendJson'
  | 'QemuRecvJson'
  | 'InspectJson'
  | 'AccelJson'
  | 'GenImageJson'
  | 'BenchJsonLine';

/** The schema's complaints about `value` as a `kind` output, one per line ('' when it is valid). */
export function schemaErrors(kind: OutputKind, value: unknown): string {
  const validate = ajv.getSchema(`mfd#/definitions/${kind}`);
  if (!validate) throw new Error(`no ${kind} in ${file}`);
  if (validate(value)) return '';
  return (validate.errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message ?? ''} ${JSON.stringify(e.params)}`).join('\n');
}
