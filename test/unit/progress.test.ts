// Progress in the terminal: lines every few seconds when stderr is not a TTY, JSON lines with
// --log-format json, a redrawn bar on a TTY. A fake clock drives time; output is checked exactly.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Logger } from '@atlasvae/shared';
import { Progress, formatDuration, renderBar, renderLine } from '@atlasvae/coordinator';

function sink(isTTY = false): {
  out: string[];
  stream: { isTTY: boolean; columns: number; write(s: string): boolean };
} {
  const out: string[] = [];
  return { out, stream: { isTTY, columns: 100, write: (s: string) => (out.push(s), true) } };
}

test('non-TTY: a line every 5 seconds with percent, cells/s and ETA, and a final line', () => {
  const { out, stream } = sink(false);
  const logger = new Logger({ sink: stream, now: () => new Date('2026-11-25T10:00:00Z') });
  let t = 100;
  const p = new Progress({ totalSteps: 100, totalEpochs: 4, stream, logger, now: () => t });
  assert.equal(p.mode, 'lines');
  for (let step = 1; step <= 40; step++) {
    t += 0.5; // 2 steps/s, 128 cells per step
    p.update({ cells: 128, epoch: Math.floor((step - 1) / 25), elbo: 2000 - step });
  }
  // lines at the first update (t=100.5: no rate yet), then 105.5, 110.5, 115.5: every 5 s, not every step
  assert.equal(out.length, 4);
  assert.equal(out[0], '10:00:00 INFO  training 1.0% step 1/100 epoch 1/4 ETA ? elbo 1999.0\n');
  assert.equal(
    out[3],
    '10:00:00 INFO  training 31.0% step 31/100 epoch 2/4 256 cells/s ETA 35s elbo 1969.0\n',
  );
  p.finish();
  assert.equal(out.length, 5);
  assert.equal(
    out[4],
    '10:00:00 INFO  training done: training 40.0% step 40/100 epoch 2/4 256 cells/s ETA 30s elbo 1960.0\n',
  );
  p.update({ cells: 1 });
  assert.equal(out.length, 5, 'nothing after finish');
});

test('json: progress records with numbers a log collector can graph', () => {
  const { out, stream } = sink(true);
  const logger = new Logger({ sink: stream, format: 'json', now: () => new Date('2026-11-25T10:00:00Z') });
  let t = 0;
  const p = new Progress({ totalSteps: 10, stream, logger, now: () => t, intervalSeconds: 2 });
  assert.equal(p.mode, 'json', 'json logs win over a TTY');
  for (let i = 0; i < 10; i++) {
    t += 1;
    p.update({ cells: 100, epoch: 0, elbo: 500 });
  }
  p.finish();
  const recs = out.map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.deepEqual(
    recs.map((r) => r.step),
    [1, 3, 5, 7, 9, 10],
  );
  assert.equal(recs[0]!.cellsPerSecond, 0, 'no rate at the first record');
  assert.equal(recs[0]!.etaSeconds, null);
  assert.deepEqual(recs[2], {
    time: '2026-11-25T10:00:00.000Z',
    level: 'info',
    msg: 'progress',
    task: 'training',
    step: 5,
    totalSteps: 10,
    percent: 50,
    epoch: 0,
    totalEpochs: null,
    cells: 500,
    cellsPerSecond: 100,
    etaSeconds: 5,
    elapsedSeconds: 5,
    elbo: 500,
    validationElbo: null,
  });
  assert.equal(recs[5]!.msg, 'progress done');
  assert.equal(recs[5]!.etaSeconds, 0);
  assert.equal(recs[5]!.cells, 1000);
});

