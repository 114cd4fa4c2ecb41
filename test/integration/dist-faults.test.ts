// Fault tolerance with real processes on loopback: a worker killed with SIGKILL mid-epoch, the
// coordinator killed with SIGKILL and resumed from its checkpoint, and garbage thrown at a live
// coordinator. Each run must end with exactly the parameters of an undisturbed run.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import { WebSocket } from 'ws';
import { loadCheckpoint, type Checkpoint, Rng } from '@atlasvae/shared';
import { encodeFrame, PROTOCOL_HEADER, bearer } from '@atlasvae/shared/protocol';
import { openDataset } from '@atlasvae/coordinator/data';
import { tempDir } from '../helpers/paths.js';
import {
  run,
  runOk,
  listeningPort,
  simulatedDataset,
  readAudit,
  waitForStep,
  kill9,
  file,
  killChildren,
  type Proc,
} from './dist-harness.js';

const TOKEN = 'test-token-1234';
const env = { ATLASVAE_TOKEN: TOKEN };
let dir = '';
let data = '';
let train: Uint32Array;
let reference: Checkpoint;

// 2,700 training cells, global batch 256 in 4 microbatches: 11 steps per epoch, 33 in all
const TRAIN_ARGS = [
  '--epochs',
  '3',
  '--global-batch',
  '256',
  '--microbatch',
  '64',
  '--n-hidden',
  '64',
  '--seed',
  '5',
  '--checkpoint-every',
  '4',
  '--log-level',
  'info',
];

function workerProc(port: number, name: string): Proc {
  return run(
    [
      'worker',
      '--connect',
      `ws://127.0.0.1:${port}`,
      '--backend',
      'wasm',
      '--name',
      name,
      '--give-up-after',
      '60',
      '--log-level',
      'info',
    ],
    env,
  );
}

function coordinatorProc(port: number, extra: string[]): Proc {
  return run(
    ['coordinator', '--data', data, '--host', '127.0.0.1', '--port', String(port), ...TRAIN_ARGS, ...extra],
    env,
  );
}

function assertSameTraining(c: Checkpoint, what: string): void {
  assert.deepEqual(c.position, reference.position, `${what}: plan position`);
  assert.deepEqual(c.params, reference.params, `${what}: parameters differ from the undisturbed run`);
  assert.deepEqual(c.buffers, reference.buffers, `${what}: BatchNorm statistics differ`);
  assert.deepEqual(c.adam, reference.adam, `${what}: optimizer state differs`);
}

before(async () => {
  dir = tempDir('atlasvae-dist-faults-');
  data = await simulatedDataset(file(dir, 'data'), 3000, 1000, 11);
  const ds = await openDataset(data);
  train = ds.train;
  await ds.close();
  const ckpt = file(dir, 'reference.ckpt');
  await runOk(
    [
      'train',
      '--data',
      data,
      '--local-workers',
      '2',
      '--backend',
      'wasm',
      '--checkpoint',
      ckpt,
      ...TRAIN_ARGS,
    ],
    env,
  );
  reference = loadCheckpoint(ckpt);
  assert.equal(reference.position.globalStep, 33);
});

