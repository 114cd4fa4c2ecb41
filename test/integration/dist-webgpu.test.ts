// A mixed fleet on kang_example: one device-engine worker on the webgpu backend (Dawn; on a machine
// without a GPU, Mesa's llvmpipe: see test/helpers/webgpu.ts) taking groups of microbatches, beside
// one JS-engine worker on wasm taking one at a time. The same answer as the single-process trainer
// to 1e-4 relative (different engines sum in a different order and precision: docs/model.md), the
// same validation ELBO as an all-wasm run to 0.5%, and a killed webgpu worker's groups redone.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { initParams } from '@atlasvae/shared/model';
import { loadCheckpoint } from '@atlasvae/shared';
import { webgpuEnv, webgpuTestBed } from '../helpers/webgpu.js';
import {
  run,
  runOk,
  maxRelDiff,
  listeningPort,
  readAudit,
  waitForStep,
  kill9,
  type Proc,
} from './dist-harness.js';
import {
  KANG_PLAN,
  skipKang,
  prepareKangWithReference,
  cleanUp,
  type TrainerReference,
} from './kang-reference.js';

const skip = skipKang || webgpuTestBed().skip;
if (skip) console.log(`  skipped: ${skip}`);
const K = 5;
// 1,400 training cells, global batch 512 in microbatches of ≤ 128: steps of 4, 4 and 3 microbatches;
// groups of 3 are blocks 0–2 and 3 of each step
const PLAN = KANG_PLAN;
const GROUP = '3';
const TOKEN = 'webgpu-test-token';

let dir = '';
let data = '';
let trainCells: Uint32Array;
let ref: TrainerReference;

before(async () => {
  if (skip) return;
  ({ dir, data, trainCells, ref } = await prepareKangWithReference('atlasvae-dist-webgpu-', K));
});

after(() => cleanUp(dir));

const env = { ATLASVAE_TOKEN: TOKEN };

function coordinator(extra: string[]): Proc {
  return run(
    [
      'coordinator',
      '--data',
      data,
      '--host',
      '127.0.0.1',
      '--port',
      '0',
      '--min-workers',
      '2',
      ...PLAN,
      ...extra,
      '--log-level',
      'info',
    ],
    env,
  );
}

function webgpuWorker(port: number): Proc {
  return run(
    [
      'worker',
      '--connect',
      `ws://127.0.0.1:${port}`,
      '--engine',
      'device',
      '--backend',
      'webgpu',
      '--group',
      GROUP,
      '--name',
      'gpu',
      '--give-up-after',
      '60',
      '--log-level',
      'info',
    ],
    { ...env, ...webgpuEnv },
  );
}

function wasmWorker(port: number): Proc {
  return run(
    [
      'worker',
      '--connect',
      `ws://127.0.0.1:${port}`,
      '--backend',
      'wasm',
      '--name',
      'cpu',
      '--give-up-after',
      '60',
      '--log-level',
      'info',
    ],
    env,
  );
}

/** The coordinator's worker id of the worker named `name` (from its "joined" log line). */
function workerId(out: string, name: string): number {
  const m = new RegExp(`worker (\\d+) joined \\(${name}:\\d+, device engine on webgpu`).exec(out);
  assert.ok(m, `the ${name} worker joined as a device engine on webgpu:\n${out.slice(-3000)}`);
  return Number(m[1]);
}

async function mixedRun(
  name: string,
  extra: string[],
  during?: (audit: string, coord: Proc, workers: Proc[]) => Promise<void>,
): Promise<{ ckpt: string; audit: string; out: string }> {
  const ckpt = path.join(dir, `${name}.ckpt`);
  const audit = path.join(dir, `${name}.audit`);
  const coord = coordinator(['--checkpoint', ckpt, '--audit', audit, ...extra]);
  const port = await listeningPort(coord);
  const workers = [webgpuWorker(port), wasmWorker(port)];
  if (during) await during(audit, coord, workers);
  const { code } = await coord.exited;
  assert.equal(
    code,
    0,
    `coordinator:\n${coord.output().slice(-3000)}\n--- webgpu worker:\n${workers[0]!.output().slice(-3000)}`,
  );
  return { ckpt, audit, out: coord.output() };
}

