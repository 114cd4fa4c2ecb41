// The logger's two formats: human lines and JSON lines (`--log-format json`).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Logger } from '@atlasvae/shared';

function capture(): { lines: string[]; sink: { write(s: string): boolean } } {
  const lines: string[] = [];
  return {
    lines,
    sink: { write: (s: string) => (lines.push(...s.split('\n').filter((l) => l !== '')), true) },
  };
}

const fixed = (): Date => new Date('2026-11-25T17:04:05.678Z');

test('text format: time, level, component, message, key=value fields', () => {
  const c = capture();
  const root = new Logger({ sink: c.sink, now: fixed });
  const w = root.child({ component: 'coordinator' });
  w.info('worker connected', { worker: 'w1', backend: 'wasm', cells: 128, lr: 0.001, note: 'two words' });
  w.debug('hidden at info level');
  w.warn('slow', { err: new Error('boom') });
  assert.deepEqual(c.lines, [
    '17:04:05 INFO  coordinator: worker connected worker=w1 backend=wasm cells=128 lr=0.001 note="two words"',
    '17:04:05 WARN  coordinator: slow err="boom"',
  ]);
});

test('json format: one parseable object per line; children follow the root configuration', () => {
  const c = capture();
  const root = new Logger({ sink: c.sink, now: fixed });
  const w = root.child({ component: 'worker', worker: 'w2' });
  root.configure({ format: 'json', level: 'debug' });
  w.debug('step', { step: 3, loss: 1234.5, bad: NaN, msg: 'clash' });
  w.error('lost', { err: new Error('socket hang up') });
  const objs = c.lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.deepEqual(objs[0], {
    time: '2026-11-25T17:04:05.678Z',
    level: 'debug',
    msg: 'step',
    component: 'worker',
    worker: 'w2',
    step: 3,
    loss: 1234.5,
    bad: 'NaN',
    field_msg: 'clash',
  });
  assert.equal(objs[1]!.level, 'error');
  assert.equal(objs[1]!.err, 'socket hang up');
  assert.throws(() => root.configure({ format: 'xml' as 'json' }), /unknown log format "xml"/);
});
