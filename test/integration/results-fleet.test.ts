// Inference on the worker fleet: `evaluate` and `embed` with local worker processes and a remote
// worker joining over the WebSocket endpoint give exactly the in-process numbers, also when a
// worker is killed (SIGKILL) mid-run and its requests are redone by the others.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { defaultModelConfig, defaultTrainConfig, saveCheckpoint } from '@atlasvae/shared';
import { initParams, initBuffers } from '@atlasvae/shared/model';
import { initAdam } from '@atlasvae/shared/train';
import { readManifest } from '@atlasvae/coordinator/data';
import type { EvaluationReport } from '@atlasvae/coordinator/results';
import { tempDir, cliPath } from '../helpers/paths.js';
import { track, killChildren } from '../helpers/children.js';
import { cli } from './results-harness.js';

after(killChildren);

test(
  'inference on the worker fleet equals in-process inference, also when a worker dies',
  { timeout: 240_000 },
  async (t) => {
    const dir = tempDir('atlasvae-results-fleet-');
    const data = path.join(dir, 'sim');
    await cli([
      'simulate',
      '--cells',
      '1200',
      '--genes',
      '200',
      '--batches',
      '2',
      '--cell-types',
      '4',
      '--out',
      data,
      '--seed',
      '4',
    ]);
    const m = readManifest(data);
    const cfg = defaultModelConfig(m.nGenes, m.batchCategories.length);
    const ckpt = path.join(dir, 'init.ckpt');
    const params = initParams(cfg, 5);
    saveCheckpoint(ckpt, {
      format: 'atlasvae-checkpoint',
      version: 1,
      modelConfig: cfg,
      trainConfig: defaultTrainConfig(m.nCells),
      params,
      buffers: initBuffers(cfg),
      adam: { ...initAdam(params.length) },
      position: { epoch: 3, stepInEpoch: 0, globalStep: 60 },
      genes: m.genes,
      batchCategories: m.batchCategories,
      labelCategories: m.labelCategories,
      manifestHash: null,
      history: [],
      createdAt: new Date().toISOString(),
    });
    const common = ['--checkpoint', ckpt, '--data', data, '--backend', 'wasm', '--chunk-cells', '50'];

    await t.test('embed with 2 local workers is byte-identical to in-process', async () => {
      const a = path.join(dir, 'local.csv'),
        b = path.join(dir, 'fleet.csv');
      await cli(['embed', ...common, '--out', a]);
      await cli(['embed', ...common, '--out', b, '--local-workers', '2']);
      assert.ok(fs.readFileSync(a).equals(fs.readFileSync(b)));
    });

    await t.test('evaluate: a remote worker killed mid-run; the report equals in-process', async () => {
      const ref = JSON.parse(await cli(['evaluate', ...common, '--samples', '10'])) as EvaluationReport;
      const token = 'fleet-test-token';
      const run = track(
        spawn(
          process.execPath,
          [
            cliPath,
            'evaluate',
            ...common,
            '--samples',
            '10',
            '--local-workers',
            '1',
            '--port',
            '0',
            '--min-workers',
            '2',
            '--token',
            token,
          ],
          { stdio: ['ignore', 'pipe', 'pipe'] },
        ),
      );
      let stdout = '',
        stderr = '';
      run.stdout.on('data', (d) => (stdout += d));
      run.stderr.on('data', (d) => (stderr += d));
      const exited = new Promise<number>((resolve) => run.on('close', (c) => resolve(c ?? -1)));
      /** resolves (synchronously with the data that made `ready` true) with its first truthy value; rejects if evaluate ends first */
      const untilStderr = <T>(ready: () => T | null | false, what: string): Promise<T> =>
        new Promise<T>((resolve, reject) => {
          const onData = (): void => {
            const v = ready();
            if (v) {
              run.stderr.off('data', onData);
              resolve(v);
            }
          };
          run.stderr.on('data', onData);
          void exited.then(() => reject(new Error(`evaluate ended before ${what}:\n${stderr}`)));
        });
      // the fleet chooses its port (0) and logs it: a port picked free beforehand can be taken meanwhile
      const port = Number(
        (
          await untilStderr(
            () => /inference fleet listening on wss?:\/\/\S*:(\d+)/.exec(stderr),
            'it listened',
          )
        )[1],
      );
      const victim = track(
        spawn(
          process.execPath,
          [
            cliPath,
            'worker',
            '--connect',
            `ws://127.0.0.1:${port}`,
            '--token',
            token,
            '--backend',
            'wasm',
            '--name',
            'victim',
            '--give-up-after',
            '30',
          ],
          { stdio: 'ignore' },
        ),
      );
      // Freeze the victim the moment both workers are ready: the fleet hands it requests at once,
      // and a stopped process can answer none of them. Killing it then always leaves requests in
      // flight, however fast or slow the machine is.
      await untilStderr(
        () => /\(victim, wasm\) joined/.test(stderr) && /2 ready/.test(stderr) && victim.kill('SIGSTOP'),
        'the victim was stopped',
      );
      await new Promise((r) => setTimeout(r, 300));
      victim.kill('SIGKILL');
      const code = await exited;
      assert.equal(code, 0, stderr);
      assert.match(stderr, /worker \d+ \(victim, wasm\) joined/);
      assert.match(
        stderr,
        /worker \d+ \(victim, wasm\) left; \d+ request\(s\) handed to the others/,
        'the victim died with requests in flight',
      );
      const got = JSON.parse(stdout) as EvaluationReport;
      assert.equal(got.elbo, ref.elbo);
      assert.equal(got.marginalLogLikelihood!.logLikelihood, ref.marginalLogLikelihood!.logLikelihood);
      assert.equal(got.knnAccuracy!.accuracy, ref.knnAccuracy!.accuracy);
      assert.equal(got.batchMixing!.normalizedEntropy, ref.batchMixing!.normalizedEntropy);
    });
    if (!process.env.ATLASVAE_KEEP_TEST_FILES) fs.rmSync(dir, { recursive: true, force: true });
  },
);
