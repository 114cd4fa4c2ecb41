// Child process of the distributed benchmark (not a bench module itself):
//   protocol URL TOKEN N   N simulated workers (real protocol, zero gradients of the right size, no math)
//   raw URL N              N plain ws clients that echo every binary message back (the ws ceiling)
// It exits when the coordinator says done (protocol) or closes the connections (raw).

import { WebSocket } from 'ws';
import { WorkerClient } from '@atlasvae/worker/client';
import { SimulatedEngine } from '@atlasvae/worker/engine';

const [mode, url, a, b] = process.argv.slice(2);

if (mode === 'protocol') {
  const n = Number(b);
  const clients = Array.from({ length: n }, (_, i) => new WorkerClient({ url: url!, token: a, engine: new SimulatedEngine(), name: `sim-${i}`, giveUpAfterMs: 30_000, log: () => undefined }));
  await Promise.all(clients.map((c) => c.run()));
  process.exit(0);
} else if (mode === 'raw') {
  const n = Number(a);
  let open = n;
  for (let i = 0; i < n; i++) {
    const ws = new WebSocket(url!, { perMessageDeflate: false, maxPayload: 1 << 30, generateMask: (m: Buffer) => void m.fill(0) });
    ws.on('message', (data: Buffer) => ws.send(data, { binary: true }));
    ws.on('close', () => {
      if (--open === 0) process.exit(0);
    });
    ws.on('error', () => undefined);
  }
} else {
  console.error('usage: dist-simworkers protocol URL TOKEN N | raw URL N');
  process.exit(2);
}
