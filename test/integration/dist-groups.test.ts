// Groups of microbatches per request with real worker processes on kang_example: JS-engine workers
// announcing --group 3 get fixed blocks of each step (0–2, 3) and return one summed gradient per
// block. One or two such workers give bit-identical parameters (the blocks, not the workers, fix
// what is summed), and agree with the single-process trainer, which sums one microbatch at a time
// in float64, to 1e-4 relative (docs/model.md, "the same answer").
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { loadCheckpoint, type Checkpoint } from '@atlasvae/shared';
import { run, maxRelDiff, listeningPort, readAudit } from './dist-harness.js';
import {
  KANG_PLAN,
  skipKang,
  prepareKangWithReference,
  cleanUp,
  type TrainerReference,
} from './kang-reference.js';

const skip = skipKang;
const K = 5;
const PLAN = [...KANG_PLAN, '--max-steps', String(K)];
const env = { ATLASVAE_TOKEN: 'groups-test-token' };

let dir = '';
let data = '';
let ref: TrainerReference;

before(async () => {
  if (skip) return;
  ({ dir, data, ref } = await prepareKangWithReference('atlasvae-dist-groups-', K));
});

after(() => cleanUp(dir));

async function groupRun(name: string, workers: number): Promise<{ c: Checkpoint; audit: string }> {
  const ckpt = path.join(dir, `${name}.ckpt`);
  const audit = path.join(dir, `${name}.audit`);
  const coord = run(
    [
      'coordinator',
      '--data',
      data,
      '--host',
      '127.0.0.1',
      '--port',
      '0',
      '--min-workers',
      String(workers),
      '--checkpoint',
      ckpt,
      '--audit',
      audit,
      ...PLAN,
      '--log-level',
      'info',
    ],
    env,
  );
  const port = await listeningPort(coord);
  const ws = Array.from({ length: workers }, (_, i) =>
    run(
      [
        'worker',
        '--connect',
        `ws://127.0.0.1:${port}`,
        '--engine',
        'js',
        '--backend',
        'wasm',
        '--group',
        '3',
        '--name',
        `g${i}`,
        '--give-up-after',
        '60',
      ],
      env,
    ),
  );
  const { code } = await coord.exited;
  assert.equal(code, 0, coord.output().slice(-3000));
  for (const w of ws) assert.equal((await w.exited).code, 0, w.output().slice(-2000));
  assert.match(coord.output(), /joined \(g0:\d+, js engine on wasm \([^)]*\), groups of 3/);
  return { c: loadCheckpoint(ckpt), audit };
}

test(
  `${K} steps in groups of 3 on one or two workers: bit-identical, and the trainer's to 1e-4`,
  { skip },
  async () => {
    const one = await groupRun('one', 1);
    const two = await groupRun('two', 2);
    assert.deepEqual(one.c.position, { epoch: 1, stepInEpoch: 2, globalStep: K });
    assert.deepEqual(
      two.c.params,
      one.c.params,
      'parameters do not depend on which worker computed which group',
    );
    assert.deepEqual(two.c.buffers, one.c.buffers);
    assert.deepEqual(two.c.adam, one.c.adam);
    const d = {
      params: maxRelDiff(one.c.params, ref.params),
      buffers: maxRelDiff(one.c.buffers, ref.buffers),
    };
    console.log(`  groups of 3 vs the single-process trainer: max relative difference ${JSON.stringify(d)}`);
    for (const [k, v] of Object.entries(d)) assert.ok(v <= 1e-4, `${k}: max relative difference ${v}`);
    // the blocks each worker computed: 0–2 and 3 of every step, whole
    const byStep = new Map<string, number[]>();
    for (const a of readAudit(two.audit))
      byStep.set(`${a.step}/${a.worker}`, [...(byStep.get(`${a.step}/${a.worker}`) ?? []), a.microbatch]);
    for (const [k, mbs] of byStep) {
      const sorted = [...mbs].sort((x, y) => x - y);
      const blocks = new Set(sorted.map((m) => Math.floor(m / 3)));
      for (const b of blocks) {
        const want = [b * 3, b * 3 + 1, b * 3 + 2].filter(
          (m) => m < (Number(k.split('/')[0]) % 3 === 2 ? 3 : 4),
        );
        assert.deepEqual(
          sorted.filter((m) => Math.floor(m / 3) === b),
          want,
          `step/worker ${k}: whole block ${b}`,
        );
      }
    }
  },
);