test('TTY: the bar is redrawn in place and log lines do not tear it', () => {
  const { out, stream } = sink(true);
  const logger = new Logger({ sink: stream, now: () => new Date('2026-11-25T10:00:00Z') });
  let t = 0;
  const p = new Progress({ totalSteps: 4, stream, logger, now: () => t });
  assert.equal(p.mode, 'bar');
  t = 1;
  p.update({ cells: 50 });
  assert.match(
    out.at(-1)!,
    // eslint-disable-next-line no-control-regex -- the bar ends in the ANSI erase-line escape
    /^\rtraining \[#+\.+\] {2}25% \| step 1\/4 \| ETA \?\x1b\[K$/,
    'drawn at once, no rate yet',
  );
  logger.warn('worker lost', { worker: 'w1' });
  assert.deepEqual(out.slice(-3, -1), ['\r\x1b[K', '10:00:00 WARN  worker lost worker=w1\n']);
  assert.match(out.at(-1)!, /^\rtraining \[/, 'bar drawn again below the log line');
  t = 2;
  p.update({ cells: 50 });
  // eslint-disable-next-line no-control-regex -- the bar ends in the ANSI erase-line escape
  assert.match(out.at(-1)!, / {2}50% \| step 2\/4 \| 50\.0 cells\/s \| ETA 2s\x1b\[K$/);
  p.finish();
  assert.equal(out.at(-1), '\n');
  logger.info('after');
  assert.equal(out.at(-1), '10:00:00 INFO  after\n', 'logger restored after finish');
});

test('bar fits the terminal; durations read naturally', () => {
  const s = {
    label: 'training',
    unit: 'step',
    unitsPerSecond: 1,
    completedSteps: 7,
    totalSteps: 10,
    fraction: 0.7,
    epoch: 0,
    totalEpochs: 1,
    cells: 1,
    cellsPerSecond: 12345.6,
    etaSeconds: 4000,
    elapsedSeconds: 1,
    elbo: 1,
    validationElbo: null,
  };
  const line = renderBar(s, 80);
  assert.ok(line.length <= 79, line);
  assert.equal(
    renderBar(s, 60),
    'training [#############......]  70% | step 7/10 | epoch 1/1',
    'whole fields left out, never cut',
  );
  assert.equal(renderBar(s, 0).length, 20, 'a terminal reporting no width is treated as 21 columns');
  assert.match(
    renderBar(s, 200),
    /\[#{28}\.{12}\] {2}70% \| step 7\/10 \| epoch 1\/1 \| 12,346 cells\/s \| ETA 1h06m \| elbo 1\.0$/,
  );
  assert.equal(formatDuration(75), '1m15s');
  assert.equal(formatDuration(null), '?');
});

test('other units: cells counted as they are written, epochs without cells', () => {
  const { out, stream } = sink(false);
  const logger = new Logger({ sink: stream, now: () => new Date('2026-11-25T10:00:00Z') });
  let t = 0;
  const p = new Progress({
    label: 'simulate',
    unit: 'cells',
    totalSteps: 30000,
    stream,
    logger,
    now: () => t,
  });
  for (let done = 1000; done <= 12000; done += 1000) {
    t += 1;
    p.update({ cells: 1000, completedSteps: done });
  }
  p.finish();
  assert.equal(
    out.at(-1),
    '10:00:00 INFO  simulate done: simulate 40.0% 12,000/30,000 cells 1,000 cells/s ETA 18s\n',
  );

  const j = sink(false);
  const jl = new Logger({ sink: j.stream, format: 'json', now: () => new Date('2026-11-25T10:00:00Z') });
  t = 0;
  const u = new Progress({
    label: 'umap layout',
    unit: 'epochs',
    totalSteps: 200,
    stream: j.stream,
    logger: jl,
    now: () => t,
  });
  for (let e = 1; e <= 50; e++) {
    t += 0.1;
    u.update({ cells: 0, completedSteps: e });
  }
  u.finish();
  const last = JSON.parse(j.out.at(-1)!) as Record<string, unknown>;
  assert.equal(last.unit, 'epochs');
  assert.equal(last.unitsPerSecond, 10);
  assert.equal(last.etaSeconds, 15);
  assert.equal(renderLine(u.snapshot()), 'umap layout 25.0% 50/200 epochs 10.0 epochs/s ETA 15s');
});
