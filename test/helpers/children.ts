// Child processes started by tests. A failed assertion must never leave a coordinator waiting for
// workers (or a worker retrying its connection): that keeps the test file's process alive and the
// whole run hangs. Every spawned child is tracked, and `killChildren` (an `after` hook of each file
// that spawns) kills whatever is still running.
import type { ChildProcess } from 'node:child_process';

const live = new Set<ChildProcess>();

/** Remember `child` until it exits; returns it. */
export function track<C extends ChildProcess>(child: C): C {
  live.add(child);
  child.once('exit', () => live.delete(child));
  return child;
}

/** SIGKILL every tracked child still running and wait for their exits. */
export async function killChildren(): Promise<void> {
  const running = [...live].filter((c) => c.exitCode === null && c.signalCode === null);
  await Promise.all(
    running.map(
      (c) =>
        new Promise<void>((resolve) => {
          c.once('exit', () => resolve());
          if (!c.kill('SIGKILL')) resolve();
        }),
    ),
  );
  live.clear();
}

/** Whether a process with this pid exists (signal 0 checks without signalling). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
