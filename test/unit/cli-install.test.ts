// `npx atlasvae` right after `npm ci` in a fresh clone: npm links a package's bin only if the
// target exists at install time, before anything is built. So the bin must be a committed file
// (a shim that loads the compiled CLI), and the install itself builds (`prepare`). The full check
// (clone, npm ci, npx atlasvae --help) takes minutes; docs/benchmarks.md records a run of it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { repoRoot, tempDir } from '../helpers/paths.js';

function pkg(dir: string): { bin?: Record<string, string>; scripts?: Record<string, string> } {
  return JSON.parse(fs.readFileSync(path.join(repoRoot, dir, 'package.json'), 'utf8')) as ReturnType<
    typeof pkg
  >;
}

test('every atlasvae bin target is a committed, executable file (it exists when npm ci links it)', () => {
  const gitDir = path.join(repoRoot, '.git');
  const tracked = fs.existsSync(gitDir)
    ? new Set(execFileSync('git', ['ls-files'], { cwd: repoRoot, encoding: 'utf8' }).split('\n'))
    : null;
  for (const dir of ['.', 'coordinator']) {
    const target = pkg(dir).bin?.atlasvae;
    assert.ok(target, `${dir}/package.json has an atlasvae bin`);
    const rel = path.normalize(path.join(dir, target));
    assert.ok(!rel.includes(`${path.sep}dist${path.sep}`), `${rel} is not a build output`);
    assert.ok(fs.statSync(path.join(repoRoot, rel)).mode & 0o100, `${rel} is executable`);
    if (tracked) assert.ok(tracked.has(rel), `${rel} is committed`);
  }
  // and the install builds dist/ (typescript is a devDependency, installed by npm ci)
  assert.equal(pkg('.').scripts?.prepare, 'tsc -b');
});

test('the bin shim runs the CLI, and says how to build when dist/ is missing', () => {
  const shim = path.join(repoRoot, 'coordinator', pkg('coordinator').bin!.atlasvae!);
  const ok = spawnSync(process.execPath, [shim, '--help'], { encoding: 'utf8' });
  assert.equal(ok.status, 0, ok.stderr);
  assert.match(ok.stdout, /atlasvae <command> \[options\]/);

  const dir = tempDir('atlasvae-shim-');
  try {
    fs.mkdirSync(path.join(dir, 'coordinator', 'bin'), { recursive: true });
    const copy = path.join(dir, 'coordinator', 'bin', 'atlasvae.js');
    fs.copyFileSync(shim, copy);
    const r = spawnSync(process.execPath, [copy, '--help'], { encoding: 'utf8' });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /not built yet: run `npm run build`/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
