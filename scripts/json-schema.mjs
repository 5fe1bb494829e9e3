#!/usr/bin/env node
/**
 * Writes dist/schema/mfd-json.schema.json: the JSON Schema of every --json
 * output, generated from the types in src/cli/json.ts (ts-json-schema-generator).
 * Run by `npm run build:schema` (part of prepare and pretest).
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createGenerator } from 'ts-json-schema-generator';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const OUTPUTS = [
  'SendJson',
  'RecvJson',
  'FailureJson',
  'QemuSendJson',
  'QemuRecvJson',
  'InspectJson',
  'AccelJson',
  'GenImageJson',
  'BenchJsonLine',
];

const generator = createGenerator({
  path: path.join(root, 'src', 'cli', 'json.ts'),
  tsconfig: path.join(root, 'tsconfig.json'),
  type: '*',
  expose: 'export',
  skipTypeCheck: true,
  additionalProperties: false,
});
const schema = generator.createSchema('*');
// The builders beside the types are exported too; only types describe output.
for (const name of Object.keys(schema.definitions ?? {})) if (/^[a-z]/.test(name)) delete schema.definitions[name];
const missing = OUTPUTS.filter((t) => !schema.definitions?.[t]);
if (missing.length > 0) throw new Error(`json-schema: no definition for ${missing.join(', ')} in src/cli/json.ts`);
schema.$id = 'mfd-json.schema.json';
schema.description = 'The --json outputs of mfd: one definition per command (see src/cli/json.ts)';
const out = path.join(root, 'dist', 'schema', 'mfd-json.schema.json');
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.writeFileSync(out, JSON.stringify(schema, null, 2) + '\n');
