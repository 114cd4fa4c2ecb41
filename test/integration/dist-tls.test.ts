// wss:// with a certificate and key, and a worker with the wrong token: it is refused and exits
// with a clear message instead of retrying forever.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { loadCheckpoint } from '@atlasvae/shared';
import { tempDir } from '../helpers/paths.js';
import { run, listeningPort, simulatedDataset, file, cleanUp } from './dist-harness.js';

let dir = '';
let data = '';
let openssl = true;
try {
  execFileSync('openssl', ['version'], { stdio: 'ignore' });
} catch {
  openssl = false;
}

before(async () => {
  dir = tempDir('atlasvae-dist-tls-');
  data = await simulatedDataset(file(dir, 'data'), 600, 200, 4);
});

after(() => cleanUp(dir));

const FLAGS = [
  '--global-batch',
  '128',
  '--microbatch',
  '64',
  '--n-hidden',
  '32',
  '--max-steps',
  '3',
  '--host',
  '127.0.0.1',
  '--log-level',
  'info',
];

test(
  'coordinator and worker over wss:// with a certificate',
  { skip: openssl ? false : 'openssl is not installed: skipped' },
  async () => {
    const cert = file(dir, 'cert.pem'),
      key = file(dir, 'key.pem');
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-keyout',
        key,
        '-out',
        cert,
        '-days',
        '1',
        '-subj',
        '/CN=localhost',
        '-addext',
        'subjectAltName=IP:127.0.0.1,DNS:localhost',
      ],
      { stdio: 'ignore' },
    );
    const ckpt = file(dir, 'tls.ckpt');
    const coord = run([
      'coordinator',
      '--data',
      data,
      '--port',
      '0',
      '--token',
      'tls-token',
      '--tls-cert',
      cert,
      '--tls-key',
      key,
      '--checkpoint',
      ckpt,
      ...FLAGS,
    ]);
    const port = await listeningPort(coord);
    assert.match(coord.output(), /coordinator listening url=wss:\/\/127\.0\.0\.1/);
    // a plain ws:// client cannot talk to a wss:// port
    const plain = run([
      'worker',
      '--connect',
      `ws://127.0.0.1:${port}`,
      '--token',
      'tls-token',
      '--backend',
      'wasm',
      '--give-up-after',
      '1',
    ]);
    const worker = run([
      'worker',
      '--connect',
      `wss://127.0.0.1:${port}`,
      '--token',
      'tls-token',
      '--tls-ca',
      cert,
      '--backend',
      'wasm',
    ]);
    assert.equal((await coord.exited).code, 0, coord.output());
    assert.equal((await worker.exited).code, 0, worker.output());
    assert.notEqual((await plain.exited).code, 0);
    assert.equal(loadCheckpoint(ckpt).position.globalStep, 3);
  },
);

test('a worker with the wrong token is refused and exits with the reason', async () => {
  const coord = run(['coordinator', '--data', data, '--port', '0', '--token', 'right', ...FLAGS]);
  const port = await listeningPort(coord);
  const bad = run(['worker', '--connect', `ws://127.0.0.1:${port}`, '--token', 'wrong', '--backend', 'wasm']);
  const { code } = await bad.exited;
  assert.equal(code, 1);
  assert.match(bad.output(), /refused the connection: HTTP 401/);
  await coord.waitFor(/rejected connection .*bad-token/);
  const good = run([
    'worker',
    '--connect',
    `ws://127.0.0.1:${port}`,
    '--token',
    'right',
    '--backend',
    'wasm',
  ]);
  assert.equal((await coord.exited).code, 0, coord.output());
  assert.equal((await good.exited).code, 0);
});
