// The coordinator's Prometheus file_sd targets file (coordinator/src/server/prom-targets.ts) and
// the hello field that feeds it (a worker's metrics address).
import test, { after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { PrometheusTargetsFile, workerMetricsTarget } from '@atlasvae/coordinator/server';
import { parseWorkerMessage, PROTOCOL_VERSION } from '@atlasvae/shared/protocol';
import { tempDir } from '../helpers/paths.js';

const dir = tempDir('atlasvae-targets-');
after(() => fs.rmSync(dir, { recursive: true, force: true }));

test("a worker's endpoint: its own host, or (empty host) the address it connects from", () => {
  assert.equal(
    workerMetricsTarget({ metrics: 'gpu-node-3:9402', remote: '10.0.0.7:51234' }),
    'gpu-node-3:9402',
  );
  assert.equal(workerMetricsTarget({ metrics: ':9402', remote: '10.0.0.7:51234' }), '10.0.0.7:9402');
  assert.equal(workerMetricsTarget({ metrics: ':9402', remote: '::ffff:10.0.0.7:51234' }), '10.0.0.7:9402');
  assert.equal(workerMetricsTarget({ metrics: ':9402', remote: 'fd00::5:51234' }), '[fd00::5]:9402');
  assert.equal(
    workerMetricsTarget({ remote: '10.0.0.7:51234' }),
    null,
    'a worker without metrics is not a target',
  );
});

test('the file lists the coordinator and the connected workers, rewritten by rename on every change', () => {
  const file = path.join(dir, 'targets.json');
  const t = new PrometheusTargetsFile(file, 'head:9400');
  const read = (): unknown => JSON.parse(fs.readFileSync(file, 'utf8'));
  assert.deepEqual(read(), [{ targets: ['head:9400'], labels: { atlasvae_process: 'coordinator' } }]);
  const w1 = { id: 1, backend: 'wasm', name: 'a:11', remote: '10.0.0.2:40000', metrics: ':9401' };
  const w2 = { id: 2, backend: 'wasm', name: 'b:12', remote: '10.0.0.3:40000', metrics: 'node-b:9401' };
  t.workerJoined(w2);
  const inode = fs.statSync(file).ino;
  t.workerJoined(w1);
  assert.notEqual(fs.statSync(file).ino, inode, 'replaced by a rename, not rewritten in place');
  assert.deepEqual(read(), [
    { targets: ['head:9400'], labels: { atlasvae_process: 'coordinator' } },
    { targets: ['10.0.0.2:9401'], labels: { atlasvae_process: 'worker', atlasvae_worker: 'a:11' } },
    { targets: ['node-b:9401'], labels: { atlasvae_process: 'worker', atlasvae_worker: 'b:12' } },
  ]);
  t.workerLeft(w1);
  assert.deepEqual(
    (read() as { targets: string[] }[]).map((g) => g.targets[0]),
    ['head:9400', 'node-b:9401'],
  );
  assert.deepEqual(
    fs.readdirSync(dir).filter((f) => f !== 'targets.json'),
    [],
    'no temporary files left',
  );
});

test('hello.metrics is optional and must be HOST:PORT', () => {
  const sizes = { paramLength: 1, bnLength: 0 };
  const hello = { type: 'hello', protocol: PROTOCOL_VERSION, backend: 'wasm', name: 'w', pid: 1 };
  assert.equal(parseWorkerMessage(hello, 0, sizes).type, 'hello');
  for (const metrics of [':9401', 'node-1:9401', '10.1.2.3:80', '[fd00::1]:9401'])
    assert.equal(parseWorkerMessage({ ...hello, metrics }, 0, sizes).type, 'hello');
  for (const metrics of [9401, 'node-1', 'node 1:9401', 'a:0', 'a:9401/x', 'x'.repeat(300) + ':1']) {
    assert.throws(
      () => parseWorkerMessage({ ...hello, metrics }, 0, sizes),
      /hello\.metrics must be "HOST:PORT"/,
      String(metrics),
    );
  }
});
