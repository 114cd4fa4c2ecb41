import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  encodeFrame,
  decodeFrame,
  payloadAsFloat32,
  FrameError,
  MAX_HEADER_BYTES,
  parseWorkerMessage,
  parseCoordinatorMessage,
  ProtocolError,
  PROTOCOL_VERSION,
  tokenChecker,
  bearer,
} from '@atlasvae/shared/protocol';
import { Rng } from '@atlasvae/shared';

const sizes = { paramLength: 1000, bnLength: 8 };

test('a result frame round-trips: header, and the gradient as an aligned Float32 view', () => {
  const grad = new Float32Array(1000).map((_, i) => i * 0.5 - 3);
  const bn = new Float32Array(8).fill(2);
  const hdr = {
    type: 'result',
    version: 7,
    step: 7,
    microbatch: 2,
    nCells: 128,
    reconstructionSum: 1.5,
    klSum: 0.25,
    lossSum: 1.6,
    computeMs: 3,
    gradLength: 1000,
    bnLength: 8,
  };
  const frame = encodeFrame(hdr, grad, bn);
  const { header, payload } = decodeFrame(frame);
  const msg = parseWorkerMessage(header, payload.byteLength, sizes);
  assert.equal(msg.type, 'result');
  assert.deepEqual(header, hdr);
  const f = payloadAsFloat32(payload);
  assert.equal(f.buffer, frame.buffer, 'payload is viewed in place, not copied');
  assert.deepEqual(f.subarray(0, 1000), grad);
  assert.deepEqual(f.subarray(1000), bn);
  // an unaligned copy of the same bytes still decodes (with one copy)
  const shifted = new Uint8Array(frame.byteLength + 1);
  shifted.set(frame, 1);
  const d2 = decodeFrame(shifted.subarray(1));
  assert.deepEqual(payloadAsFloat32(d2.payload).subarray(0, 1000), grad);
});

test('malformed frames and messages are refused with a reason', () => {
  assert.throws(() => decodeFrame(new Uint8Array(3)), FrameError);
  const big = Buffer.alloc(16);
  big.writeUInt32LE(MAX_HEADER_BYTES + 1, 0);
  assert.throws(() => decodeFrame(big), /out of range/);
  const over = Buffer.alloc(16);
  over.writeUInt32LE(100, 0);
  assert.throws(() => decodeFrame(over), /exceeds/);
  const notMsgpack = Buffer.from([4, 0, 0, 0, 0xc1, 0xc1, 0xc1, 0xc1]);
  assert.throws(() => decodeFrame(notMsgpack), FrameError);
  const bad = (h: unknown, n = 0): RegExp | void =>
    void assert.throws(() => parseWorkerMessage(h, n, sizes), ProtocolError);
  bad(null);
  bad([1, 2]);
  bad({ type: 'nope' });
  bad({ type: 'welcome' });
  bad({ type: 'hello', protocol: PROTOCOL_VERSION, backend: 'wasm', name: 'x' }); // pid missing
  bad({ type: 'hello', protocol: -1, backend: 'wasm', name: 'x', pid: 1 });
  bad({ type: 'hello', protocol: 1, backend: 'x'.repeat(5000), name: 'x', pid: 1 });
  bad({ type: 'hello', protocol: 1, backend: 'wasm', name: 'x', pid: 1 }, 4); // unexpected payload
  const r = {
    type: 'result',
    version: 1,
    step: 1,
    microbatch: 0,
    nCells: 5,
    reconstructionSum: 1,
    klSum: 1,
    lossSum: 1,
    computeMs: 1,
    gradLength: 1000,
    bnLength: 8,
  };
  assert.equal(parseWorkerMessage(r, 4 * 1008, sizes).type, 'result');
  bad(r, 4 * 1007); // wrong payload size
  bad({ ...r, gradLength: 999 }, 4 * 1007);
  bad({ ...r, nCells: 0 }, 4 * 1008);
  bad({ ...r, version: 1.5 }, 4 * 1008);
  bad({ ...r, lossSum: 'x' }, 4 * 1008);
  assert.throws(() => parseCoordinatorMessage({ type: 'params', version: 1 }, 4000, null), /before welcome/);
  assert.throws(() => parseCoordinatorMessage({ type: 'params', version: 1 }, 3996, sizes), /expected 4000/);
});

test('random bytes never decode into a valid message', () => {
  const rng = new Rng(42);
  for (let i = 0; i < 2000; i++) {
    const n = 1 + rng.int(200);
    const b = new Uint8Array(n);
    for (let j = 0; j < n; j++) b[j] = rng.int(256);
    if (i % 2 === 0 && n >= 4) new DataView(b.buffer).setUint32(0, rng.int(n), true);
    try {
      const { header, payload } = decodeFrame(b);
      parseWorkerMessage(header, payload.byteLength, sizes);
      assert.fail('random bytes were accepted');
    } catch (e) {
      assert.ok(e instanceof FrameError || e instanceof ProtocolError, String(e));
    }
  }
});

