// A worker's metrics over real HTTP: microbatch sums become per-cell losses, steps are counted
// once however many microbatches a step gives the worker, and healthz follows the connection.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WorkerMetrics } from '@atlasvae/worker';
import { ThroughputMeter } from '@atlasvae/shared/metrics';
import { parseExposition, sampleValue } from '../helpers/prom-text.js';

test('worker metrics: per-cell losses, steps, phases, bytes, backend and healthz', async () => {
  let t = 0;
  const m = new WorkerMetrics({ now: () => t });
  const server = m.server(0, '127.0.0.1');
  await server.start();
  try {
    assert.equal((await fetch(`${server.url}/healthz`)).status, 503, 'not connected yet');
    m.setBackend('wasm');
    m.connected();
    assert.equal((await fetch(`${server.url}/healthz`)).status, 200, 'connected: live');
    t = 1;
    m.observeMicrobatch({
      cells: 64,
      computeSeconds: 0.5,
      waitSeconds: 0.1,
      step: 0,
      epoch: 0,
      klWeight: 0.25,
      lossSum: 6400,
      reconstructionSum: 6000,
      klSum: 1600,
    });
    t = 2;
    m.observeMicrobatch({
      cells: 64,
      computeSeconds: 0.5,
      waitSeconds: 0.02,
      communicationSeconds: 0.03,
      step: 0,
      epoch: 0,
      lossSum: 3200,
    });
    t = 4;
    m.observeMicrobatch({ cells: 32, computeSeconds: 0.25, step: 1, epoch: 0 });
    m.bytesSent(123);
    m.bytesReceived(4567);
    m.rejected('bad_version');

    const samples = parseExposition(await (await fetch(`${server.url}/metrics`)).text());
    const v = (name: string, labels: Record<string, string> = {}): number | undefined =>
      sampleValue(samples, name, { role: 'worker', ...labels });
    assert.equal(v('atlasvae_cells_total'), 160);
    assert.equal(v('atlasvae_microbatches_total'), 3);
    assert.equal(v('atlasvae_steps_total'), 2, 'two distinct steps');
    assert.equal(
      v('atlasvae_cells_per_second'),
      160 / 3.5,
      'from the start of the first computation (t = 0.5) to t = 4',
    );
    assert.equal(v('atlasvae_progress_ratio'), undefined, "progress is the coordinator's");
    assert.equal(
      v('atlasvae_elbo', { split: 'train' }),
      (6000 + 1600) / 64,
      'reconstruction + KL per cell (no warm-up weight)',
    );
    assert.equal(v('atlasvae_reconstruction_loss', { split: 'train' }), 6000 / 64);
    assert.equal(v('atlasvae_kl_divergence', { split: 'train' }), 25);
    assert.equal(v('atlasvae_kl_weight'), 0.25);
    assert.equal(v('atlasvae_loss'), 3200 / 64, 'the weighted loss of the last microbatch that had one');
    assert.equal(v('atlasvae_step_duration_seconds_count', { phase: 'compute' }), 3);
    assert.equal(v('atlasvae_step_duration_seconds_sum', { phase: 'compute' }), 1.25);
    // given waits 0.1 and 0.02 + 0.03; the third measured: starts at 4 - 0.25, previous ended at 2
    assert.equal(v('atlasvae_step_duration_seconds_count', { phase: 'communication' }), 3);
    assert.ok(
      Math.abs(v('atlasvae_step_duration_seconds_sum', { phase: 'communication' })! - (0.15 + 1.75)) < 1e-12,
    );
    assert.equal(
      v('atlasvae_step_duration_seconds_count', { phase: 'optimizer' }),
      undefined,
      'workers run no optimizer',
    );
    assert.equal(v('atlasvae_sent_bytes_total'), 123);
    assert.equal(v('atlasvae_received_bytes_total'), 4567);
    assert.equal(v('atlasvae_rejected_messages_total', { reason: 'bad_version' }), 1);
    assert.equal(v('atlasvae_backend_info', { backend: 'wasm' }), 1);
    assert.equal(v('atlasvae_coordinator_connected'), 1);
    assert.equal(v('atlasvae_connections_total'), 1);

    m.disconnected();
    const h = await fetch(`${server.url}/healthz`);
    assert.equal(h.status, 503);
    assert.match(await h.text(), /disconnected/);
    m.setBackend('cpu');
    const after = parseExposition(await m.registry.metrics());
    assert.equal(
      sampleValue(after, 'atlasvae_backend_info', { backend: 'wasm' }),
      undefined,
      'one backend at a time',
    );
    assert.equal(sampleValue(after, 'atlasvae_backend_info', { backend: 'cpu' }), 1);
  } finally {
    await server.stop();
  }
});

test('throughput meter: rate over a sliding window', () => {
  let t = 0;
  const meter = new ThroughputMeter(10, () => t);
  assert.equal(meter.rate(), 0);
  meter.start();
  for (t = 1; t <= 30; t++) meter.add(t <= 20 ? 100 : 10);
  // window: the last sample older than 10 s (t=19) up to t=30 -> cells of t=20..30 over 11 s
  assert.equal(meter.rate(), (100 + 10 * 10) / 11);
  assert.equal(meter.totalCells, 20 * 100 + 10 * 10);
});

test('throughput meter: stays exact over many samples (window start moves, storage compacts)', () => {
  let t = 0;
  const meter = new ThroughputMeter(10, () => t);
  meter.start();
  for (let i = 1; i <= 5000; i++) {
    t = i * 0.1; // 10 steps/s of 7 cells
    meter.add(7);
  }
  // window: samples after the one at t=489.9 -> 101 samples over 10.1 s
  assert.ok(Math.abs(meter.rate() - (101 * 7) / 10.1) < 1e-9, String(meter.rate()));
  assert.equal(meter.totalCells, 35000);
});
