// The garbage-collector setting every atlasvae process applies (shared/runtime/gc.ts): a bad
// ATLASVAE_HEAP_GROWING_PERCENT is refused with a message naming it. What the setting buys is
// measured, not asserted: `npm run bench -- dist` reports GC per step with and without it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { tuneGarbageCollector } from '@atlasvae/shared/runtime';

const here = path.dirname(fileURLToPath(import.meta.url));
const cli = path.resolve(here, '../../../coordinator/dist/cli.js');

test('tuneGarbageCollector: refuses values that are not integers 0–10000', () => {
  assert.throws(() => tuneGarbageCollector(-1), /ATLASVAE_HEAP_GROWING_PERCENT must be an integer/);
  assert.throws(() => tuneGarbageCollector(1.5), /ATLASVAE_HEAP_GROWING_PERCENT must be an integer/);
  assert.throws(() => tuneGarbageCollector(20_000), /ATLASVAE_HEAP_GROWING_PERCENT must be an integer/);
});

test('atlasvae: a malformed ATLASVAE_HEAP_GROWING_PERCENT is a clear error, not a crash', () => {
  const r = spawnSync(process.execPath, [cli, '--help'], {
    env: { ...process.env, ATLASVAE_HEAP_GROWING_PERCENT: 'lots' },
    encoding: 'utf8',
  });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /atlasvae: ATLASVAE_HEAP_GROWING_PERCENT must be an integer 0–10000, got "lots"/);
  assert.doesNotMatch(r.stderr, /at .*\.js:\d+/, 'no stack trace');
});