after(async () => {
  await killChildren();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

test('a worker killed with SIGKILL mid-epoch: training finishes, each cell used once per epoch, same parameters', async () => {
  const audit = file(dir, 'kill-worker.audit');
  const ckpt = file(dir, 'kill-worker.ckpt');
  const coord = coordinatorProc(0, ['--checkpoint', ckpt, '--audit', audit, '--min-workers', '2']);
  const port = await listeningPort(coord);
  const victim = workerProc(port, 'victim');
  const survivor = workerProc(port, 'survivor');
  await waitForStep(audit, 4, coord, [victim, survivor]);
  await kill9(victim);
  const { code } = await coord.exited;
  assert.equal(code, 0, coord.output());
  assert.equal((await survivor.exited).code, 0, survivor.output());
  const out = coord.output();
  assert.match(out, /victim:\d+, wasm\) left/);
  assert.ok(out.indexOf('victim') < out.indexOf('training finished'));

  // every training cell exactly once per epoch, counted from the microbatches the coordinator accepted
  const lines = readAudit(audit);
  for (let epoch = 0; epoch < 3; epoch++) {
    const count = new Map<number, number>();
    for (const a of lines.filter((l) => l.epoch === epoch))
      for (const c of a.cells) count.set(c, (count.get(c) ?? 0) + 1);
    const expected = 11 * 256 > train.length ? train.length : 11 * 256;
    assert.equal(count.size, expected, `epoch ${epoch}: distinct cells`);
    for (const c of train)
      assert.equal(count.get(c), 1, `epoch ${epoch}: cell ${c} used ${count.get(c) ?? 0} times`);
  }
  const redone = (out.match(/microbatch handed out again/g) ?? []).length;
  console.log(`  microbatches redone after the kill: ${redone}`);
  assertSameTraining(loadCheckpoint(ckpt), 'after a worker was killed');
});

test('the coordinator killed with SIGKILL mid-epoch and restarted with --resume: workers reconnect, same parameters', async () => {
  const audit = file(dir, 'kill-coordinator.audit');
  const ckpt = file(dir, 'kill-coordinator.ckpt');
  const args = ['--checkpoint', ckpt, '--audit', audit, '--min-workers', '2'];
  const first = coordinatorProc(0, args);
  const port = await listeningPort(first);
  const w1 = workerProc(port, 'w1');
  const w2 = workerProc(port, 'w2');
  await waitForStep(audit, 14, first, [w1, w2]); // epoch 1, after the checkpoint of step 12
  const firstPid = first.child.pid!;
  const shm = fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir();
  const filesOf = (pid: number): string[] =>
    fs.readdirSync(shm).filter((n) => n.startsWith(`atlasvae-params-${pid}-`));
  assert.equal(
    filesOf(firstPid).length,
    1,
    'the coordinator serves its local workers parameters through shared memory',
  );
  await kill9(first);
  const saved = loadCheckpoint(ckpt);
  assert.ok(
    saved.position.globalStep >= 12 && saved.position.globalStep < 33,
    `checkpoint at step ${saved.position.globalStep}`,
  );
  assert.deepEqual(
    fs.readdirSync(dir).filter((f) => f.includes('kill-coordinator.ckpt') && f.endsWith('.tmp')),
    [],
    'no temporary files left',
  );

  const second = coordinatorProc(port, [...args, '--resume']);
  const { code } = await second.exited;
  assert.equal(code, 0, second.output());
  assert.match(second.output(), new RegExp(`resuming from .*${saved.position.globalStep} steps done`));
  assert.match(second.output(), /worker \d+ joined \(w1/);
  assert.match(second.output(), /worker \d+ joined \(w2/);
  assert.equal((await w1.exited).code, 0, w1.output());
  assert.equal((await w2.exited).code, 0, w2.output());
  assertSameTraining(loadCheckpoint(ckpt), 'after the coordinator was killed and resumed');
  assert.deepEqual(
    filesOf(firstPid),
    [],
    "the killed coordinator's shared-memory folder was removed by the next one",
  );
  assert.deepEqual(filesOf(second.child.pid!), [], 'and that one removed its own when it finished');
});

// Elastic: a worker that joins mid-epoch gets the current parameters at its welcome (a frame the
// coordinator encodes on demand, as no socket needed one while every worker read the shared-memory
// file) and then computes microbatches of later steps; over the socket and through shared memory.
for (const sharedMemory of ['auto', 'never'] as const) {
  test(`a worker joining mid-epoch (shared memory ${sharedMemory}) computes later steps; same parameters`, async () => {
    const audit = file(dir, `join-${sharedMemory}.audit`);
    const ckpt = file(dir, `join-${sharedMemory}.ckpt`);
    const coord = coordinatorProc(0, [
      '--checkpoint',
      ckpt,
      '--audit',
      audit,
      '--min-workers',
      '1',
      '--shared-memory',
      sharedMemory,
    ]);
    const port = await listeningPort(coord);
    const first = workerProc(port, 'first');
    await waitForStep(audit, 6, coord, [first]);
    const late = workerProc(port, 'late');
    const { code } = await coord.exited;
    assert.equal(code, 0, coord.output());
    assert.equal((await first.exited).code, 0, first.output());
    assert.equal((await late.exited).code, 0, late.output());
    const joined = /worker (\d+) joined \(late:\d+/.exec(coord.output());
    assert.ok(joined, coord.output());
    const lateId = Number(joined[1]);
    const lateSteps = readAudit(audit)
      .filter((a) => a.worker === lateId)
      .map((a) => a.step);
    assert.ok(lateSteps.length > 0, 'the late worker computed microbatches');
    // it joined once a result of step 6 was in: it can have taken the rest of step 6, nothing earlier
    assert.ok(
      Math.min(...lateSteps) >= 6,
      `the late worker computed step ${Math.min(...lateSteps)}, before it joined`,
    );
    if (sharedMemory === 'auto') assert.match(late.output(), /parameters through shared memory/);
    assertSameTraining(
      loadCheckpoint(ckpt),
      `after a worker joined mid-epoch (shared memory ${sharedMemory})`,
    );
  });
}

/** Open a raw connection; resolves with how it ended: HTTP status, or close code. */
function attack(
  port: number,
  o: { token?: string | null; protocol?: string; send?: (ws: WebSocket) => void },
): Promise<string> {
  return new Promise((resolve) => {
    const headers: Record<string, string> = {};
    if (o.token !== null) headers.authorization = bearer(o.token ?? TOKEN);
    if (o.protocol) headers[PROTOCOL_HEADER] = o.protocol;
    const ws = new WebSocket(`ws://127.0.0.1:${port}`, { headers });
    ws.on('unexpected-response', (_req, res) => {
      resolve(`http ${res.statusCode}`);
      ws.terminate();
    });
    ws.on('error', () => undefined);
    ws.on('open', () => o.send?.(ws));
    ws.on('close', (code) => resolve(`close ${code}`));
  });
}

const hello = (protocol = 1): Buffer =>
  encodeFrame({ type: 'hello', protocol, backend: 'evil', name: 'attacker', pid: 1 });

test('random bytes and malformed messages at a live coordinator change nothing', async () => {
  const ckpt = file(dir, 'garbage.ckpt');
  const audit = file(dir, 'garbage.audit');
  const coord = coordinatorProc(0, ['--checkpoint', ckpt, '--audit', audit, '--min-workers', '1']);
  const port = await listeningPort(coord);
  const honest = workerProc(port, 'honest');
  await waitForStep(audit, 1, coord, [honest]);

  const rng = new Rng(99);
  const random = (n: number): Buffer => {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = rng.int(256);
    return b;
  };
  // all at once, while the honest worker trains
  const attacks: Record<string, Promise<string>> = {
    noToken: attack(port, { token: null }),
    wrongToken: attack(port, { token: 'guess' }),
    wrongProtocolHeader: attack(port, { protocol: '99' }),
    wrongProtocolHello: attack(port, { send: (ws) => ws.send(hello(2)) }),
    textFrame: attack(port, { send: (ws) => ws.send('hello') }),
    resultBeforeHello: attack(port, {
      send: (ws) =>
        ws.send(
          encodeFrame(
            {
              type: 'result',
              version: 0,
              step: 0,
              microbatch: 0,
              nCells: 1,
              reconstructionSum: 0,
              klSum: 0,
              lossSum: 0,
              computeMs: 0,
              gradLength: 1,
              bnLength: 1,
            },
            new Float32Array(2),
          ),
        ),
    }),
    oversize: attack(port, {
      send: (ws) => {
        ws.send(hello());
        ws.send(Buffer.alloc(64 << 20));
      },
    }),
    badSizes: attack(port, {
      send: (ws) => {
        ws.send(hello());
        ws.send(
          encodeFrame(
            {
              type: 'result',
              version: 1,
              step: 1,
              microbatch: 0,
              nCells: 64,
              reconstructionSum: 0,
              klSum: 0,
              lossSum: 0,
              computeMs: 0,
              gradLength: 10,
              bnLength: 2,
            },
            new Float32Array(12),
          ),
        );
      },
    }),
    notMsgpack: attack(port, {
      send: (ws) => {
        ws.send(hello());
        ws.send(Buffer.from([8, 0, 0, 0, 0xc1, 0xc1, 0xc1, 0xc1, 0xc1, 0xc1, 0xc1, 0xc1]));
      },
    }),
  };
  for (let i = 0; i < 12; i++) {
    const bytes = random(1 + rng.int(5000));
    attacks[`random${i}`] = attack(port, {
      send: (ws) => {
        if (i % 2) ws.send(hello());
        ws.send(bytes);
      },
    });
  }
  const outcomes: Record<string, string> = {};
  for (const [k, p] of Object.entries(attacks)) outcomes[k] = await p;
  assert.equal(coord.child.exitCode, null, 'the attacks ended while training was still running');
  assert.doesNotMatch(
    coord.output(),
    /training finished/,
    'the attacks ended while training was still running',
  );

  const { code } = await coord.exited;
  assert.equal(code, 0, coord.output());
  assert.equal((await honest.exited).code, 0);
  assert.equal(outcomes.noToken, 'http 401');
  assert.equal(outcomes.wrongToken, 'http 401');
  assert.equal(outcomes.wrongProtocolHeader, 'http 426');
  assert.equal(outcomes.wrongProtocolHello, 'close 4001');
  assert.equal(outcomes.textFrame, 'close 1003');
  assert.equal(outcomes.oversize, 'close 1009');
  for (const k of ['resultBeforeHello', 'badSizes', 'notMsgpack']) assert.equal(outcomes[k], 'close 1002', k);
  for (let i = 0; i < 12; i++) assert.match(outcomes[`random${i}`]!, /^close 10(02|09)$/, `random${i}`);
  const out = coord.output();
  for (const reason of [
    'bad-token',
    'bad-protocol-version',
    'text-frame',
    'invalid-message',
    'malformed-frame',
    'oversize',
  ]) {
    assert.match(out, new RegExp(`rejected connection .*${reason}`), reason);
  }
  // the honest worker was never disturbed: it left only when training was done
  assert.equal((out.match(/honest:\d+, wasm\) left/g) ?? []).length, 1);
  assert.match(out, /honest:\d+, wasm\) left: 1000 done/);
  assertSameTraining(loadCheckpoint(ckpt), 'after the attacks');
});

test('a worker that stops answering: its microbatches go to another worker after --step-timeout', async () => {
  const ckpt = file(dir, 'stall.ckpt');
  const coord = coordinatorProc(0, ['--checkpoint', ckpt, '--step-timeout', '1', '--min-workers', '2']);
  const port = await listeningPort(coord);
  // connects, says hello, takes work, never answers (its ws still answers pings)
  const stalled = new WebSocket(`ws://127.0.0.1:${port}`, { headers: { authorization: bearer(TOKEN) } });
  stalled.on('error', () => undefined);
  stalled.on('open', () => stalled.send(hello()));
  const honest = workerProc(port, 'honest');
  const { code } = await coord.exited;
  stalled.terminate();
  assert.equal(code, 0, coord.output());
  assert.equal((await honest.exited).code, 0);
  const out = coord.output();
  assert.match(out, /exceeded the step timeout/);
  assert.match(out, /reason=timeout/);
  assertSameTraining(loadCheckpoint(ckpt), 'after a stalled worker');
});
