// The WebAssembly SIMD optimizer kernels against the JavaScript loops they replace: the same bits
// for the gradient sum, the parameters, both Adam moments and the squared-gradient sum, over odd
// sizes, odd chunks and extreme values; and the training state lands in the optimizer memory.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  adamStepScaled,
  initAdam,
  OptimizerMemory,
  optimizerMemoryOf,
  simdEnabled,
  simdKernelModule,
  applyStep,
  GradientAccumulator,
  initTrainingState,
  inOptimizerMemory,
} from '@atlasvae/shared/train';
import { defaultModelConfig, defaultTrainConfig } from '@atlasvae/shared';
import { bufferLayout, paramLayout, type MicrobatchGradient } from '@atlasvae/shared/model';

function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32) * 2 - 1;
}

/** float32 values spanning magnitudes, with zeros, subnormals and values near float32 rounding ties */
function awkward(n: number, rnd: () => number): Float32Array {
  return Float32Array.from({ length: n }, (_, i) => {
    switch (i % 9) {
      case 0:
        return 0;
      case 1:
        return 1e-40 * rnd(); // subnormal
      case 2:
        return 1 + 2 ** -24 * rnd();
      case 3:
        return rnd() * 1e6;
      default:
        return rnd() * 10 ** ((i % 7) - 4);
    }
  });
}

/** first index where two arrays differ in bits, or -1 */
function firstDifference(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return 0;
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) return i;
  return -1;
}

test('WebAssembly SIMD is available on this engine (otherwise the optimizer silently uses the JS loops)', () => {
  assert.ok(simdKernelModule(), 'the SIMD kernel module compiles and validates');
  assert.ok(OptimizerMemory.create(10));
});

test('SIMD gradient sum and Adam: the same bits as the JavaScript loops, any size and chunk', () => {
  const cfg = { lr: 1e-3, eps: 1e-8, weightDecay: 1e-6 };
  for (const n of [1, 2, 3, 8, 1001, 70_001]) {
    for (const chunk of [undefined, 1, 7, 64, 65_537]) {
      const rnd = lcg(n * 31 + (chunk ?? 0));
      const p0 = awkward(n, rnd);
      const mem = OptimizerMemory.create(n)!;
      mem.params.set(p0);
      const simdState = { m: mem.m, v: mem.v, t: 0 };
      const js = { p: p0.slice(), adam: initAdam(n), sum: new Float64Array(n) };
      for (let step = 0; step < 3; step++) {
        const grads = [0, 1, 2, 3].map(() => awkward(n, rnd).map((x) => x * 7));
        js.sum.set(grads[0]!);
        mem.sum.set(grads[0]!);
        for (const g of grads.slice(1)) {
          for (let i = 0; i < n; i++) js.sum[i]! += g[i]!;
          mem.addToSum(g);
        }
        assert.equal(firstDifference(mem.sum, js.sum), -1, `n ${n}: gradient sum`);
        const onChunk = chunk === undefined ? undefined : (): void => undefined;
        const sqJs = adamStepScaled(js.p, js.sum, 1 / 300, js.adam, cfg, onChunk, chunk);
        const sqSimd = adamStepScaled(mem.params, mem.sum, 1 / 300, simdState, cfg, onChunk, chunk);
        const what = `n ${n}, chunk ${chunk}, step ${step}`;
        assert.equal(firstDifference(mem.params, js.p), -1, `${what}: parameters`);
        assert.equal(firstDifference(mem.m, js.adam.m), -1, `${what}: first moments`);
        assert.equal(firstDifference(mem.v, js.adam.v), -1, `${what}: second moments`);
        assert.ok(Object.is(sqSimd, sqJs), `${what}: squared-gradient sum ${sqSimd} vs ${sqJs}`);
      }
    }
  }
});

