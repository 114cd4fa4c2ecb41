// Data benchmarks: simulate (straight into the prepared format), prepare from a simulated .h5ad,
// and serving (dataset → Arrow minibatch messages along the epoch plan), each in a child process
// whose peak RSS is reported, for growing atlas sizes (2,000 genes).
// ATLASVAE_BENCH_DATA_CELLS=100000,1000000 (default) sets the sizes; ATLASVAE_BENCH_DIR the scratch folder.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const child = path.join(path.dirname(fileURLToPath(import.meta.url)), 'data-child.js');

function measure(...args: string[]): Record<string, number> {
  const out = execFileSync(process.execPath, [child, ...args], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
    maxBuffer: 1 << 20,
  });
  return JSON.parse(out.trim().split('\n').pop()!) as Record<string, number>;
}

export async function run(): Promise<Record<string, unknown>> {
  const sizes = (process.env.ATLASVAE_BENCH_DATA_CELLS ?? '100000,1000000').split(',').map(Number);
  const genes = 2000;
  const root = fs.mkdtempSync(
    path.join(process.env.ATLASVAE_BENCH_DIR ?? os.tmpdir(), 'atlasvae-bench-data-'),
  );
  const results: Record<string, unknown> = { genes };
  try {
    for (const n of sizes) {
      const sim = path.join(root, `sim-${n}`);
      const h5ad = path.join(root, `sim-${n}.h5ad`);
      // the synthetic atlas, streamed into a prepared dataset and an .h5ad at once
      const simulate = measure('simulate', String(n), String(genes), sim, h5ad);
      const prepare = measure('prepare', h5ad, path.join(root, `prep-${n}`));
      fs.rmSync(h5ad, { force: true });
      const serve = measure('serve', path.join(root, `prep-${n}`), String(Math.min(n, 300000)));
      results[`cells_${n}`] = { simulateWithH5ad: simulate, prepareFromH5ad: prepare, serve };
      fs.rmSync(sim, { recursive: true, force: true });
      fs.rmSync(path.join(root, `prep-${n}`), { recursive: true, force: true });
    }
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
  return results;
}
