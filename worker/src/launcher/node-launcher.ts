// The node launcher (`atlasvae worker --devices all|N|0,2`): one worker process per GPU of this
// node, as torchrun's --nproc-per-node: each child sees only its GPU (CUDA_VISIBLE_DEVICES) and
// serves metrics on its own port (base + index), under one Supervisor (restarts, signals, and
// no child outliving the launcher).

import type { DeviceSlot } from './devices.js';
import {
  Supervisor,
  type ChildOutcome,
  type ChildSpec,
  type SupervisorLog,
  type SupervisorOptions,
} from './supervisor.js';

export interface NodeLaunchOptions {
  /** the `atlasvae` CLI script the children run */
  cliPath: string;
  /** arguments of `atlasvae worker` shared by every child (not --devices, --name, --metrics-port, nor the token) */
  workerArgs: string[];
  slots: DeviceSlot[];
  /** base of the children's names: `<name>-gpu<ID>` or `<name>-cpu<i>` */
  name: string;
  /** child i serves metrics on base + i (0: each picks a free port; undefined: no metrics) */
  metricsPort?: number;
  /** reaches the children through the environment (ATLASVAE_TOKEN), never their command line */
  token?: string;
  env?: NodeJS.ProcessEnv;
}

/** The child processes of one node. */
export function nodeChildSpecs(o: NodeLaunchOptions): ChildSpec[] {
  const base = o.env ?? process.env;
  return o.slots.map((slot) => {
    const name = slot.gpu === null ? `${o.name}-cpu${slot.index}` : `${o.name}-gpu${slot.gpu}`;
    const args = ['worker', ...o.workerArgs, '--name', name];
    if (o.metricsPort !== undefined)
      args.push('--metrics-port', String(o.metricsPort === 0 ? 0 : o.metricsPort + slot.index));
    const env: NodeJS.ProcessEnv = { ...base, CUDA_VISIBLE_DEVICES: slot.gpu ?? '' };
    if (o.token !== undefined) {
      env.ATLASVAE_TOKEN = o.token;
      delete env.ATLASVAE_TOKEN_FILE; // the launcher already read it: one source of truth
    }
    return { name: `worker ${name}`, modulePath: o.cliPath, args, env };
  });
}

/**
 * Start the node's workers and supervise them until they are done (the coordinator said training
 * is over), given up on, or stopped by SIGTERM/SIGINT.
 */
export async function launchNode(
  o: NodeLaunchOptions & { log: SupervisorLog; supervisor?: SupervisorOptions },
): Promise<ChildOutcome[]> {
  const specs = nodeChildSpecs(o);
  const sup = new Supervisor({ ...o.supervisor, log: o.log });
  const unforward = sup.forwardSignals();
  for (const s of specs)
    o.log.info(`starting ${s.name}`, {
      cudaVisibleDevices: s.env.CUDA_VISIBLE_DEVICES,
      args: s.args.join(' '),
    });
  sup.start(specs);
  try {
    return await sup.wait();
  } finally {
    unforward();
  }
}
