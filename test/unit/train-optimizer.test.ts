// Adam (torch.optim.Adam semantics) against a hand-computed two-step example, and the merging of
// microbatch BatchNorm statistics into the running statistics by applyStep.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { adamStep, adamStepScaled, initAdam, applyStep, initTrainingState } from '@atlasvae/shared/train';
import { defaultModelConfig, defaultTrainConfig } from '@atlasvae/shared';
import { bufferLayout, paramLayout, type MicrobatchGradient } from '@atlasvae/shared/model';

function near(a: number, b: number, tol: number, what: string): void {
  assert.ok(Math.abs(a - b) <= tol, `${what}: ${a} vs ${b}`);
}

test('Adam: bias correction, eps outside the sqrt, coupled L2 weight decay (two steps by hand)', () => {
  const p = Float32Array.from([1, -2]);
  const s = initAdam(2);
  const cfg = { lr: 0.1, eps: 0.01, weightDecay: 0.1 };
  // step 1: g' = g + wd·p = (0.6, −0.1); m̂ = g', v̂ = g'²; p −= lr·m̂/(|g'| + eps)
  adamStep(p, [0.5, 0.1], s, cfg);
  near(p[0]!, 1 - 0.06 / 0.61, 1e-6, 'p0 after step 1');
  near(p[1]!, -2 + 0.01 / 0.11, 1e-6, 'p1 after step 1');
  near(s.m[0]!, 0.06, 1e-8, 'm0');
  near(s.v[1]!, 1e-5, 1e-10, 'v1');
  // step 2 (values from numpy with the same formulas)
  adamStep(p, [0.5, 0.1], s, cfg);
  near(p[0]!, 0.80333769, 1e-6, 'p0 after step 2');
  near(p[1]!, -1.8188911, 1e-6, 'p1 after step 2');
  near(s.m[0]!, 0.11301639, 1e-7, 'm0 after step 2');
  near(s.v[0]!, 7.07933469e-4, 1e-9, 'v0 after step 2');
  assert.equal(s.t, 2);
});

test('Adam on a float64 sum scaled by 1 / cells equals Adam on the mean gradient', () => {
  const p1 = Float32Array.from([0.3, -1, 2, 0.01]);
  const p2 = p1.slice();
  const s1 = initAdam(4);
  const s2 = initAdam(4);
  const cfg = { lr: 1e-2, eps: 0.01, weightDecay: 1e-3 };
  const partial = Float64Array.from([1, -2, 0.5, 4]);
  const last = Float32Array.from([0.5, 1, -0.25, 2]);
  for (let t = 0; t < 3; t++) {
    adamStep(
      p1,
      Array.from(partial, (v, i) => (v + last[i]!) / 8),
      s1,
      cfg,
    );
    const sq = adamStepScaled(
      p2,
      Float64Array.from(partial, (v, i) => v + last[i]!),
      1 / 8,
      s2,
      cfg,
    );
    near(
      sq,
      partial.reduce((a, v, i) => a + ((v + last[i]!) / 8) ** 2, 0),
      1e-12,
      'squared norm',
    );
  }
  assert.deepEqual(p2, p1);
  assert.deepEqual(s2.v, s1.v);
});

test('applyStep: gradients summed over microbatches and divided by total cells; BN statistics folded in microbatch order', () => {
  const mc = defaultModelConfig(20, 2, { nHidden: 4, nLatent: 2 });
  const tc = defaultTrainConfig(100, { lr: 0.01, weightDecay: 0 });
  const size = paramLayout(mc).size;
  const bsize = bufferLayout(mc).size;
  const mk = (n: number, g: number, stat: number): MicrobatchGradient => ({
    grad: new Float32Array(size).fill(g),
    nCells: n,
    reconstructionSum: 10 * n,
    klSum: n,
    lossSum: 10.5 * n,
    bnStats: new Float32Array(bsize).fill(stat),
  });
  const a = initTrainingState(mc, 3);
  const b = initTrainingState(mc, 3);
  const before = a.params.slice();
  const summary = applyStep(a, [mk(3, 2, 5), mk(1, 6, 9)], tc, mc);
  // microbatch gradients are sums over their cells: mean gradient = (2 + 6)/4 = 2 for every parameter
  applyStep(b, [mk(4, 8, 0)], tc, mc);
  assert.deepEqual(a.params, b.params, 'same as one microbatch carrying the mean gradient');
  assert.notDeepEqual(a.params, before);
  near(summary.gradNorm, 2 * Math.sqrt(size), 1e-3, 'gradient norm of the mean gradient');
  assert.equal(summary.cells, 4);
  near(summary.loss, 10.5, 1e-12, 'mean loss');
  near(summary.reconstruction, 10, 1e-12, 'mean reconstruction');
  assert.equal(a.globalStep, 1);
  assert.equal(a.stepInEpoch, 1);
  // running_mean starts at 0: (1−m)·((1−m)·0 + m·5) + m·9 ; running_var starts at 1
  const m = mc.bnMomentum;
  near(a.buffers[0]!, (1 - m) * (m * 5) + m * 9, 1e-7, 'running_mean');
  near(a.buffers[mc.nHidden]!, (1 - m) * ((1 - m) * 1 + m * 5) + m * 9, 1e-7, 'running_var');
  // order matters: the other order gives another result
  const c = initTrainingState(mc, 3);
  applyStep(c, [mk(1, 6, 9), mk(3, 2, 5)], tc, mc);
  assert.notEqual(c.buffers[0], a.buffers[0]);
});

