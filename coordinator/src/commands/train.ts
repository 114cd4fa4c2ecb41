// `atlasvae train`: the embedded default, a coordinator plus N local worker processes.
import crypto from 'node:crypto';
import type { Argv } from 'yargs';
import { CliError } from '@atlasvae/shared';
import { BACKEND_CHOICES } from '@atlasvae/shared/backend';
import { fleetTrainingOptions } from './training-options.js';
import { runCoordinator } from '../server/run.js';
import { LocalWorkers } from '../server/local-workers.js';
import { reportOutcome } from '../server/report.js';
import { resolveToken, MAX_GROUP } from '@atlasvae/shared/protocol';
import { serveOptions } from './coordinator.js';
import { ENGINE_CHOICES } from '@atlasvae/worker';

export const trainCommand = (y: Argv): Argv =>
  y.command(
    'train',
    'Train on this machine: a coordinator and --local-workers worker processes (more workers may join on --port)',
    (b) =>
      serveOptions(fleetTrainingOptions(b))
        .option('local-workers', {
          type: 'number',
          default: 2,
          describe: 'worker processes to start here (one per core is a good start)',
        })
        .option('backend', {
          choices: BACKEND_CHOICES,
          default: 'auto' as const,
          describe: 'compute backend of the local workers',
        })
        .option('engine', {
          choices: ENGINE_CHOICES,
          default: 'auto' as const,
          describe: 'engine of the local workers (js, device; auto: device on tensorflow/webgpu, else js)',
        })
        .option('group', {
          type: 'number',
          describe: `microbatches per request of the local workers, 1–${MAX_GROUP} (default: 1 for the js engine, 16 for the device engine; at most the microbatches of a step)`,
        })
        .option('port', { type: 'number', default: 0, describe: 'port for extra workers (0: any free port)' })
        .option('host', {
          type: 'string',
          default: '127.0.0.1',
          describe: 'interface to listen on (0.0.0.0 lets other machines join)',
        })
        .example(
          '$0 train --data atlas/ --local-workers 2 --checkpoint out/model.ckpt',
          'train with two local workers',
        )
        .example(
          '$0 train --data atlas/ --metrics-port 9400 --log-format json',
          'Prometheus metrics on :9400 (workers :9401, :9402), JSON logs',
        ),
    async (argv) => {
      const n = argv['local-workers'];
      if (!Number.isInteger(n) || n < 0) throw new CliError('--local-workers must be a non-negative integer');
      const token =
        resolveToken({ token: argv.token, tokenFile: argv['token-file'] }) ??
        crypto.randomBytes(18).toString('base64url');
      if (
        argv.group !== undefined &&
        !(Number.isInteger(argv.group) && argv.group >= 1 && argv.group <= MAX_GROUP)
      ) {
        throw new CliError(`--group must be an integer from 1 to ${MAX_GROUP}, not ${argv.group}`);
      }
      const workers = new LocalWorkers(
        n,
        argv.backend,
        undefined,
        { port: argv['metrics-port'], host: argv['metrics-host'] },
        { engine: argv.engine, group: argv.group },
      );
      try {
        const r = await runCoordinator(argv, {
          host: argv.host,
          port: argv.port,
          token,
          tlsCert: argv['tls-cert'],
          tlsKey: argv['tls-key'],
          minWorkers: Math.max(1, argv['min-workers'] > 1 ? argv['min-workers'] : n),
          metricsPort: argv['metrics-port'],
          metricsHost: argv['metrics-host'],
          audit: argv.audit,
          prometheusTargets: argv['prometheus-targets'],
          onListening: (url, _prepared, metrics) =>
            workers.start(url.replace('0.0.0.0', '127.0.0.1'), token, () => metrics.localWorkerRestarted()),
        });
        reportOutcome(r);
      } finally {
        await workers.stop();
      }
    },
  );
