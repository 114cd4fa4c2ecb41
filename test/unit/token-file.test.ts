// --token-file (shared/src/protocol/token-file.ts): the token from a file its owner alone can read.
import test, { after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { readTokenFile, resolveToken } from '@atlasvae/shared/protocol';
import { tempDir } from '../helpers/paths.js';

const dir = tempDir('atlasvae-token-');
after(() => fs.rmSync(dir, { recursive: true, force: true }));

function tokenFile(name: string, content: string, mode: number): string {
  const f = path.join(dir, name);
  fs.writeFileSync(f, content);
  fs.chmodSync(f, mode);
  return f;
}

test('a 0600 or 0400 file gives its first line, without the newline', () => {
  assert.equal(readTokenFile(tokenFile('ok', 's3cret-token\n', 0o600)), 's3cret-token');
  assert.equal(readTokenFile(tokenFile('ro', 'abc', 0o400)), 'abc');
});

test('a file group or others can access is refused, as ssh refuses such a key', () => {
  for (const mode of [0o644, 0o640, 0o604, 0o660, 0o602]) {
    const f = tokenFile(`open-${mode.toString(8)}`, 'tok\n', mode);
    assert.throws(
      () => readTokenFile(f),
      new RegExp(`permissions 0${mode.toString(8)} are too open.*chmod 600`),
    );
  }
});

test('missing, empty, multi-line files and directories are refused by name', () => {
  assert.throws(
    () => readTokenFile(path.join(dir, 'absent')),
    /--token-file .*absent: cannot read it \(ENOENT\)/,
  );
  assert.throws(() => readTokenFile(tokenFile('empty', '\n', 0o600)), /the file is empty/);
  assert.throws(() => readTokenFile(tokenFile('two', 'a\nb\n', 0o600)), /single line/);
  const sub = path.join(dir, 'sub');
  fs.mkdirSync(sub, { mode: 0o700 });
  assert.throws(() => readTokenFile(sub), /not a regular file/);
});

test('precedence: --token-file, --token, $ATLASVAE_TOKEN_FILE, $ATLASVAE_TOKEN; not both flags', () => {
  const f = tokenFile('prec', 'from-file', 0o600);
  const env = { ATLASVAE_TOKEN: 'from-env' };
  assert.equal(resolveToken({ tokenFile: f }, env), 'from-file');
  assert.equal(resolveToken({ token: 'flag' }, env), 'flag');
  assert.equal(resolveToken({}, { ...env, ATLASVAE_TOKEN_FILE: f }), 'from-file');
  assert.equal(resolveToken({}, env), 'from-env');
  assert.equal(resolveToken({}, {}), undefined);
  assert.throws(() => resolveToken({ token: 'a', tokenFile: f }, {}), /give one of them/);
});
