// The device engine (worker/src/device/engine.ts: Arrow microbatches → DeviceModel, noise from
// (seed, step, microbatch)) against the JS engine (worker/src/model-engine.ts) on real kang_example
// microbatches, groups of k = 1 and k = 8 (the last one ragged): the same summed gradient, BatchNorm
// statistics and loss terms to 1e-4 relative, on the cpu backend and on webgpu (the test bed of
// test/helpers/webgpu.ts; skipped with a message when no WebGPU adapter can be created). The JS
// engine's reference runs on cpu first: it reads products back synchronously, which webgpu cannot.
// Inference on the fleet (encode, evaluate, marginal, normalize) likewise, to 1e-4 relative.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { defaultModelConfig, type ModelConfig } from '@atlasvae/shared';
import { initBackend } from '@atlasvae/shared/backend';
import { encodeCellBatch } from '@atlasvae/shared/arrow';
import { paramLayout, type InferOutput, type InferRequest } from '@atlasvae/shared/model';
import { openDataset } from '@atlasvae/coordinator/data';
import { ModelEngine, type GroupGradient, type WorkItem } from '@atlasvae/worker';
import { DeviceEngine } from '@atlasvae/worker/device';
import { skipUnlessShared, tempDir } from '../helpers/paths.js';
import { webgpuEnv, webgpuTestBed } from '../helpers/webgpu.js';
import { prepareKang } from './kang-reference.js';

const KANG = 'data/kang_example_sce_1556';
const skipData = skipUnlessShared(KANG, 'labels.tsv');
const webgpuSkip = skipData || webgpuTestBed().skip;
if (webgpuSkip && !skipData) console.log(`  webgpu skipped: ${webgpuSkip}`);
const SEED = 13;

let dir = '';
let cfgs: { name: string; cfg: ModelConfig }[] = [];
/** 8 microbatches of one step (128 cells each, the last 77) as Arrow bytes */
let items: WorkItem[] = [];
let params = new Map<string, Float32Array>();
/** the JS engine's result per configuration and group size, computed on cpu */
const reference = new Map<string, GroupGradient>();
const REQUESTS: InferRequest[] = [
  { op: 'encode', seed: 5, chunk: 0, noiseEpoch: -1, samples: 0, transformBatch: -1, genes: null },
  { op: 'evaluate', seed: 5, chunk: 2, noiseEpoch: 1, samples: 0, transformBatch: -1, genes: null },
  { op: 'marginal', seed: 5, chunk: 3, noiseEpoch: -1, samples: 4, transformBatch: -1, genes: null },
  {
    op: 'normalize',
    seed: 5,
    chunk: 1,
    noiseEpoch: -1,
    samples: 2,
    transformBatch: 1,
    genes: Int32Array.from([0, 7, 100, 999]),
  },
];
/** the JS engine's inference answers per configuration and op, on microbatch 7 with BatchNorm buffers from microbatch 0 */
const inferReference = new Map<string, InferOutput>();
const buffers = new Map<string, Float32Array>();

before(async () => {
  if (skipData) return;
  dir = tempDir('atlasvae-device-engine-');
  const data = await prepareKang(dir);
  const ds = await openDataset(data);
  const base = defaultModelConfig(ds.manifest.nGenes, ds.manifest.batchCategories.length);
  cfgs = [
    { name: 'nb, gene dispersion, dropout', cfg: base },
    {
      name: 'zinb, gene-batch dispersion, 2 layers',
      cfg: { ...base, likelihood: 'zinb', dispersion: 'gene-batch', nLayers: 2 },
    },
  ];
  const sizes = [128, 128, 128, 128, 128, 128, 128, 77];
  let at = 0;
  items = [];
  for (let k = 0; k < sizes.length; k++) {
    const cells = ds.train.subarray(at, at + sizes[k]!);
    at += sizes[k]!;
    const batch = await ds.source.getCells(cells);
    items.push({
      step: 3,
      epoch: 1,
      microbatch: k,
      nCells: batch.nCells,
      klWeight: 0.5,
      arrow: encodeCellBatch(batch),
    });
  }
  await ds.close();
  // parameters away from initialisation (a deterministic perturbation), the same for both engines
  params = new Map(
    cfgs.map(({ name, cfg }) => {
      const p = new Float32Array(paramLayout(cfg).size);
      for (let i = 0; i < p.length; i++) p[i] = 0.05 * Math.sin(0.37 * i + 1);
      return [name, p];
    }),
  );
  await initBackend('cpu', () => undefined);
  const js = await ModelEngine.create('cpu', () => undefined);
  for (const { name, cfg } of cfgs) {
    const p = paramLayout(cfg).size;
    await js.configure(cfg, SEED, p, 4 * cfg.nHidden * cfg.nLayers);
    js.setParams(params.get(name)!);
    reference.set(`${name}/1`, await js.gradientGroup(items.slice(0, 1)));
    reference.set(`${name}/8`, await js.gradientGroup(items));
    // running statistics = microbatch 0's batch statistics (means, positive variances)
    buffers.set(name, reference.get(`${name}/1`)!.microbatches[0]!.bnStats.slice());
    js.setBuffers(buffers.get(name)!);
    for (const req of REQUESTS)
      inferReference.set(`${name}/${req.op}`, js.infer(req, items[7]!.arrow, items[7]!.nCells));
  }
});

