// `atlasvae worker`: connect to a coordinator and compute microbatch gradients until training ends.
import fs from 'node:fs';
import type { Argv } from 'yargs';
import { CliError } from '@atlasvae/shared/errors';
import { BACKEND_CHOICES, type BackendChoice } from '@atlasvae/shared/backend';
import { getLogger } from '@atlasvae/shared/log';
import { WorkerClient } from '@atlasvae/worker/client';
import { SimulatedEngine, type GradientEngine } from '@atlasvae/worker/engine';
import { createEngine, ENGINE_CHOICES, type EngineChoice } from '@atlasvae/worker/engineChoice';
import { MAX_GROUP } from '@atlasvae/shared/protocol/messages';
import { WorkerMetrics } from '@atlasvae/worker/metrics';
import { metricsCliOptions, startMetricsServer } from '../metrics.js';

export const workerCommand = (y: Argv): Argv =>
  y.command(
    'worker',
    'Compute gradients for a coordinator (reconnects with backoff when it restarts)',
    (b) =>
      b
        .option('connect', { type: 'string', demandOption: true, describe: 'coordinator URL, ws://HOST:PORT or wss://HOST:PORT' })
        .option('token', { type: 'string', describe: 'shared secret of the coordinator (default: $ATLASVAE_TOKEN)' })
        .option('backend', { choices: BACKEND_CHOICES, default: 'auto' as BackendChoice, describe: 'compute backend (auto: tensorflow on a GPU, then webgpu on a hardware GPU adapter, else tensorflow/wasm on the CPU); webgpu test bed without a GPU: ATLASVAE_WEBGPU_FLAGS=\'backend=opengl featureLevel=compatibility\'' })
        .option('engine', { choices: ENGINE_CHOICES, default: 'auto' as EngineChoice, describe: 'js: the hand-written model, matrix products on the backend; device: the whole step on the backend\'s device; auto: device on tensorflow/webgpu, else js' })
        .option('group', { type: 'number', describe: `microbatches per request, 1–${MAX_GROUP} (default: 1 for the js engine, 16 for the device engine)` })
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
      if (argv.group !== undefined && !(Number.isInteger(argv.group) && argv.group >= 1 && argv.group <= MAX_GROUP)) {
        throw new CliError(`--group must be an integer from 1 to ${MAX_GROUP}, not ${argv.group}`);
      }
      const engine: GradientEngine = argv.simulate
        ? new SimulatedEngine()
        : await createEngine({ engine: argv.engine, backend: argv.backend, group: argv.group, log: (m) => log.info(m) });
      log.info(`engine ${engine.kind} on ${engine.backend} (${engine.device}), ${engine.group} microbatch(es) per request`);
      const metrics = new WorkerMetrics();
      metrics.setEngine(engine);
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
      const stop = (): void => client.stop();
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
      const out = await client.run();
      await server?.stop();
      log.info(`worker finished: ${out.message}`, { microbatches: out.microbatches });
      if (out.reason === 'rejected' || out.reason === 'gave-up') throw new CliError(out.message);
    },
  );
