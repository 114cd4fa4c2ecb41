// How a training run ends, with real processes: a diverging run stops at once with a clear error
// (no reconnect storm), a signal stops a run even mid-step, a run without --checkpoint keeps its
// model at the printed default path, early stopping ends a run whose validation ELBO stalls, and
// the default batch sizes give every local worker microbatches.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { loadCheckpoint } from '@atlasvae/shared';
import { sharedPath, skipUnlessShared, tempDir } from '../helpers/paths.js';
import { isAlive } from '../helpers/children.js';
import { run, listeningPort, simulatedDataset, readAudit, file, cleanUp } from './dist-harness.js';

const KANG = ['data', 'kang_example_sce_1556'] as const;
let dir = '';
let data = '';

before(async () => {
  dir = tempDir('atlasvae-train-outcomes-');
  data = await simulatedDataset(file(dir, 'data'), 1200, 300, 3);
});

after(() => cleanUp(dir));

const SMALL = ['--n-hidden', '32', '--backend', 'wasm', '--validation-cells', '200'];

test('a diverging train (2 local workers) exits 3 within 60 s naming step, epoch and checkpoint, without a reconnect storm', async () => {
  const ckpt = file(dir, 'diverge.ckpt');
  const t0 = Date.now();
  // --lr 1 makes the loss NaN within a few steps; a checkpoint every step leaves the last finite one
  const p = run([
    'train',
    '--data',
    data,
    '--local-workers',
    '2',
    '--epochs',
    '20',
    '--lr',
    '1',
    '--checkpoint',
    ckpt,
    '--checkpoint-every',
    '1',
    '--log-level',
    'info',
    ...SMALL,
  ]);
  const { code } = await Promise.race([
    p.exited,
    new Promise<never>((_, rej) =>
      setTimeout(() => rej(new Error(`still running after 60 s:\n${p.output().slice(-3000)}`)), 60_000),
    ),
  ]);
  const out = p.output();
  assert.equal(code, 3, out.slice(-3000));
  assert.ok(Date.now() - t0 < 60_000);
  const m = out.match(
    /training diverged at step (\d+) \(epoch (\d+)\): the (loss|reconstruction term|KL term|gradient norm) is (NaN|-?Infinity).*the last checkpoint with finite parameters is (\S+) \(left as it was\)/,
  );
  assert.ok(m, out.slice(-3000));
  assert.equal(m[5], ckpt);
  // each worker joined once: a diverged result is an outcome, not a protocol error that drops it
  assert.equal((out.match(/ joined \(/g) ?? []).length, 2, out.slice(-3000));
  assert.doesNotMatch(out, /invalid-message/);
  // the checkpoint left behind is the step before the divergence, with finite parameters
  const c = loadCheckpoint(ckpt);
  assert.equal(c.position.globalStep, Number(m[1]) - 1);
  assert.ok(c.params.every(Number.isFinite), 'the last checkpoint has finite parameters');
});

test(
  'a diverging train-local exits 3 with the divergence message',
  { skip: skipUnlessShared(...KANG) },
  async () => {
    const p = run([
      'train-local',
      '--mtx',
      sharedPath(...KANG)!,
      '--lr',
      '1',
      '--epochs',
      '5',
      '--backend',
      'wasm',
    ]);
    const { code } = await p.exited;
    assert.equal(code, 3, p.output());
    assert.match(
      p.output(),
      /training diverged at step \d+ \(epoch 1\): the \w+( term)? is (NaN|-?Infinity); no checkpoint was written before it/,
    );
    assert.doesNotMatch(p.output(), /"epochs"/, 'no success report');
  },
);

test('--lr and other numeric flags are checked before anything runs', async () => {
  for (const [flag, value] of [
    ['--lr', '-0.1'],
    ['--lr', '0'],
    ['--kl-warmup', '-1'],
    ['--seed', '1.5'],
  ] as const) {
    const p = run(['train', '--data', data, '--local-workers', '0', flag, value]);
    const { code } = await p.exited;
    assert.equal(code, 1, p.output());
    assert.match(p.output(), new RegExp(`${flag} must be`), p.output());
  }
});

test('SIGTERM while a step cannot finish (its only worker stopped): the coordinator exits within 10 s and writes its checkpoint', async () => {
  const ckpt = file(dir, 'sigterm.ckpt');
  const audit = file(dir, 'sigterm.audit');
  const coord = run([
    'coordinator',
    '--data',
    data,
    '--host',
    '127.0.0.1',
    '--port',
    '0',
    '--epochs',
    '200',
    '--checkpoint',
    ckpt,
    '--audit',
    audit,
    '--checkpoint-every',
    '0',
    ...SMALL.filter((a) => a !== '--backend' && a !== 'wasm'),
  ]);
  const port = await listeningPort(coord);
  const worker = run([
    'worker',
    '--connect',
    `ws://127.0.0.1:${port}`,
    '--backend',
    'wasm',
    '--give-up-after',
    '30',
  ]);
  await coord.waitFor(/step \d+\/\d+/, 60_000);
  worker.child.kill('SIGSTOP');
  try {
    await new Promise((r) => setTimeout(r, 300));
    const t0 = Date.now();
    coord.child.kill('SIGTERM');
    const { code } = await coord.exited;
    const seconds = (Date.now() - t0) / 1000;
    assert.ok(seconds < 10, `exited after ${seconds} s`);
    assert.equal(code, 0, coord.output().slice(-3000));
    assert.match(coord.output(), /abandoned/);
    assert.match(coord.output(), /interrupted: \d+ steps/);
    // the checkpoint holds the last completed step: every step up to it was accepted in full
    const c = loadCheckpoint(ckpt);
    const steps = new Set(readAudit(audit).map((a) => a.step));
    assert.ok(c.position.globalStep >= 1);
    for (let s = 0; s < c.position.globalStep; s++) assert.ok(steps.has(s), `step ${s} in the audit`);
  } finally {
    worker.child.kill('SIGCONT');
    worker.child.kill('SIGTERM');
  }
  const w = await worker.exited;
  assert.equal(w.code, 0, worker.output());
});

test(
  'SIGTERM to train-local stops it after the current step and writes --out',
  { skip: skipUnlessShared(...KANG) },
  async () => {
    const out = file(dir, 'local-sigterm.ckpt');
    const p = run([
      'train-local',
      '--mtx',
      sharedPath(...KANG)!,
      '--epochs',
      '400',
      '--backend',
      'wasm',
      '--out',
      out,
    ]);
    await p.waitFor(/epoch 2\/400/, 60_000);
    const t0 = Date.now();
    p.child.kill('SIGTERM');
    const { code } = await p.exited;
    assert.ok(Date.now() - t0 < 10_000);
    assert.equal(code, 0, p.output());
    assert.match(p.output(), /"stopped":"interrupted"/);
    const c = loadCheckpoint(out);
    assert.ok(c.position.epoch >= 2 && c.position.epoch < 400);
  },
);

test('train without --checkpoint: a loadable checkpoint at the printed default path; a second run refuses to overwrite it', async () => {
  const own = await simulatedDataset(file(dir, 'own'), 600, 200, 4);
  const p = run(['train', '--data', own, '--local-workers', '2', '--epochs', '2', ...SMALL]);
  const { code } = await p.exited;
  assert.equal(code, 0, p.output());
  const printed = [...p.output().matchAll(/checkpoint: (\S+)/g)].map((m) => m[1]);
  assert.ok(printed.length >= 2, 'printed at the start and at the end');
  assert.equal(printed[0], `${own}.ckpt`);
  assert.equal(printed[printed.length - 1], printed[0]);
  const c = loadCheckpoint(printed[0]);
  assert.equal(c.position.epoch, 2);
  // the defaults for 2 workers: a 256-cell step at lr 2.5e-3 in two 128-cell microbatches, recorded
  assert.equal(c.trainConfig.globalBatch, 256);
  assert.equal(c.trainConfig.microbatch, 128);
  assert.equal(c.trainConfig.lr, 2.5e-3);

  const again = run(['train', '--data', own, '--local-workers', '0', '--epochs', '2', ...SMALL]);
  assert.equal((await again.exited).code, 1);
  assert.match(
    again.output(),
    /\.ckpt exists \(an earlier run's model\): pass --resume to continue it, --force to replace it/,
  );
});

test('default train --local-workers 2 computes microbatches on both workers', async () => {
  const audit = file(dir, 'both.audit');
  const p = run([
    'train',
    '--data',
    data,
    '--local-workers',
    '2',
    '--epochs',
    '1',
    '--checkpoint',
    file(dir, 'both.ckpt'),
    '--audit',
    audit,
    ...SMALL,
  ]);
  const { code } = await p.exited;
  assert.equal(code, 0, p.output());
  assert.doesNotMatch(p.output(), /idle every step/);
  const byWorker = new Map<number, number>();
  for (const a of readAudit(audit)) byWorker.set(a.worker, (byWorker.get(a.worker) ?? 0) + 1);
  assert.equal(byWorker.size, 2, JSON.stringify([...byWorker]));
  for (const [w, n] of byWorker) assert.ok(n >= 3, `worker ${w} computed ${n} microbatches`);
});

test('train passes --engine and --group to its local workers: they take groups of microbatches', async () => {
  const audit = file(dir, 'groups.audit');
  const p = run([
    'train',
    '--data',
    data,
    '--local-workers',
    '1',
    '--engine',
    'js',
    '--group',
    '2',
    '--microbatch',
    '32',
    '--epochs',
    '1',
    '--checkpoint',
    file(dir, 'groups.ckpt'),
    '--audit',
    audit,
    '--log-level',
    'info',
    ...SMALL,
  ]);
  const { code } = await p.exited;
  assert.equal(code, 0, p.output());
  assert.match(
    p.output(),
    /worker 1 joined \(local-1:\d+, js engine on wasm\b.*, groups of 2, /,
    p.output().slice(-3000),
  );
  assert.ok(readAudit(audit).length > 0, 'microbatches were computed');
  const bad = run(['train', '--data', data, '--local-workers', '1', '--group', '0']);
  assert.equal((await bad.exited).code, 1);
  assert.match(bad.output(), /--group must be an integer from 1 to \d+, not 0/);
});

test('a step with fewer microbatches than workers is warned about', async () => {
  const p = run([
    'train',
    '--data',
    data,
    '--local-workers',
    '2',
    '--epochs',
    '1',
    '--microbatch',
    '256',
    '--checkpoint',
    file(dir, 'idle.ckpt'),
    ...SMALL,
  ]);
  assert.equal((await p.exited).code, 0, p.output());
  assert.match(p.output(), /2 workers connected, but a step has 1 microbatch .*1 worker idle every step/);
});

test('--early-stopping ends a run whose validation ELBO stops improving, and the checkpoint records it', async () => {
  const ckpt = file(dir, 'early.ckpt');
  // a large learning rate without KL warm-up: the validation ELBO soon stops improving
  const p = run([
    'train',
    '--data',
    data,
    '--local-workers',
    '2',
    '--epochs',
    '150',
    '--lr',
    '0.05',
    '--kl-warmup',
    '0',
    '--early-stopping',
    '--early-stopping-patience',
    '3',
    '--checkpoint',
    ckpt,
    ...SMALL,
  ]);
  const { code } = await p.exited;
  assert.equal(code, 0, p.output().slice(-3000));
  assert.match(
    p.output(),
    /stopped early \(early stopping: the validation ELBO has not improved for 3 epochs/,
  );
  const c = loadCheckpoint(ckpt);
  assert.deepEqual(c.trainConfig.earlyStopping, { patience: 3, minDelta: 0 });
  const hist = c.history as { epoch: number; validationElbo: number }[];
  assert.ok(hist.length < 150, `stopped after ${hist.length} epochs`);
  // the decision, checked against the recorded history: the last 3 epochs are no better than the best before them
  const best = Math.min(...hist.slice(0, -3).map((h) => h.validationElbo));
  for (const h of hist.slice(-3))
    assert.ok(h.validationElbo >= best, `epoch ${h.epoch}: ${h.validationElbo} vs best ${best}`);
  assert.equal(c.earlyStopped?.bestValidationElbo, best);
});

test('SIGTERM to train mid-run: it exits within 10 s with its checkpoint, and its local workers with it; SIGKILL takes them too', async () => {
  const ckpt = file(dir, 'train-sigterm.ckpt');
  const workerPids = (p: ReturnType<typeof run>): number[] =>
    [...p.output().matchAll(/joined \(local-\d+:(\d+),/g)].map((m) => Number(m[1]));
  const waitGone = async (pids: number[], ms: number): Promise<boolean> => {
    const t0 = Date.now();
    while (Date.now() - t0 < ms) {
      if (!pids.some(isAlive)) return true;
      await new Promise((r) => setTimeout(r, 100));
    }
    return false;
  };

  const p = run([
    'train',
    '--data',
    data,
    '--local-workers',
    '2',
    '--epochs',
    '200',
    '--checkpoint',
    ckpt,
    '--log-level',
    'info',
    ...SMALL,
  ]);
  await p.waitFor(/step \d+\/\d+/, 60_000);
  const pids = workerPids(p);
  assert.equal(pids.length, 2, p.output());
  const t0 = Date.now();
  p.child.kill('SIGTERM');
  const { code } = await p.exited;
  assert.ok(Date.now() - t0 < 10_000, `exited after ${Date.now() - t0} ms`);
  assert.equal(code, 0, p.output().slice(-3000));
  assert.match(p.output(), /interrupted: \d+ steps/);
  assert.ok(loadCheckpoint(ckpt).position.globalStep > 0);
  assert.ok(await waitGone(pids, 5000), 'local workers exited with train');

  // killed outright, train cannot stop them: they see their IPC channel close and exit
  const k = run([
    'train',
    '--data',
    data,
    '--local-workers',
    '2',
    '--epochs',
    '200',
    '--checkpoint',
    file(dir, 'train-kill.ckpt'),
    '--log-level',
    'info',
    ...SMALL,
  ]);
  await k.waitFor(/step \d+\/\d+/, 60_000);
  const kpids = workerPids(k);
  assert.equal(kpids.length, 2);
  k.child.kill('SIGKILL');
  await k.exited;
  assert.ok(await waitGone(kpids, 10_000), 'local workers exited after train was killed');
});

test('a coordinator that cannot listen says so, without a misleading "training done" line', async () => {
  const net = await import('node:net');
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as { port: number }).port;
  try {
    const p = run([
      'coordinator',
      '--data',
      data,
      '--host',
      '127.0.0.1',
      '--port',
      String(port),
      '--checkpoint',
      file(dir, 'nolisten.ckpt'),
    ]);
    const { code } = await p.exited;
    assert.equal(code, 1, p.output());
    assert.match(p.output(), new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port}`));
    assert.doesNotMatch(p.output(), /training done|0\.0%/);
  } finally {
    server.close();
  }
});
