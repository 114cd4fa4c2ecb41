// The device model's PyTorch-fixture test (device-model.test.ts) once more on the webgpu backend
// (the test bed of test/helpers/webgpu.ts), in a child process so this file's backend stays as it
// is. Only the fixture cases: the kang cases compare against the JS model, which cannot run on
// webgpu (test/integration/device-engine.test.ts does that comparison with the reference on cpu).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { repoRoot, skipUnlessShared } from '../helpers/paths.js';
import { webgpuEnv, webgpuTestBed } from '../helpers/webgpu.js';

const skip = skipUnlessShared('fixtures', 'scvi_reference.json') || webgpuTestBed().skip;
if (skip) console.log(`  skipped: ${skip}`);

test('device model on webgpu reproduces the scvi fixture (nb, zinb, poisson) to 1e-4', { skip }, () => {
  const file = path.join(repoRoot, 'test/dist/unit/device-model.test.js');
  // a test run of its own, not a subtest of this one's runner
  const env: NodeJS.ProcessEnv = { ...process.env, ...webgpuEnv, ATLASVAE_TEST_BACKEND: 'webgpu', EGL_PLATFORM: process.env.EGL_PLATFORM ?? 'surfaceless' };
  delete env.NODE_TEST_CONTEXT;
  const r = spawnSync(process.execPath, ['--test', '--test-force-exit', '--test-name-pattern=fixture', '--test-reporter=tap', file], {
    env,
    encoding: 'utf8', timeout: 300_000,
  });
  const out = `${r.stdout}\n${r.stderr}`;
  const passed = out.match(/^ok \d+ - device model \(webgpu\) reproduces the scvi fixture \w+/gm) ?? [];
  console.log(passed.map((l) => `  ${l}`).join('\n'));
  assert.equal(r.status, 0, out.slice(-4000));
  assert.equal(passed.length, 3, `nb, zinb and poisson passed on webgpu:\n${out.slice(-4000)}`);
});
