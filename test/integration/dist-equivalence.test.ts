// The core correctness claim: K steps on 1, 2 or 3 worker processes give bit for bit the parameters,
// BatchNorm statistics and Adam moments of the single-process trainer with the same plan, on
// kang_example prepared from ../shared/data.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { initParams } from '@atlasvae/shared/model';
import { loadCheckpoint } from '@atlasvae/shared';
import { runOk, maxRelDiff } from './dist-harness.js';
import {
  KANG_PLAN,
  skipKang,
  prepareKangWithReference,
  cleanUp,
  type TrainerReference,
} from './kang-reference.js';

const skip = skipKang;
const K = 5;
// 1,400 training cells, global batch 512 in microbatches of ≤ 128: steps of 4, 4 and 3 microbatches,
// so K = 5 crosses into epoch 1 (new plan, KL weight 0.5 after a 2-epoch warm-up)
const FLAGS = [...KANG_PLAN, '--max-steps', String(K)];

/** Index of the first element whose bits differ (−0 and 0 differ, as do NaNs of other payloads), or −1. */
function firstBitDifference(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length, 'lengths');
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return i;
  return -1;
}

let dir = '';
let data = '';
let ref: TrainerReference;

before(async () => {
  if (skip) return;
  ({ dir, data, ref } = await prepareKangWithReference('atlasvae-dist-equiv-', K));
  assert.equal(ref.globalStep, K);
});

after(() => cleanUp(dir));

// Local workers read each new parameter vector from the coordinator's shared-memory files by
// default; with --shared-memory never they get it over the socket, as one message after Adam
// (--stream-params auto) or range by range as Adam computes it (always: what workers on other
// hosts get). Every transport must give the same parameters.
const RUNS = [
  [1, 'auto', 'auto'],
  [2, 'auto', 'auto'],
  [3, 'auto', 'auto'],
  [2, 'auto', 'never'],
  [2, 'always', 'never'],
] as const;
for (const [workers, stream, shm] of RUNS) {
  const how =
    shm === 'auto'
      ? ', parameters through shared memory'
      : stream === 'auto'
        ? ', parameters over the socket'
        : ', parameters streamed out of Adam over the socket';
  test(
    `${K} steps on ${workers} worker process(es)${how} equal the single-process trainer`,
    { skip },
    async () => {
      const ckpt = path.join(dir, `w${workers}-${stream}-${shm}.ckpt`);
      await runOk([
        'train',
        '--data',
        data,
        '--local-workers',
        String(workers),
        '--min-workers',
        String(workers),
        '--backend',
        'wasm',
        '--checkpoint',
        ckpt,
        '--stream-params',
        stream,
        '--shared-memory',
        shm,
        ...FLAGS,
        '--log-level',
        'warn',
      ]);
      const c = loadCheckpoint(ckpt);
      assert.deepEqual(c.position, { epoch: 1, stepInEpoch: 2, globalStep: K });
      const d = {
        params: maxRelDiff(c.params, ref.params),
        buffers: maxRelDiff(c.buffers, ref.buffers),
        adamM: maxRelDiff(c.adam.m, ref.m, 1e-6),
        adamV: maxRelDiff(c.adam.v, ref.v, 1e-9),
      };
      console.log(`  ${workers} worker(s): max relative difference ${JSON.stringify(d)}`);
      const pairs = {
        params: [c.params, ref.params],
        buffers: [c.buffers, ref.buffers],
        adamM: [c.adam.m, ref.m],
        adamV: [c.adam.v, ref.v],
      } as const;
      for (const [k, [got, want]] of Object.entries(pairs)) {
        const i = firstBitDifference(got, want);
        assert.equal(
          i,
          -1,
          `${k}: element ${i} is ${got[i]} against the trainer's ${want[i]} (max relative difference ${d[k as keyof typeof d]})`,
        );
      }
      // the held-out ELBO the coordinator evaluated after epoch 0 is the trainer's
      const h = c.history[0] as { epoch: number; validationElbo?: number };
      assert.equal(h.epoch, 0);
      assert.equal(h.validationElbo, ref.validationElbo, 'validation ELBO');
      // and training moved the parameters: a run that did nothing would not pass either
      assert.ok(maxRelDiff(c.params, initParams(c.modelConfig, 7)) > 1e-3);
    },
  );
}
