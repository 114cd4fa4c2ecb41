// A process that supervises two `hang` children (supervised-child.js) with signals forwarded, and
// prints "children <pid> <pid>" once they run: tests kill it and watch what happens to them.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Supervisor } from '@atlasvae/worker/launcher';

const child = path.join(path.dirname(fileURLToPath(import.meta.url)), 'supervised-child.js');
const sup = new Supervisor({ stopGraceMs: 5000 });
sup.forwardSignals();
sup.start(
  [0, 1].map((i) => ({
    name: `child ${i}`,
    modulePath: child,
    args: [],
    env: { ...process.env, SC_MODE: 'hang', CUDA_VISIBLE_DEVICES: String(i) },
  })),
);
const poll = setInterval(() => {
  const pids = sup.children.map((c) => c.pid);
  if (pids.length === 2) {
    clearInterval(poll);
    console.log(`children ${pids.join(' ')}`);
  }
}, 20);
const outcomes = await sup.wait();
console.log(`outcomes ${JSON.stringify(outcomes)}`);
