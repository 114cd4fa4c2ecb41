// The device model's tests (device-model.test.ts: the PyTorch fixture, kang microbatches k = 1 and
// k = 8 against the JS model, evaluation mode, transfers, lgamma) once more on the webgpu backend
// (the test bed of test/helpers/webgpu.ts), in a child process so this file's backend stays as it is.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { repoRoot, skipUnlessShared } from '../helpers/paths.js';
import { webgpuEnv, webgpuTestBed } from '../helpers/webgpu.js';

const skip = skipUnlessShared('fixtures', 'scvi_reference.json') || webgpuTestBed().skip;
if (skip) console.log(`  skipped: ${skip}`);

test(
  'device model tests pass on webgpu: the scvi fixture (nb, zinb, poisson), kang k = 1 and 8, evaluation mode, transfers',
  { skip },
  () => {
    const file = path.join(repoRoot, 'test/dist/unit/device-model.test.js');
    // a test run of its own, not a subtest of this one's runner
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      ...webgpuEnv,
      ATLASVAE_TEST_BACKEND: 'webgpu',
      EGL_PLATFORM: process.env.EGL_PLATFORM ?? 'surfaceless',
    };
    delete env.NODE_TEST_CONTEXT;
    const r = spawnSync(process.execPath, ['--test', '--test-force-exit', '--test-reporter=tap', file], {
      env,
      encoding: 'utf8',
      timeout: 540_000,
    });
    const out = `${r.stdout}\n${r.stderr}`;
    const passed = out.match(/^ok \d+ - device (model|lgamma) \(webgpu\).*/gm) ?? [];
    const failed = out.match(/^not ok \d+ - .*/gm) ?? [];
    console.log(passed.map((l) => `  ${l}`).join('\n'));
    assert.deepEqual(failed, [], out.slice(-4000));
    assert.equal(r.status, 0, out.slice(-4000));
    assert.equal(
      passed.filter((l) => /scvi fixture (nb|zinb|poisson)/.test(l)).length,
      3,
      `nb, zinb and poisson fixtures passed on webgpu:\n${out.slice(-4000)}`,
    );
    assert.ok(
      passed.some((l) => /kang microbatches, k = 1 and k = 8/.test(l)),
      'the kang comparison ran on webgpu',
    );
  },
);