test('Adam does not touch memory outside the elements it was given (kernel bounds)', () => {
  const n = 10;
  const mem = OptimizerMemory.create(n)!;
  mem.staging.fill(123);
  mem.sqLanes.fill(0);
  mem.sum.fill(1);
  const state = { m: mem.m, v: mem.v, t: 0 };
  adamStepScaled(mem.params, mem.sum, 1, state, { lr: 0.1, eps: 1e-8, weightDecay: 0 });
  assert.ok(
    mem.params.every((x) => Math.abs(x + 0.1) < 1e-6),
    'every parameter moved by lr',
  );
  assert.ok(
    mem.staging.every((x) => x === 123),
    'staging untouched',
  );
  assert.throws(() => mem.addToSum(new Float32Array(n + 1)), /gradient of 11 floats, the optimizer has 10/);
});

test('training state in optimizer memory: fresh states live there; applyStep gives the bits of plain arrays', () => {
  const mc = { ...defaultModelConfig(40, 2), nHidden: 16, nLatent: 4 };
  const tc = defaultTrainConfig(1000, { globalBatch: 128, microbatch: 64, seed: 1 });
  const size = paramLayout(mc).size,
    bsize = bufferLayout(mc).size;
  const a = initTrainingState(mc, 5);
  assert.ok(optimizerMemoryOf(a.params), 'initTrainingState places the parameters in optimizer memory');
  // the same state in plain arrays: the JavaScript loops
  const b = { ...a, params: a.params.slice(), adam: { m: a.adam.m.slice(), v: a.adam.v.slice(), t: 0 } };
  assert.equal(optimizerMemoryOf(b.params), undefined);
  const rnd = lcg(9);
  for (let step = 0; step < 4; step++) {
    const rs: MicrobatchGradient[] = [64, 64, 3].map((nCells) => ({
      grad: Float32Array.from({ length: size }, () => rnd() * 50),
      nCells,
      reconstructionSum: 1,
      klSum: 1,
      lossSum: 2,
      bnStats: Float32Array.from({ length: bsize }, () => rnd()),
    }));
    const sa = applyStep(a, rs, tc, mc);
    const sb = applyStep(b, rs, tc, mc);
    assert.equal(firstDifference(a.params, b.params), -1, `step ${step}: parameters`);
    assert.equal(firstDifference(a.adam.v, b.adam.v), -1, `step ${step}: second moments`);
    assert.ok(Object.is(sa.gradNorm, sb.gradNorm));
  }
  assert.equal(
    GradientAccumulator.for(a),
    GradientAccumulator.for(a),
    'one accumulator per optimizer memory',
  );
  assert.notEqual(GradientAccumulator.for(a), GradientAccumulator.for(b));
  // placing copies values, and placing again is a no-op
  const placed = inOptimizerMemory(b);
  assert.ok(optimizerMemoryOf(placed.params));
  assert.deepEqual(Array.from(placed.params), Array.from(b.params));
  assert.deepEqual(Array.from(placed.adam.m), Array.from(b.adam.m));
  assert.equal(placed.adam.t, b.adam.t);
  assert.equal(inOptimizerMemory(placed), placed);
});

test('ATLASVAE_SIMD: 0 keeps plain arrays (the JS loops, the same bits); anything but 0/1 is a clear error', () => {
  assert.equal(simdEnabled(undefined), true);
  assert.equal(simdEnabled('1'), true);
  assert.equal(simdEnabled('0'), false);
  assert.throws(() => simdEnabled('yes'), /ATLASVAE_SIMD must be 0 \(JavaScript loops\) or 1 .*got "yes"/);
  const saved = process.env.ATLASVAE_SIMD;
  try {
    process.env.ATLASVAE_SIMD = '0';
    assert.equal(OptimizerMemory.create(10), null);
    const mc = { ...defaultModelConfig(40, 2), nHidden: 16, nLatent: 4 };
    assert.equal(optimizerMemoryOf(initTrainingState(mc, 1).params), undefined);
  } finally {
    if (saved === undefined) delete process.env.ATLASVAE_SIMD;
    else process.env.ATLASVAE_SIMD = saved;
  }
});
