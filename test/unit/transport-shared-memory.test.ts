// The shared-memory parameter files (shared/transport/shared-memory.ts): what a worker reads is what
// the coordinator wrote; a file rewritten since, a torn read, another coordinator's files or a
// wrong size are refused rather than read as parameters; folders of dead coordinators are removed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ParamsFileReader, SharedMemoryFolder } from '@atlasvae/shared/transport';

function root(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'atlasvae-pf-test-'));
}

test('params files: versions alternate between two files; a reader gets exactly the written vector', () => {
  const r = root();
  const w = new SharedMemoryFolder(1000, r);
  const reader = ParamsFileReader.open(w.offer, 1000)!;
  assert.ok(reader, 'the offered files open');
  for (let v = 0; v < 5; v++) {
    const p = Float32Array.from({ length: 1000 }, (_, i) => Math.sin(i + v));
    const file = w.write(v, p);
    assert.equal(file, v % 2);
    assert.deepEqual(reader.read(v, file), p);
    if (v > 0)
      assert.equal(
        reader.read(v - 1, (v - 1) % 2)?.[5],
        Math.fround(Math.sin(5 + v - 1)),
        'the other file still holds v − 1',
      );
    assert.equal(reader.read(v + 2, file), null, 'a version not (yet) in the file is refused');
  }
  // v = 4 lives in file 0; writing v = 6 there makes v = 4 unreadable
  w.write(6, new Float32Array(1000));
  assert.equal(reader.read(4, 0), null, 'rewritten since: refused');
  assert.equal(reader.read(3, 1)?.length, 1000, 'file 1 still holds v = 3');
  reader.close();
  w.close();
  assert.equal(fs.readdirSync(r).length, 0, 'close removes the folder');
  fs.rmSync(r, { recursive: true, force: true });
});

test('params files: a torn read (rewrite begun: leading version changed) and foreign or mis-sized files are refused', () => {
  const r = root();
  const w = new SharedMemoryFolder(64, r);
  const p = new Float32Array(64).fill(3);
  const file = w.write(8, p);
  const reader = ParamsFileReader.open(w.offer, 64)!;
  assert.deepEqual(reader.read(8, file), p);
  // a rewrite to v = 10 that has written its leading version but not yet the rest
  const fd = fs.openSync(w.offer.paths[file]!, 'r+');
  const b = Buffer.alloc(8);
  b.writeDoubleLE(10, 0);
  fs.writeSync(fd, b, 0, 8, 0);
  assert.equal(reader.read(8, file), null, 'leading version moved on: torn, refused');
  assert.equal(reader.read(10, file), null, 'the trailing version is still the old one: refused');
  fs.closeSync(fd);
  assert.equal(ParamsFileReader.open(w.offer, 65), null, 'wrong size');
  assert.equal(
    ParamsFileReader.open({ ...w.offer, runId: '0'.repeat(32) }, 64),
    null,
    "another coordinator's run id",
  );
  assert.equal(ParamsFileReader.open({ ...w.offer, runId: 'not hex' }, 64), null, 'malformed run id');
  assert.equal(
    ParamsFileReader.open(
      { paths: [path.join(r, 'nope-0'), path.join(r, 'nope-1')], runId: w.offer.runId },
      64,
    ),
    null,
    'missing files',
  );
  assert.throws(() => w.write(12, new Float32Array(3)), /params of 3 floats, the files hold 64/);
  reader.close();
  w.close();
  assert.throws(() => w.write(12, p), /closed/);
  fs.rmSync(r, { recursive: true, force: true });
});

test('params files: a folder left by a coordinator that died (pid gone) is removed by the next one', () => {
  const r = root();
  // a pid that cannot be alive: beyond the kernel's pid_max
  const stale = path.join(r, 'atlasvae-params-99999999-abcdef');
  fs.mkdirSync(stale);
  fs.writeFileSync(path.join(stale, 'params-0.bin'), 'x');
  const mine = new SharedMemoryFolder(8, r);
  assert.equal(fs.existsSync(stale), false, 'stale folder removed');
  const other = new SharedMemoryFolder(8, r);
  assert.equal(fs.readdirSync(r).length, 2, "a live coordinator's folder (this pid) is kept");
  mine.close();
  other.close();
  fs.rmSync(r, { recursive: true, force: true });
});

test('result files: a worker rewrites its ring in turn; the coordinator reads exactly result seq, and refuses a rewritten or wrong one', async () => {
  const { ResultFileWriter } = await import('@atlasvae/shared/transport');
  const r = root();
  const w = new SharedMemoryFolder(16, r);
  const files = w.resultFiles(7, 3, 40);
  assert.equal(files.paths.length, 3);
  assert.ok(files.paths.every((p) => path.basename(p).startsWith('result-7-')));
  const writer = ResultFileWriter.open(files.offer, 40)!;
  assert.ok(writer, 'the worker opens the files it was given');
  assert.equal(ResultFileWriter.open(files.offer, 41), null, 'wrong size');
  assert.equal(ResultFileWriter.open({ ...files.offer, runId: 'f'.repeat(32) }, 40), null, 'wrong run id');
  const into = new Float32Array(40);
  const sent: { file: number; seq: number; data: Float32Array }[] = [];
  for (let k = 0; k < 5; k++) {
    const data = Float32Array.from({ length: 40 }, (_, i) => k * 100 + i);
    sent.push({ ...writer.write(data), data });
  }
  assert.deepEqual(
    sent.map((x) => x.seq),
    [1, 2, 3, 4, 5],
  );
  assert.deepEqual(
    sent.map((x) => x.file),
    [1, 2, 0, 1, 2],
    'a ring of 3 files',
  );
  for (const x of sent.slice(2)) {
    assert.equal(files.readInto(x.file, x.seq, into), true);
    assert.deepEqual(into, x.data);
  }
  assert.equal(
    files.readInto(sent[0]!.file, sent[0]!.seq, into),
    false,
    'result 1 was rewritten by result 4: refused',
  );
  assert.equal(files.readInto(0, 99, into), false, 'a result not in the file');
  assert.equal(files.readInto(5, 3, into), false, 'no such file');
  assert.equal(files.readInto(0, 3, new Float32Array(39)), false, 'wrong target size');
  assert.throws(() => writer.write(new Float32Array(3)), /result of 3 floats, the files hold 40/);
  writer.close();
  files.close();
  assert.equal(
    files.paths.some((p) => fs.existsSync(p)),
    false,
    "closing the coordinator's side removes the files",
  );
  w.close();
  fs.rmSync(r, { recursive: true, force: true });
});
