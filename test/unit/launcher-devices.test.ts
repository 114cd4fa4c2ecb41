// GPU discovery and `--devices` selection of the node launcher (worker/src/launcher/devices.ts).
import test from 'node:test';
import assert from 'node:assert/strict';
import { discoverGpus, selectDevices } from '@atlasvae/worker/launcher';

const none = { nvidiaSmi: () => null, devEntries: () => ['null', 'tty0'] };

test('CUDA_VISIBLE_DEVICES wins (a scheduler chose the GPUs); empty, -1 and NoDevFiles mean none', () => {
  assert.deepEqual(discoverGpus({ ...none, env: { CUDA_VISIBLE_DEVICES: '2,3' } }), {
    ids: ['2', '3'],
    source: 'CUDA_VISIBLE_DEVICES',
  });
  assert.deepEqual(
    discoverGpus({
      env: { CUDA_VISIBLE_DEVICES: 'GPU-1a2b,GPU-3c4d' },
      nvidiaSmi: () => 'GPU 0: A100 (UUID: x)\n',
    }).ids,
    ['GPU-1a2b', 'GPU-3c4d'],
  );
  for (const v of ['', '-1', 'NoDevFiles']) {
    assert.deepEqual(
      discoverGpus({
        env: { CUDA_VISIBLE_DEVICES: v },
        nvidiaSmi: () => 'GPU 0: x\n',
        devEntries: () => ['nvidia0'],
      }).ids,
      [],
      v,
    );
  }
});

test('then nvidia-smi -L, then /dev/nvidiaN (not nvidiactl or nvidia-uvm)', () => {
  const smi = 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-aaa)\nGPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-bbb)\n';
  assert.deepEqual(discoverGpus({ env: {}, nvidiaSmi: () => smi, devEntries: () => [] }), {
    ids: ['0', '1'],
    source: 'nvidia-smi',
  });
  const dev = ['nvidia10', 'nvidiactl', 'nvidia-uvm', 'nvidia2', 'nvidia0', 'nvidia1'];
  assert.deepEqual(discoverGpus({ env: {}, nvidiaSmi: () => null, devEntries: () => dev }), {
    ids: ['0', '1', '2', '10'],
    source: '/dev',
  });
  assert.deepEqual(discoverGpus({ ...none, env: {} }), { ids: [], source: 'none' });
});

test('--devices all | N | list', () => {
  const four = { ids: ['0', '1', '2', '3'], source: 'nvidia-smi' as const };
  assert.deepEqual(
    selectDevices('all', four).map((s) => s.gpu),
    ['0', '1', '2', '3'],
  );
  assert.deepEqual(selectDevices('2', four), [
    { index: 0, gpu: '0' },
    { index: 1, gpu: '1' },
  ]);
  assert.deepEqual(selectDevices('0,2', four), [
    { index: 0, gpu: '0' },
    { index: 1, gpu: '2' },
  ]);
  assert.deepEqual(
    selectDevices('3', { ids: [], source: 'none' }),
    [0, 1, 2].map((index) => ({ index, gpu: null })),
    'N CPU workers without GPUs',
  );
});

test('--devices mistakes are named', () => {
  const two = { ids: ['4', '5'], source: 'CUDA_VISIBLE_DEVICES' as const };
  assert.throws(
    () => selectDevices('all', { ids: [], source: 'none' }),
    /--devices all: no GPU found .*give --devices N to start N CPU workers/,
  );
  assert.throws(
    () => selectDevices('3', two),
    /--devices 3: only 2 on this node: GPUs 4,5 \(from CUDA_VISIBLE_DEVICES\)/,
  );
  assert.throws(() => selectDevices('0,2', two), /GPU 0,2 not on this node/);
  assert.throws(() => selectDevices('4,4', two), /listed twice/);
  assert.throws(() => selectDevices('0', two), /give 1 or more/);
  assert.throws(() => selectDevices('gpu 1', two), /expected all, a number of workers/);
});
