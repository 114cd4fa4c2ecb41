import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { cliPath } from '../helpers/paths.js';

const COMMANDS = [
  'demo',
  'simulate',
  'prepare',
  'train-local',
  'train',
  'coordinator',
  'worker',
  'embed',
  'normalize',
  'evaluate',
  'umap',
];

test('atlasvae --help lists every subcommand, each with an example', () => {
  const help = execFileSync(process.execPath, [cliPath, '--help'], {
    encoding: 'utf8',
    env: { ...process.env, COLUMNS: '400' },
  });
  const [commands, examples] = help.split('Examples:') as [string, string];
  assert.ok(examples, 'an Examples section');
  for (const c of COMMANDS) {
    assert.match(commands, new RegExp(`atlasvae ${c}\\b`), `command ${c} listed`);
    assert.match(examples, new RegExp(`atlasvae ${c} `), `example for ${c}`);
  }
});

test('no command or an unknown one: usage error, exit code 2', () => {
  for (const args of [[], ['trian']]) {
    const r = spawnSync(process.execPath, [cliPath, ...args], { encoding: 'utf8' });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /atlasvae --help/);
  }
});

test('help wraps at word boundaries when stdout is not a terminal', () => {
  // each long description must come out with its words whole (the ES module build of yargs' layout cut them)
  const help = execFileSync(process.execPath, [cliPath, 'train', '--help'], { encoding: 'utf8' });
  const lines = help.split('\n');
  assert.ok(
    lines.some((l) => l.length > 90),
    'the text is wrapped at ~110 columns, not 80',
  );
  const text = help.replace(/\s+/g, ' ');
  for (const phrase of [
    'the plan position is checkpointed)',
    'one JSON object per line for cluster log collectors (json)',
    'a step is split into microbatches of about this size',
  ]) {
    assert.ok(text.includes(phrase), `"${phrase}" in one piece:\n${help}`);
  }
});
