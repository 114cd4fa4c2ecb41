// A stand-in child for Supervisor tests. It appends "start <pid> <CUDA_VISIBLE_DEVICES>" to
// $SC_FILE, then by $SC_MODE: `crash` exits 1, `done` exits 0 (after $SC_DELAY ms), `hang` runs
// until SIGTERM or SIGINT (appends "SIGTERM <pid>" or "SIGINT <pid>", exits 0). Like the `worker` command, it exits when its
// parent's IPC channel closes.
import fs from 'node:fs';

const file = process.env.SC_FILE!;
const mode = process.env.SC_MODE ?? 'hang';
const delay = Number(process.env.SC_DELAY ?? '0');
fs.appendFileSync(file, `start ${process.pid} ${process.env.CUDA_VISIBLE_DEVICES ?? '-'}\n`);
if (process.send) process.on('disconnect', () => process.exit(0));
for (const sig of ['SIGTERM', 'SIGINT'] as const) {
  process.on(sig, () => {
    fs.appendFileSync(file, `${sig} ${process.pid}\n`);
    process.exit(0);
  });
}
if (mode === 'crash') setTimeout(() => process.exit(1), delay);
else if (mode === 'done') setTimeout(() => process.exit(0), delay);
else setInterval(() => undefined, 1000);