test(
  `${K} steps with a webgpu device worker (groups of ${GROUP}) and a wasm worker agree with the single-process trainer to 1e-4`,
  { skip },
  async () => {
    const { ckpt, audit, out } = await mixedRun('mixed', ['--max-steps', String(K)]);
    const c = loadCheckpoint(ckpt);
    assert.deepEqual(c.position, { epoch: 1, stepInEpoch: 2, globalStep: K });
    const d = { params: maxRelDiff(c.params, ref.params), buffers: maxRelDiff(c.buffers, ref.buffers) };
    console.log(`  webgpu + wasm workers vs the trainer: max relative difference ${JSON.stringify(d)}`);
    for (const [k, v] of Object.entries(d)) assert.ok(v <= 1e-4, `${k}: max relative difference ${v}`);
    assert.ok(maxRelDiff(c.params, initParams(c.modelConfig, 7)) > 1e-3, 'training moved the parameters');
    // the webgpu worker computed groups: consecutive microbatches of one step in one request
    const gpu = workerId(out, 'gpu');
    const mine = readAudit(audit).filter((a) => a.worker === gpu);
    assert.ok(mine.length > 0, 'the webgpu worker computed microbatches');
    const perStep = new Map<number, number[]>();
    for (const a of mine) perStep.set(a.step, [...(perStep.get(a.step) ?? []), a.microbatch]);
    assert.ok(
      [...perStep.values()].some((mbs) => mbs.length > 1),
      `some step had several microbatches from the webgpu worker: ${JSON.stringify([...perStep])}`,
    );
  },
);

const EPOCHS = 8;
test(
  `a ${EPOCHS}-epoch run with a webgpu device worker ends within 0.5% of the all-wasm run's validation ELBO`,
  { skip },
  async () => {
    const wasmCkpt = path.join(dir, 'all-wasm.ckpt');
    await runOk([
      'train',
      '--data',
      data,
      '--local-workers',
      '2',
      '--backend',
      'wasm',
      '--checkpoint',
      wasmCkpt,
      ...PLAN,
      '--epochs',
      String(EPOCHS),
      '--log-level',
      'warn',
    ]);
    const { ckpt } = await mixedRun('full', ['--epochs', String(EPOCHS)]);
    const last = (p: string): number => {
      const h = loadCheckpoint(p).history as { epoch: number; validationElbo?: number }[];
      assert.equal(h.length, EPOCHS);
      return h[EPOCHS - 1]!.validationElbo!;
    };
    const [mixed, wasm] = [last(ckpt), last(wasmCkpt)];
    console.log(`  validation ELBO after ${EPOCHS} epochs: webgpu + wasm ${mixed}, all wasm ${wasm}`);
    assert.ok(
      Number.isFinite(mixed) && Math.abs(mixed - wasm) <= 0.005 * Math.abs(wasm),
      `${mixed} vs ${wasm}`,
    );
  },
);

test(
  'the webgpu worker killed with SIGKILL mid-epoch: training finishes, every training cell used once per epoch',
  { skip },
  async () => {
    const epochs = 2;
    const { audit, out } = await mixedRun(
      'kill',
      ['--epochs', String(epochs)],
      async (auditFile, coord, workers) => {
        await waitForStep(auditFile, 1, coord, workers, 300_000);
        await kill9(workers[0]!);
      },
    );
    assert.match(out, /gpu:\d+, webgpu\) left/);
    const lines = readAudit(audit);
    for (let epoch = 0; epoch < epochs; epoch++) {
      const count = new Map<number, number>();
      for (const a of lines.filter((l) => l.epoch === epoch))
        for (const c of a.cells) count.set(c, (count.get(c) ?? 0) + 1);
      assert.equal(count.size, trainCells.length, `epoch ${epoch}: distinct cells`);
      for (const c of trainCells)
        assert.equal(count.get(c), 1, `epoch ${epoch}: cell ${c} used ${count.get(c) ?? 0} times`);
    }
  },
);
