import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ServiceError } from '../../../models/errors.ts';
import { parseRouter, type RouterWeights } from '../../../models/aptp/router-file.ts';
import { chooseExpert, parseBudget, routeExpert } from '../../../models/aptp/routing.ts';

const experts = [
  { name: 'full', relativeMacs: 1 },
  { name: 'e70', relativeMacs: 0.7 },
  { name: 'e55', relativeMacs: 0.55 },
  { name: 'e40', relativeMacs: 0.4 },
];
const names = experts.map((e) => e.name);

/** A 2-dim linear router: output k wins where its weight row points. */
const linear = parseRouter(
  {
    type: 'linear',
    input_dim: 2,
    weights: [
      [1, 0],
      [0, 1],
      [-1, 0],
      [0, -1],
    ],
    bias: [0, 0, 0, 0.01],
    expert_for_code: ['full', 'e70', 'e55', 'e40'],
  },
  names,
);

test('linear router: argmax of W p + b, mapped through expert_for_code; ties go to the lowest output', () => {
  assert.equal(routeExpert(Float32Array.of(2, 1), linear), 0);
  assert.equal(routeExpert(Float32Array.of(1, 2), linear), 1);
  assert.equal(routeExpert(Float32Array.of(-2, 1), linear), 2);
  assert.equal(routeExpert(Float32Array.of(0, -2), linear), 3);
  assert.equal(routeExpert(Float32Array.of(0, 0), linear), 3); // bias breaks the tie
  const tie = parseRouter({ type: 'linear', input_dim: 1, weights: [[1], [1]], bias: [0, 0], expert_for_code: ['e55', 'e40'] }, names);
  assert.equal(routeExpert(Float32Array.of(3), tie), 2);
});

test('routing is deterministic: the same embedding always gives the same expert', () => {
  const d = 16;
  let s = 12345;
  const next = () => ((s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * 2 - 1;
  const router = parseRouter({ type: 'linear', input_dim: d, weights: Array.from({ length: 4 }, () => Array.from({ length: d }, next)), bias: [0, 0, 0, 0] }, names);
  const inputs = Array.from({ length: 50 }, () => Float32Array.from({ length: d }, next));
  const first = inputs.map((p) => routeExpert(p, router));
  for (let round = 0; round < 5; round++) assert.deepEqual(inputs.map((p) => routeExpert(Float32Array.from(p), router)), first);
  assert.ok(new Set(first).size > 1, 'random inputs should reach more than one expert');
});

test('codes router (APTP): the nearest architecture code by cosine similarity', () => {
  const router: RouterWeights = parseRouter(
    {
      type: 'codes',
      input_dim: 2,
      weights: [
        [1, 0],
        [0, 1],
        [1, 1],
      ],
      bias: [0, 0, 0],
      codes: [
        [1, 0, 0.5],
        [0, 1, 0.5],
      ],
      expert_for_code: ['e40', 'full'],
    },
    names,
  );
  assert.equal(routeExpert(Float32Array.of(1, 0), router), 3);
  assert.equal(routeExpert(Float32Array.of(0, 1), router), 0);
  assert.throws(() => routeExpert(Float32Array.of(1, 0, 0), router), /expects a pooled text embedding of 2 values/);
});

test('an override wins over router and budget; an unknown name is not_found naming it', () => {
  assert.equal(chooseExpert(experts, 0, 0.3, 'e55').name, 'e55');
  assert.equal(chooseExpert(experts, 3, 'auto', 'full').name, 'full');
  assert.throws(
    () => chooseExpert(experts, 0, 'auto', 'e99'),
    (e: ServiceError) => e.code === 'not_found' && e.status === 404 && /unknown expert "e99"/.test(e.message) && e.field === 'expert',
  );
});

test("'auto' follows the router; without a router it takes the largest expert", () => {
  for (let k = 0; k < experts.length; k++) assert.equal(chooseExpert(experts, k, 'auto'), experts[k]);
  assert.equal(chooseExpert(experts, undefined, 'auto').name, 'full');
});

test('a budget buys the largest expert within it (else the smallest), whatever the router says', () => {
  assert.equal(chooseExpert(experts, 3, 0.6).name, 'e55');
  assert.equal(chooseExpert(experts, 0, 0.6).name, 'e55');
  assert.equal(chooseExpert(experts, 1, 0.7).name, 'e70');
  assert.equal(chooseExpert(experts, 0, 0.2).name, 'e40'); // nothing within -> smallest
  assert.equal(chooseExpert(experts, 2, 1).name, 'full');
  for (const budget of [0.1, 0.4, 0.45, 0.55, 0.6, 0.69, 0.7, 0.99, 1]) {
    for (let k = 0; k < experts.length; k++) {
      const chosen = chooseExpert(experts, k, budget);
      if (budget >= 0.4) assert.ok(chosen.relativeMacs <= budget, `budget ${budget}, routed ${k}: got ${chosen.name}`);
      assert.ok(experts.every((e) => e.relativeMacs > budget || e.relativeMacs <= chosen.relativeMacs), `budget ${budget}: a larger expert fits`);
    }
  }
});

test('a pack with experts but no router picks the largest expert within the budget', () => {
  assert.equal(chooseExpert(experts, undefined, 0.6).name, 'e55');
  assert.equal(chooseExpert(experts, undefined, 0.75).name, 'e70');
  assert.equal(chooseExpert(experts, undefined, 1).name, 'full');
  assert.equal(chooseExpert(experts, undefined, 0.05).name, 'e40');
});

test('budgets outside (0, 1] are bad requests naming the field', () => {
  for (const bad of [0, -0.5, 1.5, Number.NaN, '0.5', null]) {
    assert.throws(() => parseBudget(bad), (e: ServiceError) => e.code === 'bad_request' && e.field === 'budget');
  }
  assert.equal(parseBudget(undefined), 'auto');
  assert.equal(parseBudget(0.6), 0.6);
  assert.throws(() => chooseExpert(experts, 0, 2), (e: ServiceError) => e.code === 'bad_request');
});

test('malformed routers are model_invalid errors naming the file and the field', () => {
  const good = { type: 'linear', input_dim: 2, weights: [[1, 0], [0, 1]], bias: [0, 0], expert_for_code: ['full', 'e40'] };
  const cases: [unknown, RegExp][] = [
    [[1, 2], /router\.json: must be a JSON object/],
    [{ ...good, type: 'mlp' }, /type must be one of linear, codes/],
    [{ ...good, input_dim: 0 }, /input_dim must be a positive integer/],
    [{ ...good, weights: [[1, 0, 0], [0, 1, 0]] }, /weights\[0\] has 3 values, expected 2/],
    [{ ...good, weights: [] }, /weights must be a non-empty array/],
    [{ ...good, bias: [0] }, /bias has 1 values, expected 2/],
    [{ ...good, bias: [0, 'x'] }, /bias\[1\] is "x", not a finite number/],
    [{ ...good, expert_for_code: ['full'] }, /expert_for_code must list one expert for each of the 2 router outputs/],
    [{ ...good, expert_for_code: ['full', 'e99'] }, /expert_for_code\[1\] is "e99", not an expert of the manifest/],
    [{ ...good, codes: [[1, 0]] }, /codes is only for routers of type codes/],
    [{ ...good, type: 'codes' }, /codes must be a non-empty array/],
    [{ ...good, extra: 1 }, /extra is not a router field/],
  ];
  for (const [value, pattern] of cases) {
    assert.throws(() => parseRouter(value, names, 'router.json'), (e: ServiceError) => e.code === 'model_invalid' && pattern.test(e.message), String(pattern));
  }
});