test('token check: right token passes, anything else fails', () => {
  const check = tokenChecker('s3cret');
  assert.equal(check(bearer('s3cret')), true);
  assert.equal(check(bearer('s3cre')), false);
  assert.equal(check('s3cret'), false);
  assert.equal(check(undefined), false);
  assert.equal(check(bearer('')), false);
});

test('a frame sent in parts is byte-identical to the single-buffer frame', async () => {
  const { encodeFrameParts } = await import('@atlasvae/shared/protocol');
  const grad = new Float32Array([1, 2, 3]);
  const bn = new Float32Array([4]);
  const h = { type: 'params', version: 3 };
  const parts = encodeFrameParts(h, grad, bn);
  assert.deepEqual(Buffer.concat(parts), encodeFrame(h, grad, bn));
  assert.equal(parts[1]!.buffer, grad.buffer, 'the payload is not copied');
});

test('ReusableFrame: same bytes as encodeFrame; reuses its buffer only when told the last frame was flushed', async () => {
  const { ReusableFrame } = await import('@atlasvae/shared/protocol');
  const w = new ReusableFrame();
  const p1 = new Float32Array([1, 2, 3, 4]);
  const f1 = w.encode(true, { type: 'params', version: 1 }, p1);
  assert.deepEqual(f1, encodeFrame({ type: 'params', version: 1 }, p1));
  const f2 = w.encode(true, { type: 'params', version: 2 }, new Float32Array([5, 6, 7, 8]));
  assert.equal(f2.buffer, f1.buffer, 'flushed: the buffer is reused');
  assert.deepEqual(f2, encodeFrame({ type: 'params', version: 2 }, new Float32Array([5, 6, 7, 8])));
  const f3 = w.encode(false, { type: 'params', version: 3 }, p1);
  assert.notEqual(f3.buffer, f2.buffer, 'still queued somewhere: a fresh buffer');
  assert.deepEqual(
    f2,
    encodeFrame({ type: 'params', version: 2 }, new Float32Array([5, 6, 7, 8])),
    'the queued frame is untouched',
  );
  const big = new Float32Array(1000).fill(9);
  const f4 = w.encode(true, { type: 'params', version: 4 }, big);
  assert.deepEqual(f4, encodeFrame({ type: 'params', version: 4 }, big), 'grows when the frame does not fit');
  const { header, payload } = decodeFrame(f4);
  assert.deepEqual(header, { type: 'params', version: 4 });
  assert.equal(payloadAsFloat32(payload)[999], 9);
});

test('ReusableFrame.begin: a payload filled in place, range by range, makes the same bytes as encodeFrame', async () => {
  const { ReusableFrame } = await import('@atlasvae/shared/protocol');
  const w = new ReusableFrame();
  const params = new Float32Array(1001).map((_, i) => Math.sin(i));
  const stale = w.encode(true, { type: 'params', version: 1 }, new Float32Array(1001).fill(7));
  const { frame, payloadStart } = w.begin(true, { type: 'params', version: 2 }, 4 * params.length);
  assert.equal(frame.buffer, stale.buffer, 'reuses the flushed buffer');
  assert.equal((frame.byteOffset + payloadStart) % 8, 0, 'the payload is 8-byte aligned');
  const view = new Float32Array(frame.buffer, frame.byteOffset + payloadStart, params.length);
  for (let s = 0; s < params.length; s += 300)
    view.set(params.subarray(s, Math.min(params.length, s + 300)), s);
  assert.deepEqual(frame, encodeFrame({ type: 'params', version: 2 }, params));
  const fresh = w.begin(false, { type: 'params', version: 3 }, 8);
  assert.notEqual(fresh.frame.buffer, frame.buffer, 'not flushed: a fresh buffer');
});

test('PayloadFirstFrame: a payload written before its header makes the same bytes as encodeFrame, in place', async () => {
  const { PayloadFirstFrame } = await import('@atlasvae/shared/protocol');
  const w = new PayloadFirstFrame();
  const values = new Float32Array(1008).map((_, i) => i / 7 - 3);
  const headers = [
    {
      type: 'result',
      version: 1,
      step: 1,
      microbatch: 0,
      nCells: 128,
      reconstructionSum: 1.5,
      klSum: 0.25,
      lossSum: 1.6,
      computeMs: 3,
      gradLength: 1000,
      bnLength: 8,
    },
    {
      type: 'result',
      version: 123456789,
      step: 123456789,
      microbatch: 77,
      nCells: 3,
      reconstructionSum: Math.PI * 1e9,
      klSum: -0.1,
      lossSum: 1e-30,
      computeMs: 12.345678,
      gradLength: 1000,
      bnLength: 8,
    },
    { type: 'result', pad: 'x'.repeat(300) },
  ];
  let last: Buffer | null = null;
  for (const h of headers) {
    const p = w.payload(true, values.length);
    p.set(values);
    const frame = w.finish(h);
    assert.deepEqual(frame, encodeFrame(h, values), 'same bytes as encodeFrame');
    assert.equal(frame.byteOffset % 8, 0, 'aligned');
    if (last) assert.equal(frame.buffer, last.buffer, 'the flushed buffer is reused');
    last = frame;
    const { header, payload } = decodeFrame(frame);
    assert.deepEqual(header, h);
    assert.equal(
      payloadAsFloat32(payload).buffer,
      frame.buffer,
      'the payload was written in place, not copied',
    );
  }
  const p = w.payload(false, 4);
  p.set([1, 2, 3, 4]);
  const fresh = w.finish({ type: 'params', version: 9 });
  assert.notEqual(fresh.buffer, last!.buffer, 'still queued: a fresh buffer');
  const huge = { type: 'result', pad: 'y'.repeat(2000) };
  w.payload(true, 4).set([5, 6, 7, 8]);
  assert.deepEqual(
    w.finish(huge),
    encodeFrame(huge, new Float32Array([5, 6, 7, 8])),
    'a header beyond the reserved room falls back to a copy',
  );
});

