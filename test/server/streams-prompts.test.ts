/**
 * On the embedded pack: two concurrent streams with different prompts each follow their own prompt, and a
 * prompt change shows up within `steps` frames (checked with the pack's evaluator).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import { startServer } from '../../server/app.ts';
import { Engine } from '../../pipelines/engine.ts';
import { EMBEDDED_PACK_DIR } from '../../models/pack.ts';
import { loadSceneSpec, scoreImage, type SceneAttributes } from '../../pipelines/evaluation/evaluator.ts';
import { StreamClient } from '../helpers/stream-client.ts';
import { drawScenePng } from '../helpers/scenes.ts';

const server = await startServer({ port: 0 }, { engine: await Engine.load(EMBEDDED_PACK_DIR) });
after(() => server.close());
const spec = await loadSceneSpec(EMBEDDED_PACK_DIR);

const scenes: Record<'a' | 'b', { prompt: string; attrs: SceneAttributes }> = {
  a: { prompt: 'a large red circle in the centre on a blue background', attrs: { background: { kind: 'plain', color: 'blue' }, objects: [{ shape: 'circle', color: 'red', size: 'large', position: 'centre' }] } },
  b: { prompt: 'a large yellow square in the centre on a black background', attrs: { background: { kind: 'plain', color: 'black' }, objects: [{ shape: 'square', color: 'yellow', size: 'large', position: 'centre' }] } },
};

async function score(bytes: Buffer, attrs: SceneAttributes) {
  const { data, info } = await sharp(bytes).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return scoreImage(spec, { data, width: info.width, height: info.height }, attrs);
}

// The input: a scene neither prompt describes (a small white triangle on green).
const input = await drawScenePng(spec, { background: { kind: 'plain', color: 'green' }, objects: [{ shape: 'triangle', color: 'white', size: 'small', position: 'left' }] });
const start = (prompt: string) => ({ params: { prompt, steps: 2, strength: 0.9, guidance: 'full', guidance_scale: 2, similarity_threshold: 1 } });

test('two concurrent streams each follow their own prompt', async () => {
  const [a, b] = await Promise.all([StreamClient.connect(server.url, start(scenes.a.prompt)), StreamClient.connect(server.url, start(scenes.b.prompt))]);
  for (let i = 0; i < 4; i++) await Promise.all([a.roundTrip(input), b.roundTrip(input)]);
  const sa = await score(a.frames.at(-1)!.bytes, scenes.a.attrs);
  const sb = await score(b.frames.at(-1)!.bytes, scenes.b.attrs);
  assert.ok(sa.background && sa.objects[0]!.color, `stream a: ${JSON.stringify(sa)}`);
  assert.ok(sb.background && sb.objects[0]!.color, `stream b: ${JSON.stringify(sb)}`);
  await Promise.all([a.close(), b.close()]);
});

test('a prompt change takes effect within steps frames', async () => {
  const client = await StreamClient.connect(server.url, start(scenes.a.prompt));
  for (let i = 0; i < 3; i++) await client.roundTrip(input);
  client.send({ type: 'update', params: { prompt: scenes.b.prompt } });
  await client.until(() => client.messages.some((m) => m['type'] === 'updated'));
  const outs = [];
  for (let i = 0; i < 2; i++) outs.push(await client.roundTrip(input));
  const s = await score(outs[1]!.bytes, scenes.b.attrs);
  assert.ok(s.background && s.objects[0]!.color, JSON.stringify(s));
  await client.close();
});