after(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

/** max over parameter tensors of max |a − b| / max |b| (a tensor's scale, so near-zero entries do
 * not dominate). A linear layer's bias feeding BatchNorm has gradient 0 exactly: both sides are
 * rounding noise there, measured against its weight's scale. */
function relPerTensor(cfg: ModelConfig, a: Float32Array, b: Float32Array): { worst: number; name: string } {
  const layout = paramLayout(cfg);
  const maxAbs = (from: number, to: number): number => {
    let s = 0;
    for (let i = from; i < to; i++) s = Math.max(s, Math.abs(b[i]!));
    return s;
  };
  let worst = { worst: 0, name: '' };
  for (const e of layout.entries) {
    let d = 0;
    for (let i = e.offset; i < e.offset + e.size; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
    const feedsBn =
      /^(enc|dec)(\.\d+)?\.lin\.bias$/.test(e.name) &&
      layout.entries.some((x) => x.name === e.name.replace(/lin\.bias$/, 'bn.weight'));
    const w = feedsBn ? layout.entries.find((x) => x.name === e.name.replace(/bias$/, 'weight'))! : e;
    const s = maxAbs(w.offset, w.offset + w.size);
    const r = s > 0 ? d / s : d;
    if (!(r <= worst.worst)) worst = { worst: r, name: e.name };
  }
  return worst;
}

function rel(a: number, b: number): number {
  return Math.abs(a - b) / Math.max(Math.abs(b), 1e-6);
}

async function compareOn(backend: 'cpu' | 'webgpu'): Promise<void> {
  if (backend === 'webgpu') Object.assign(process.env, webgpuEnv);
  const name = await initBackend(backend, () => undefined);
  assert.equal(name, backend);
  for (const { name: cname, cfg } of cfgs) {
    const engine = new DeviceEngine(backend, backend, 8);
    const bnLength = 4 * cfg.nHidden * cfg.nLayers;
    await engine.configure(cfg, SEED, paramLayout(cfg).size, bnLength);
    engine.setParams(params.get(cname)!);
    for (const k of [1, 8]) {
      const got = await engine.gradientGroup(items.slice(0, k));
      const want = reference.get(`${cname}/${k}`)!;
      const g = relPerTensor(cfg, got.grad, want.grad);
      console.log(`  ${backend}, ${cname}, k = ${k}: gradient ${g.worst.toExponential(2)} (${g.name})`);
      assert.ok(g.worst <= 1e-4, `${cname}, k = ${k}: gradient of ${g.name} differs by ${g.worst}`);
      assert.equal(got.microbatches.length, k);
      for (let m = 0; m < k; m++) {
        const [a, b] = [got.microbatches[m]!, want.microbatches[m]!];
        assert.equal(a.nCells, b.nCells);
        for (const t of ['reconstructionSum', 'klSum', 'lossSum'] as const)
          assert.ok(rel(a[t], b[t]) <= 1e-4, `${cname}, k = ${k}, microbatch ${m}: ${t} ${a[t]} vs ${b[t]}`);
        let d = 0,
          s = 0;
        for (let i = 0; i < bnLength; i++) {
          d = Math.max(d, Math.abs(a.bnStats[i]! - b.bnStats[i]!));
          s = Math.max(s, Math.abs(b.bnStats[i]!));
        }
        assert.ok(
          d <= 1e-4 * s,
          `${cname}, k = ${k}, microbatch ${m}: BatchNorm statistics differ by ${d / s}`,
        );
      }
    }
    engine.setBuffers(buffers.get(cname)!);
    for (const req of REQUESTS) {
      const got = await engine.infer(req, items[7]!.arrow, items[7]!.nCells);
      const want = inferReference.get(`${cname}/${req.op}`)!;
      for (const part of ['f64', 'f32'] as const) {
        assert.equal(got[part].length, want[part].length, `${req.op} ${part} length`);
        let d = 0,
          s = 0;
        for (let i = 0; i < want[part].length; i++) {
          d = Math.max(d, Math.abs(got[part][i]! - want[part][i]!));
          s = Math.max(s, Math.abs(want[part][i]!));
        }
        if (want[part].length)
          console.log(`  ${backend}, ${cname}, infer ${req.op}: ${(d / s).toExponential(2)}`);
        assert.ok(d <= 1e-4 * s, `${cname}, infer ${req.op}: ${part} differs by ${d / s} relative`);
      }
    }
    engine.dispose();
  }
}

test(
  'device engine on cpu equals the JS engine on kang microbatches, k = 1 and k = 8 (ragged)',
  { skip: skipData },
  () => compareOn('cpu'),
);
test(
  'device engine on webgpu equals the JS engine on kang microbatches, k = 1 and k = 8 (ragged)',
  { skip: webgpuSkip },
  () => compareOn('webgpu'),
);