test('shared-memory parameter messages are validated: welcome.paramsFiles, params.file without payload, paramsFilesReady', () => {
  const welcome = {
    type: 'welcome',
    protocol: PROTOCOL_VERSION,
    workerId: 1,
    modelConfig: {},
    seed: 0,
    paramLength: 1000,
    bnLength: 8,
    maxWorkBytes: 10,
  };
  const offer = { paths: ['/dev/shm/a/params-0.bin', '/dev/shm/a/params-1.bin'], runId: 'ab'.repeat(16) };
  assert.equal(parseCoordinatorMessage({ ...welcome, paramsFiles: offer }, 0, null).type, 'welcome');
  for (const bad of [
    { paths: ['x'], runId: offer.runId },
    { paths: offer.paths, runId: 'xyz' },
    { paths: [1, 2], runId: offer.runId },
    'files',
  ]) {
    assert.throws(
      () => parseCoordinatorMessage({ ...welcome, paramsFiles: bad }, 0, null),
      /welcome.paramsFiles must be/,
    );
  }
  assert.equal(parseCoordinatorMessage({ type: 'params', version: 3, file: 1 }, 0, sizes).type, 'params');
  assert.throws(
    () => parseCoordinatorMessage({ type: 'params', version: 3, file: 2 }, 0, sizes),
    /params.file must be 0 or 1/,
  );
  assert.throws(
    () => parseCoordinatorMessage({ type: 'params', version: 3, file: 0 }, 4000, sizes),
    /params from a file carries an unexpected payload/,
  );
  assert.throws(
    () => parseCoordinatorMessage({ type: 'params', version: 3 }, 0, sizes),
    /params payload is 0 bytes, expected 4000/,
  );
  assert.equal(parseWorkerMessage({ type: 'paramsFilesReady' }, 0, sizes).type, 'paramsFilesReady');
  const result = {
    type: 'result',
    version: 7,
    step: 7,
    microbatch: 2,
    nCells: 128,
    reconstructionSum: 1.5,
    klSum: 0.25,
    lossSum: 1.6,
    computeMs: 3,
    gradLength: 1000,
    bnLength: 8,
  };
  assert.equal(parseWorkerMessage({ ...result, file: 2, seq: 9 }, 0, sizes).type, 'result');
  assert.throws(
    () => parseWorkerMessage({ ...result, file: 2, seq: 9 }, 4032, sizes),
    /result from a file carries an unexpected payload/,
  );
  assert.throws(
    () => parseWorkerMessage({ ...result, file: 8, seq: 9 }, 0, sizes),
    /result.file must be an integer 0–7/,
  );
  assert.throws(
    () => parseWorkerMessage({ ...result, file: 1 }, 0, sizes),
    /result.seq must be a positive integer/,
  );
  assert.throws(() => parseWorkerMessage({ ...result, seq: 3 }, 0, sizes), /result.file must be an integer/);
  assert.equal(
    parseCoordinatorMessage(
      { type: 'resultFiles', paths: ['/dev/shm/a/result-1-0.bin'], runId: offer.runId },
      0,
      sizes,
    ).type,
    'resultFiles',
  );
  assert.throws(
    () => parseCoordinatorMessage({ type: 'resultFiles', paths: [], runId: offer.runId }, 0, sizes),
    /resultFiles must be/,
  );
  assert.throws(
    () => parseCoordinatorMessage({ type: 'resultFiles', paths: ['x'], runId: 'nope' }, 0, sizes),
    /resultFiles must be/,
  );
  assert.throws(
    () => parseCoordinatorMessage({ type: 'resultFiles', paths: ['x'], runId: offer.runId }, 0, null),
    /resultFiles before welcome/,
  );
  assert.throws(
    () => parseWorkerMessage({ type: 'paramsFilesReady' }, 16, sizes),
    /unexpected 16-byte payload/,
  );
});
