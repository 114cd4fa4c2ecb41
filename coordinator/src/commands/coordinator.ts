// `atlasvae coordinator`: serve a prepared dataset to workers over WebSockets and train.
import type { Argv } from 'yargs';
import { resolveToken } from '@atlasvae/shared/protocol';
import { metricsCliOptions } from '../metrics.js';
import { fleetTrainingOptions } from './training-options.js';
import { runCoordinator } from '../server/run.js';
import { reportOutcome } from '../server/report.js';

export function serveOptions<T>(y: Argv<T>) {
  return y
    .option('token', {
      type: 'string',
      describe: 'shared secret workers must present (default: $ATLASVAE_TOKEN); prefer --token-file',
    })
    .option('token-file', {
      type: 'string',
      describe:
        'read the shared secret from this file, readable by its owner only (default: $ATLASVAE_TOKEN_FILE)',
    })
    .option('prometheus-targets', {
      type: 'string',
      describe:
        'keep a Prometheus file_sd JSON file listing the metrics endpoints of the coordinator and every connected worker',
    })
    .option('tls-cert', { type: 'string', describe: 'PEM certificate: serve wss:// (with --tls-key)' })
    .option('tls-key', { type: 'string', describe: 'PEM private key of --tls-cert' })
    .option('min-workers', {
      type: 'number',
      default: 1,
      describe: 'workers to wait for before the first step',
    })
    .option('audit', {
      type: 'string',
      hidden: true,
      describe: 'append one JSON line per accepted microbatch (its cells) to this file',
    })
    .options(metricsCliOptions);
}

export const coordinatorCommand = (y: Argv): Argv =>
  y.command(
    'coordinator',
    'Train on a prepared dataset: wait for workers (`atlasvae worker --connect`) and run synchronous data-parallel steps',
    (b) =>
      serveOptions(fleetTrainingOptions(b))
        .option('port', { type: 'number', default: 8787, describe: 'TCP port to listen on' })
        .option('host', { type: 'string', default: '0.0.0.0', describe: 'interface to listen on' })
        .example(
          '$0 coordinator --data atlas/ --token $T --min-workers 4 --checkpoint run/model.ckpt',
          'train with 4+ workers, checkpointing to run/model.ckpt',
        )
        .example(
          '$0 coordinator --data atlas/ --checkpoint run/model.ckpt --resume',
          'continue after a crash or stop',
        ),
    async (argv) => {
      const r = await runCoordinator(argv, {
        host: argv.host,
        port: argv.port,
        token: resolveToken({ token: argv.token, tokenFile: argv['token-file'] }) ?? null,
        tlsCert: argv['tls-cert'],
        tlsKey: argv['tls-key'],
        minWorkers: argv['min-workers'],
        metricsPort: argv['metrics-port'],
        metricsHost: argv['metrics-host'],
        audit: argv.audit,
        prometheusTargets: argv['prometheus-targets'],
      });
      reportOutcome(r);
    },
  );
