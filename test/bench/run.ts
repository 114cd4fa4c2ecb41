// `npm run bench`: runs every benchmark module and prints one JSON object (module name → results).
// Add a module by importing it below; each exports `async function run(): Promise<Record<string, unknown>>`.
// `npm run bench -- NAME…` runs only the named modules.
import * as data from './data.js';
import * as dist from './dist.js';
import * as engine from './engine.js';
import * as metrics from './metrics.js';
import * as results from './results.js';
import * as scale from './scale.js';
import * as step from './step.js';
import * as workers from './workers.js';
import { tuneGarbageCollector } from '@atlasvae/shared/runtime';

// measure what the atlasvae CLI runs: every atlasvae process applies this GC setting first
tuneGarbageCollector();

const modules: Record<string, { run(): Promise<Record<string, unknown>> }> = {
  step,
  engine,
  data,
  dist,
  results,
  metrics,
  scale,
  workers,
};

const only = process.argv.slice(2);
const out: Record<string, unknown> = {};
for (const [name, m] of Object.entries(modules)) {
  if (only.length && !only.includes(name)) continue;
  const t0 = performance.now();
  try {
    out[name] = { ...(await m.run()), seconds: Math.round((performance.now() - t0) / 100) / 10 };
  } catch (e) {
    out[name] = { error: e instanceof Error ? e.message : String(e) };
  }
}
process.stdout.write(JSON.stringify(out, null, 2) + '\n');
process.exit(0);
