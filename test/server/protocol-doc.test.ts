/**
 * server/PROTOCOL.md is complete and true: its parameter table lists exactly the parameters the server
 * accepts (each documented example is accepted in `start` and in `update`, an undocumented field is refused),
 * its `start` fields, the fields of `started` and `frame` messages, the error codes and close codes are the
 * server's own. Runs against the server on the embedded pack (the examples name its experts and adapters).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { startServer } from '../../server/app.ts';
import { Engine } from '../../pipelines/engine.ts';
import { EMBEDDED_PACK_DIR } from '../../models/pack.ts';
import { paramsSchema } from '../../pipelines/params.ts';
import { ERROR_CODES } from '../../models/errors.ts';
import { CLOSE, clientMessageSchema } from '../../server/streams/protocol.ts';
import { StreamClient, shapeFrame } from '../helpers/stream-client.ts';

const doc = await readFile(fileURLToPath(new URL('../../server/PROTOCOL.md', import.meta.url)), 'utf8');
const server = await startServer({ port: 0 }, { engine: await Engine.load(EMBEDDED_PACK_DIR) });
after(() => server.close());

/** The rows of the first table after `marker`, as cells. */
function tableAfter(marker: string): string[][] {
  const start = doc.indexOf(marker);
  assert.ok(start >= 0, `PROTOCOL.md has "${marker}"`);
  const lines = doc.slice(start).split('\n');
  const first = lines.findIndex((l) => l.startsWith('|'));
  const rows: string[][] = [];
  for (const line of lines.slice(first + 2)) {
    if (!line.startsWith('|')) break;
    rows.push(line.replace(/\\\|/g, '\u0000').split('|').slice(1, -1).map((c) => c.trim().replace(/\u0000/g, '|')));
  }
  return rows;
}

const unquote = (cell: string) => cell.replace(/^`|`$/g, '');
/** Names in backticks in a cell (field names only). */
const namesIn = (cell: string) => [...cell.matchAll(/`([a-z_]+)`/g)].map((m) => m[1]!);

const parameters = tableAfter('## Parameters').map((row) => ({ name: unquote(row[0]!), example: JSON.parse(unquote(row[3]!)) as unknown }));

test('the parameter table lists exactly the schema\'s parameters', () => {
  assert.deepEqual(parameters.map((p) => p.name).sort(), Object.keys(paramsSchema.shape).sort());
});

test('every documented parameter is accepted by the server with its example, in start and in update', async () => {
  for (const { name, example } of parameters) {
    const client = await StreamClient.connect(server.url, { params: { [name]: example } });
    assert.deepEqual((client.started!['params'] as Record<string, unknown>)[name], example, `start: ${name}`);
    if (name !== 'frame_buffer_size') {
      client.send({ type: 'update', params: { [name]: example } });
      await client.until(() => client.messages.some((m) => m['type'] === 'updated') || client.errors.length > 0);
      assert.deepEqual(client.errors, [], `update: ${name}`);
    }
    await client.close();
  }
});

test('an undocumented parameter or start field is refused, naming it', async () => {
  await assert.rejects(StreamClient.connect(server.url, { params: { not_documented: 1 } }), /unknown field\(s\): not_documented/);
  await assert.rejects(StreamClient.connect(server.url, { params: {}, not_documented: 1 }), /unknown field\(s\): not_documented/);
});

test('the start fields are the documented ones, and each is accepted', async () => {
  const documented = tableAfter('Fields of `start`').map((row) => unquote(row[0]!));
  const start = clientMessageSchema.options.find((o) => o.shape.type.value === 'start')!;
  assert.deepEqual(documented.sort(), Object.keys(start.shape).filter((k) => k !== 'type').sort());
  const client = await StreamClient.connect(server.url, { params: {}, output: { format: 'webp', quality: 70 }, window: 3, mode: 'img2img', name: 'doc-check' });
  assert.deepEqual([client.started!['window'], client.started!['name']], [3, 'doc-check']);
  await client.close();
});

test('started and frame messages carry exactly the documented fields; errors have input_id', async () => {
  const messages = tableAfter('## Server -> client');
  const fieldsOf = (type: string) => namesIn(messages.find((row) => row[0] === `\`${type}\``)![1]!).filter((n) => n !== 'type');
  const client = await StreamClient.connect(server.url, { params: { steps: 1 } });
  const frame = await client.roundTrip(await shapeFrame());
  const keys = (m: object) => Object.keys(m).filter((k) => k !== 'type').sort();
  assert.deepEqual(keys(client.started!), [...new Set(fieldsOf('started'))].sort());
  assert.deepEqual(keys(frame.meta), [...new Set(fieldsOf('frame'))].sort());
  client.sendFrame(Buffer.from('not an image'));
  client.send({ type: 'update', params: { steps: 99 } });
  await client.until(() => client.errors.length === 2);
  const [bad, invalid] = client.errors;
  assert.deepEqual([bad!['code'], bad!['input_id']], ['bad_image', 2], 'a frame error names the frame');
  assert.deepEqual([invalid!['code'], invalid!['field'], invalid!['input_id']], ['bad_request', 'steps', null], 'a message error names the field');
  for (const e of client.errors) assert.deepEqual(keys(e).filter((k) => !fieldsOf('error').includes(k)), []);
  await client.close();
});

test('the error and close code tables are the server\'s', () => {
  const errors = Object.fromEntries(tableAfter('## Error codes').map((row) => [unquote(row[0]!), Number(row[1])]));
  assert.deepEqual(errors, { ...ERROR_CODES });
  const closes = tableAfter('## Close codes').map((row) => Number(row[0]));
  for (const code of Object.values(CLOSE)) assert.ok(closes.includes(code), `close code ${code} is documented`);
});
