// `atlasvae worker`: connect to a coordinator and compute microbatch gradients until training ends.
import fs from 'node:fs';
import type { Argv } from 'yargs';
import { CliError } from '@atlasvae/shared/errors';
import { BACKEND_CHOICES, type BackendChoice } from '@atlasvae/shared/backend';
import { getLogger } from '@atlasvae/shared/log';
import { WorkerClient } from '@atlasvae/worker/client';
import { ModelEngine } from '@atlasvae/worker/modelEngine';
import { SimulatedEngine, type GradientEngine } from '@atlasvae/worker/engine';
import { WorkerMetrics } from '@atlasvae/worker/metrics';
import { metricsCliOptions, startMetricsServer } from '../metrics.js';
import { onStopSignals } from '../signals.js';

export const workerCommand = (y: Argv): Argv =>
  y.command(
    'worker',
    'Compute gradients for a coordinator (reconnects with backoff when it restarts)',
    (b) =>
      b
        .option('connect', { type: 'string', demandOption: true, describe: 'coordinator URL, ws://HOST:PORT or wss://HOST:PORT' })
        .option('token', { type: 'string', describe: 'shared secret of the coordinator (default: $ATLASVAE_TOKEN)' })
        .option('backend', { choices: BACKEND_CHOICES, default: 'auto' as BackendChoice, describe: 'compute backend (auto: tensorflow when installed, else wasm)' })
        .option('name', { type: 'string', describe: 'name shown in the coordinator\'s logs (default: host name)' })
        .option('give-up-after', { type: 'number', default: 0, describe: 'exit after this many seconds without a coordinator (0: keep trying)' })
        .option('tls-ca', { type: 'string', describe: 'PEM CA certificate to trust for wss://' })
        .option('insecure', { type: 'boolean', default: false, describe: 'accept any wss:// certificate (self-signed test setups)' })
        .option('simulate', { type: 'boolean', default: false, hidden: true, describe: 'skip the math and return zero gradients (capacity benchmarks)' })
        .options(metricsCliOptions)
        .example('$0 worker --connect ws://10.0.0.5:8787 --token $T', 'join a coordinator')
        .example('$0 worker --connect wss://head:8787 --tls-ca ca.pem --backend tensorflow', 'join over TLS on a GPU'),
    async (argv) => {
      const log = getLogger('worker');
      let url: URL;
      try {
        url = new URL(argv.connect);
      } catch {
        throw new CliError(`--connect: '${argv.connect}' is not a URL (expected ws://HOST:PORT)`);
      }
      if (url.protocol !== 'ws:' && url.protocol !== 'wss:') throw new CliError(`--connect: use ws:// or wss://, not ${url.protocol}`);
      let ca: Buffer | undefined;
      if (argv['tls-ca']) {
        try {
          ca = fs.readFileSync(argv['tls-ca']);
        } catch (e) {
          throw new CliError(`${argv['tls-ca']}: cannot read the CA certificate (${(e as Error).message})`);
        }
      }
      const engine: GradientEngine = argv.simulate ? new SimulatedEngine() : await ModelEngine.create(argv.backend, (m) => log.info(m));
      const metrics = new WorkerMetrics();
      metrics.setBackend(engine.backend);
      const server = await startMetricsServer(metrics, argv['metrics-port'], argv['metrics-host']);
      const client = new WorkerClient({
        url: argv.connect, token: argv.token ?? process.env.ATLASVAE_TOKEN, engine, name: argv.name,
        giveUpAfterMs: argv['give-up-after'] * 1000, insecure: argv.insecure, ca,
        log: (m) => log.info(m.replace(/^atlasvae worker: /, '')),
        events: {
          connected: () => metrics.connected(),
          disconnected: () => metrics.disconnected(),
          microbatchComputed: (m) => metrics.observeMicrobatch({
            cells: m.nCells, computeSeconds: m.computeMs / 1000, step: m.step, epoch: m.epoch, klWeight: m.klWeight,
            lossSum: m.lossSum, reconstructionSum: m.reconstructionSum, klSum: m.klSum,
          }),
          bytes: (d, n) => (d === 'sent' ? metrics.bytesSent(n) : metrics.bytesReceived(n)),
          rejected: (reason) => metrics.rejected(reason),
        },
      });
      // a worker started by `atlasvae train` ends with its parent
      if (process.send) process.on('disconnect', () => process.exit(0));
      // the first signal ends the connection (the coordinator hands its microbatches to others), a second exits at once
      const signals = onStopSignals((sig) => {
        log.info(`${sig}: stopping (${sig} again exits at once)`);
        client.stop();
      });
      const out = await client.run();
      signals.dispose();
      await server?.stop();
      log.info(`worker finished: ${out.message}`, { microbatches: out.microbatches });
      if (out.reason === 'rejected' || out.reason === 'gave-up') throw new CliError(out.message);
    },
  );
