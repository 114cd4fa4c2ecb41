import { initBackend } from '@atlasvae/shared/backend';
import { defaultModelConfig } from '@atlasvae/shared';
import { createModel, microbatchNoise } from '@atlasvae/shared/model';
import { initTrainingState } from '@atlasvae/shared/train';
import { benchBatch } from '/work/main/test/dist/bench/step.js';
await initBackend('wasm', ()=>{});
const cfg = defaultModelConfig(1000, 4, {});
const m = createModel(cfg);
const st = initTrainingState(cfg, 0);
const n = Number(process.argv[2] ?? 16);
const b = benchBatch(n, 1000, 0.2);
const noise = microbatchNoise(cfg, 0, 0, 0, n);
const N = Number(process.argv[3] ?? 300);
const ts=[];
for (let i=0;i<N;i++) { st.params[0]+=1e-7; m.setParams(st.params); const t=performance.now(); m.gradient(b, noise, 1); ts.push(performance.now()-t); }
ts.sort((a,b)=>a-b); console.log(n, 'median ms', ts[ts.length>>1].toFixed(2));
