// Child process of the distributed benchmark (not a bench module itself):
//   protocol URL TOKEN N   N simulated workers (real protocol, zero gradients of the right size, no math)
//   raw URL N              N plain ws clients that echo every binary message back (the ws ceiling)
//   compute DATA SECONDS   the worker's math alone (setParams + gradient of 128-cell microbatches of
//                          the dataset, the wasm backend), no coordinator: prints {cellsPerSecond};
//                          two at once against one alone is the machine's own ceiling for 2 workers
// It exits when the coordinator says done (protocol), closes the connections (raw), or after
// SECONDS (compute).

import { WebSocket } from 'ws';
import { WorkerClient, SimulatedEngine, ModelEngine } from '@atlasvae/worker';
import { defaultModelConfig } from '@atlasvae/shared';
import { initTrainingState } from '@atlasvae/shared/train';
import { bufferLayout } from '@atlasvae/shared/model';
import { tuneGarbageCollector } from '@atlasvae/shared/runtime';
import { openDataset } from '@atlasvae/coordinator/data';

// as the atlasvae CLI does in every process
tuneGarbageCollector();

const [mode, url, a, b] = process.argv.slice(2);

if (mode === 'protocol') {
  const n = Number(b);
  const clients = Array.from(
    { length: n },
    (_, i) =>
      new WorkerClient({
        url: url!,
        token: a,
        engine: new SimulatedEngine(),
        name: `sim-${i}`,
        giveUpAfterMs: 30_000,
        log: () => undefined,
      }),
  );
  await Promise.all(clients.map((c) => c.run()));
  process.exit(0);
} else if (mode === 'raw') {
  const n = Number(a);
  let open = n;
  for (let i = 0; i < n; i++) {
    const ws = new WebSocket(url!, {
      perMessageDeflate: false,
      maxPayload: 1 << 30,
      generateMask: (m: Buffer) => void m.fill(0),
    });
    ws.on('message', (data: Buffer) => ws.send(data, { binary: true }));
    ws.on('close', () => {
      if (--open === 0) process.exit(0);
    });
    ws.on('error', () => undefined);
  }
} else if (mode === 'compute') {
  const ds = await openDataset(url!);
  const mc = defaultModelConfig(ds.manifest.nGenes, ds.manifest.batchCategories.length);
  const engine = await ModelEngine.create('wasm', () => undefined);
  await engine.configure(mc, 1, initTrainingState(mc, 1).params.length, bufferLayout(mc).size);
  const params = initTrainingState(mc, 1).params;
  const nMb = 16;
  const arrows: Uint8Array[] = [];
  for (let k = 0; k < nMb; k++)
    arrows.push(await ds.source.getCellsArrow(ds.train.subarray(k * 128, (k + 1) * 128)));
  await ds.close();
  const one = (k: number): void => {
    engine.setParams(params);
    engine.gradient({ step: k, epoch: 0, microbatch: 0, nCells: 128, klWeight: 1, arrow: arrows[k % nMb]! });
  };
  for (let k = 0; k < 4; k++) one(k);
  const seconds = Number(a);
  const t0 = performance.now();
  let n = 0;
  while (performance.now() - t0 < seconds * 1000) one(n++);
  process.stdout.write(
    `${JSON.stringify({ cellsPerSecond: (n * 128) / ((performance.now() - t0) / 1000) })}\n`,
  );
  process.exit(0);
} else {
  console.error('usage: dist-simworkers protocol URL TOKEN N | raw URL N | compute DATA SECONDS');
  process.exit(2);
}
