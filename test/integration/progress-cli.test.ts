// Progress of a real command when stderr is not a terminal: plain lines (text), or JSON records
// (--log-format json); stdout keeps only the command's result.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { cliPath, tempDir } from '../helpers/paths.js';

function simulate(dir: string, extra: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(
    process.execPath,
    [
      cliPath,
      'simulate',
      '--cells',
      '20000',
      '--genes',
      '50',
      '--out',
      path.join(dir, `atlas-${extra.length}`),
      ...extra,
    ],
    {
      encoding: 'utf8',
    },
  );
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('simulate piped: progress as log lines, then as JSON records', (t) => {
  const dir = tempDir('atlasvae-progress-');
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));

  const text = simulate(dir, []);
  assert.equal(text.status, 0, text.stderr);
  const lines = text.stderr.trim().split('\n');
  for (const l of lines) assert.match(l, /^\d\d:\d\d:\d\d (INFO |WARN ) /, `a log line: ${l}`);
  // eslint-disable-next-line no-control-regex -- the ANSI escape is what this asserts is absent
  assert.doesNotMatch(text.stderr, /\r|\x1b\[/, 'no bar redraws when stderr is not a TTY');
  assert.match(
    lines.at(-1)!,
    /^\d\d:\d\d:\d\d INFO {2}simulate done: simulate 100\.0% 20,000\/20,000 cells [\d,.]+ cells\/s ETA 0s$/,
  );
  assert.match(text.stdout, /20000 cells × 50 genes/, 'the result on stdout');
  assert.doesNotMatch(text.stdout, /cells\/s/, 'no progress on stdout');

  const json = simulate(dir, ['--log-format', 'json']);
  assert.equal(json.status, 0, json.stderr);
  const records = json.stderr
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  const done = records.at(-1)!;
  assert.equal(done.msg, 'progress done');
  assert.equal(done.task, 'simulate');
  assert.equal(done.unit, 'cells');
  assert.equal(done.step, 20000);
  assert.equal(done.totalSteps, 20000);
  assert.equal(done.percent, 100);
  assert.equal(done.etaSeconds, 0);
  assert.ok((done.cellsPerSecond as number) > 0);
});
