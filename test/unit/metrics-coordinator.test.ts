// The coordinator's metrics as Prometheus sees them: served over real HTTP, parsed from the
// text exposition format, values checked against what was observed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CoordinatorMetrics } from '@atlasvae/coordinator';
import { parseExposition, sampleValue } from '../helpers/prom-text.js';

test('observed steps, workers, rejections and checkpoints show up in /metrics with the right values', async () => {
  let t = 1000;
  const m = new CoordinatorMetrics({ now: () => t });
  const server = m.server(0, '127.0.0.1');
  await server.start();
  try {
    const health0 = await fetch(`${server.url}/healthz`);
    assert.equal(health0.status, 503, 'healthz is 503 before training starts');
    assert.match(await health0.text(), /idle/);

    m.trainingStarted({ totalSteps: 10, backend: 'js' });
    m.workerConnected('wasm');
    m.workerConnected('wasm');
    m.workerConnected('tensorflow');
    m.workerDisconnected('wasm');
    m.workerConnected('x'.repeat(100));
    m.workerDisconnected('evil"\nlabel');
    t += 2;
    m.observeStep({
      cells: 128,
      epoch: 0,
      phaseSeconds: { compute: 0.2, communication: 0.03, aggregation: 0.004, optimizer: 0.002 },
      elbo: 1500.5,
      loss: 1495.375,
      reconstruction: 1490.25,
      kl: 10.25,
      klWeight: 0.5,
      learningRate: 1e-3,
      gradientNorm: 42,
    });
    t += 2;
    m.observeStep({
      cells: 64,
      epoch: 1,
      phaseSeconds: { compute: 0.1, communication: 0.01, aggregation: 0.003, optimizer: 0.002 },
      elbo: 1400,
    });
    m.observeValidation({ elbo: 1450, reconstruction: 1440, kl: 20 });
    m.microbatchRedone(3);
    m.rejected('connection', 'bad_token');
    m.rejected('connection', 'bad_token');
    m.rejected('message', 'oversize');
    m.bytesSent(1000);
    m.bytesReceived(500);
    t += 5;
    m.checkpointWritten(1_700_000_000);
    t += 7;

    const health1 = await fetch(`${server.url}/healthz`);
    assert.equal(health1.status, 200, 'healthz is 200 while training');

    const res = await fetch(`${server.url}/metrics`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    const samples = parseExposition(await res.text());
    const v = (name: string, labels: Record<string, string> = {}): number | undefined =>
      sampleValue(samples, name, { role: 'coordinator', ...labels });

    assert.equal(v('atlasvae_cells_total'), 192);
    assert.equal(v('atlasvae_steps_total'), 2);
    assert.ok(
      Math.abs(v('atlasvae_cells_per_second')! - 192 / (2 + 0.236)) < 1e-9,
      'cells since the first step began (its phases took 0.236 s)',
    );
    assert.equal(v('atlasvae_progress_ratio'), 0.2);
    assert.equal(v('atlasvae_steps_planned'), 10);
    assert.equal(v('atlasvae_epoch'), 1);
    assert.equal(v('atlasvae_elbo', { split: 'train' }), 1400);
    assert.equal(v('atlasvae_elbo', { split: 'validation' }), 1450);
    assert.equal(
      v('atlasvae_reconstruction_loss', { split: 'train' }),
      1490.25,
      'a step without the term keeps the last value',
    );
    assert.equal(v('atlasvae_kl_divergence', { split: 'validation' }), 20);
    assert.equal(v('atlasvae_kl_weight'), 0.5);
    assert.equal(v('atlasvae_loss'), 1495.375);
    assert.equal(v('atlasvae_learning_rate'), 1e-3);
    assert.equal(v('atlasvae_gradient_norm'), 42);
    assert.equal(v('atlasvae_step_duration_seconds_count', { phase: 'compute' }), 2);
    assert.ok(Math.abs(v('atlasvae_step_duration_seconds_sum', { phase: 'compute' })! - 0.3) < 1e-12);
    assert.equal(v('atlasvae_step_duration_seconds_bucket', { phase: 'aggregation', le: '0.0025' }), 0);
    assert.equal(v('atlasvae_step_duration_seconds_bucket', { phase: 'aggregation', le: '0.005' }), 2);
    assert.equal(v('atlasvae_step_duration_seconds_count', { phase: 'optimizer' }), 2);
    assert.equal(v('atlasvae_workers_connected', { backend: 'wasm' }), 1);
    assert.equal(v('atlasvae_workers_connected', { backend: 'tensorflow' }), 1);
    assert.equal(v('atlasvae_worker_disconnects_total', { backend: 'wasm' }), 1);
    assert.equal(
      v('atlasvae_worker_disconnects_total', { backend: 'other' }),
      1,
      'odd backend names are folded into "other"',
    );
    assert.equal(v('atlasvae_workers_connected', { backend: 'other' }), 0);
    assert.equal(m.workerCount, 2);
    assert.equal(v('atlasvae_microbatches_redone_total'), 3);
    assert.equal(v('atlasvae_rejected_connections_total', { reason: 'bad_token' }), 2);
    assert.equal(v('atlasvae_rejected_messages_total', { reason: 'oversize' }), 1);
    assert.equal(v('atlasvae_sent_bytes_total'), 1000);
    assert.equal(v('atlasvae_received_bytes_total'), 500);
    assert.equal(v('atlasvae_checkpoints_total'), 1);
    assert.equal(v('atlasvae_checkpoint_timestamp_seconds'), 1_700_000_000);
    assert.equal(v('atlasvae_checkpoint_age_seconds'), 7);
    assert.equal(v('atlasvae_backend_info', { backend: 'js' }), 1);
    assert.equal(v('atlasvae_training_active'), 1);
    assert.ok(v('process_cpu_user_seconds_total')! >= 0, 'default process metrics are on');
    assert.ok(v('nodejs_heap_size_used_bytes')! > 0);

    m.trainingFinished();
    const health2 = await fetch(`${server.url}/healthz`);
    assert.equal(health2.status, 503, 'healthz is 503 once training has finished');
    assert.match(await health2.text(), /finished/);
    assert.equal((await fetch(`${server.url}/nope`)).status, 404);
    assert.equal((await fetch(`${server.url}/metrics`, { method: 'POST' })).status, 405);
  } finally {
    await server.stop();
  }
});

test('checkpoint age counts from the start of training until the first checkpoint', async () => {
  let t = 50;
  const m = new CoordinatorMetrics({ now: () => t, defaultMetrics: false });
  let samples = parseExposition(await m.registry.metrics());
  assert.equal(sampleValue(samples, 'atlasvae_checkpoint_age_seconds', {}), 0, 'zero before training');
  m.trainingStarted({ totalSteps: 4, completedSteps: 2 });
  t += 30;
  samples = parseExposition(await m.registry.metrics());
  assert.equal(sampleValue(samples, 'atlasvae_checkpoint_age_seconds', {}), 30);
  assert.equal(
    sampleValue(samples, 'atlasvae_progress_ratio', {}),
    0.5,
    'a resumed run starts at its checkpoint',
  );
  m.observeStep({ cells: 10 });
  samples = parseExposition(await m.registry.metrics());
  assert.equal(sampleValue(samples, 'atlasvae_progress_ratio', {}), 0.75);
});

test('a taken port is a clear error', async () => {
  const a = new CoordinatorMetrics({ defaultMetrics: false }).server(0, '127.0.0.1');
  const port = await a.start();
  try {
    const b = new CoordinatorMetrics({ defaultMetrics: false }).server(port, '127.0.0.1');
    await assert.rejects(b.start(), /EADDRINUSE/);
  } finally {
    await a.stop();
  }
});