test("GradientAccumulator + applyAccumulated (the coordinator's in-order summing) is bit-identical to applyStep", async () => {
  const { GradientAccumulator, applyAccumulated } = await import('@atlasvae/shared/train');
  const mc = defaultModelConfig(30, 2, { nHidden: 8, nLatent: 3 });
  const tc = defaultTrainConfig(100, { lr: 0.01 });
  const size = paramLayout(mc).size;
  const bsize = bufferLayout(mc).size;
  let s = 12345;
  const rnd = (): number => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32) * 2 - 1;
  const mk = (n: number): MicrobatchGradient => ({
    grad: Float32Array.from({ length: size }, () => rnd() * 100),
    nCells: n,
    reconstructionSum: rnd() * 1000,
    klSum: rnd() * 10,
    lossSum: rnd() * 1000,
    bnStats: Float32Array.from({ length: bsize }, () => rnd()),
  });
  const a = initTrainingState(mc, 1);
  const b = initTrainingState(mc, 1);
  const acc = new GradientAccumulator(size);
  for (let step = 0; step < 3; step++) {
    const rs = [mk(43), mk(43), mk(42)];
    const sa = applyStep(a, rs, tc, mc);
    acc.reset();
    for (const r of rs) acc.add(r);
    const sb = applyAccumulated(b, acc, tc, mc);
    assert.deepEqual(b.params, a.params, `parameters after step ${step}`);
    assert.deepEqual(b.buffers, a.buffers, `BatchNorm statistics after step ${step}`);
    assert.deepEqual(b.adam.m, a.adam.m);
    assert.deepEqual(b.adam.v, a.adam.v);
    assert.equal(sb.loss, sa.loss);
    assert.equal(sb.gradNorm, sa.gradNorm);
    assert.equal(acc.count, 3);
    assert.equal(acc.cells, 128);
  }
  assert.throws(() => acc.add({ ...mk(1), grad: new Float32Array(3) }), /gradient of 3 floats/);
});

test('Adam in ranges (onChunk): the same parameters, moments and gradient norm to the bit; ranges in order, covering all', () => {
  const n = 1003;
  const base = Float32Array.from({ length: n }, (_, i) => Math.cos(i) * 0.3);
  const sum = Float64Array.from({ length: n }, (_, i) => Math.sin(i * 1.7) * 40);
  const cfg = { lr: 1e-3, eps: 0.01, weightDecay: 1e-6 };
  const ref = { p: base.slice(), s: initAdam(n) };
  const sqRef = [0, 1, 2].map(() => adamStepScaled(ref.p, sum, 1 / 256, ref.s, cfg));
  for (const chunk of [1, 7, 500, n, 5000]) {
    const p = base.slice();
    const s = initAdam(n);
    const sq: number[] = [];
    for (let step = 0; step < 3; step++) {
      const seen: [number, number][] = [];
      const streamed = new Float32Array(n);
      sq.push(
        adamStepScaled(
          p,
          sum,
          1 / 256,
          s,
          cfg,
          (a, b) => {
            seen.push([a, b]);
            streamed.set(p.subarray(a, b), a); // what the coordinator sends at this moment
          },
          chunk,
        ),
      );
      assert.deepEqual(streamed, p, `chunk ${chunk}: each range was final when handed over`);
      let next = 0;
      for (const [a, b] of seen) {
        assert.equal(a, next, `chunk ${chunk}: ranges in order without gaps`);
        assert.ok(b > a && b - a <= chunk);
        next = b;
      }
      assert.equal(next, n, `chunk ${chunk}: ranges cover every parameter`);
    }
    assert.deepEqual(p, ref.p, `chunk ${chunk}: parameters`);
    assert.deepEqual(s.m, ref.s.m, `chunk ${chunk}: first moments`);
    assert.deepEqual(s.v, ref.s.v, `chunk ${chunk}: second moments`);
    assert.equal(s.t, 3);
    assert.deepEqual(sq, sqRef, `chunk ${chunk}: squared-gradient sums`);
  }
  assert.throws(
    () => adamStepScaled(base.slice(), sum, 1, initAdam(n), cfg, () => undefined, 0),
    /chunk must be at least 1/,
  );
});
