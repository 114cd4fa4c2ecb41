// `atlasvae worker`: connect to a coordinator and compute microbatch gradients until training ends.
import fs from 'node:fs';
import os from 'node:os';
import type { Argv } from 'yargs';
import { CliError, getLogger, log as rootLog } from '@atlasvae/shared';
import { BACKEND_CHOICES } from '@atlasvae/shared/backend';
import { WorkerClient } from '../client.js';
import { SimulatedEngine, type GradientEngine } from '../engine.js';
import { createEngine, ENGINE_CHOICES } from '../engine-choice.js';
import { MAX_GROUP, resolveToken } from '@atlasvae/shared/protocol';
import { WorkerMetrics } from '../metrics.js';
import { discoverGpus, selectDevices } from '../launcher/devices.js';
import { launchNode } from '../launcher/node-launcher.js';
import { metricsCliOptions, startMetricsServer } from '@atlasvae/shared/metrics';
import { onStopSignals } from '@atlasvae/shared/runtime';

export const workerCommand = (y: Argv): Argv =>
  y.command(
    'worker',
    'Compute gradients for a coordinator (reconnects with backoff when it restarts)',
    (b) =>
      b
        .option('connect', {
          type: 'string',
          demandOption: true,
          describe: 'coordinator URL, ws://HOST:PORT or wss://HOST:PORT',
        })
        .option('token', {
          type: 'string',
          describe: 'shared secret of the coordinator (default: $ATLASVAE_TOKEN); prefer --token-file',
        })
        .option('token-file', {
          type: 'string',
          describe:
            'read the shared secret from this file, readable by its owner only (default: $ATLASVAE_TOKEN_FILE)',
        })
        .option('devices', {
          type: 'string',
          describe:
            'node launcher: one worker process per GPU: all, N (the first N GPUs, or N CPU workers on a node without GPUs) or IDs such as 0,2',
        })
        .option('backend', {
          choices: BACKEND_CHOICES,
          default: 'auto' as const,
          describe:
            "compute backend (auto: tensorflow on a GPU, then webgpu on a hardware GPU adapter, else tensorflow/wasm on the CPU); webgpu test bed without a GPU: ATLASVAE_WEBGPU_FLAGS='backend=opengl featureLevel=compatibility'",
        })
        .option('engine', {
          choices: ENGINE_CHOICES,
          default: 'auto' as const,
          describe:
            "js: the hand-written model, matrix products on the backend; device: the whole step on the backend's device; auto: device on tensorflow/webgpu, else js",
        })
        .option('group', {
          type: 'number',
          describe: `microbatches per request, 1–${MAX_GROUP} (default: 1 for the js engine, 16 for the device engine)`,
        })
        .option('name', {
          type: 'string',
          describe: "name shown in the coordinator's logs (default: host name)",
        })
        .option('give-up-after', {
          type: 'number',
          default: 0,
          describe: 'exit after this many seconds without a coordinator (0: keep trying)',
        })
        .option('tls-ca', { type: 'string', describe: 'PEM CA certificate to trust for wss://' })
        .option('insecure', {
          type: 'boolean',
          default: false,
          describe: 'accept any wss:// certificate (self-signed test setups)',
        })
        .option('simulate', {
          type: 'boolean',
          default: false,
          hidden: true,
          describe: 'skip the math and return zero gradients (capacity benchmarks)',
        })
        .options(metricsCliOptions)
        .example('$0 worker --connect ws://10.0.0.5:8787 --token $T', 'join a coordinator')
        .example(
          '$0 worker --connect wss://head:8787 --tls-ca ca.pem --backend tensorflow',
          'join over TLS on a GPU',
        )
        .example(
          '$0 worker --connect ws://head:8787 --token-file ~/.atlasvae/token --devices all --metrics-port 9401',
          'one worker per GPU of this node (metrics on 9401, 9402, …)',
        ),
    async (argv) => {
      const log = getLogger('worker');
      let url: URL;
      try {
        url = new URL(argv.connect);
      } catch {
        throw new CliError(`--connect: '${argv.connect}' is not a URL (expected ws://HOST:PORT)`);
      }
      if (url.protocol !== 'ws:' && url.protocol !== 'wss:')
        throw new CliError(`--connect: use ws:// or wss://, not ${url.protocol}`);
      let ca: Buffer | undefined;
      if (argv['tls-ca']) {
        try {
          ca = fs.readFileSync(argv['tls-ca']);
        } catch (e) {
          throw new CliError(`${argv['tls-ca']}: cannot read the CA certificate (${(e as Error).message})`);
        }
      }
      if (
        argv.group !== undefined &&
        !(Number.isInteger(argv.group) && argv.group >= 1 && argv.group <= MAX_GROUP)
      ) {
        throw new CliError(`--group must be an integer from 1 to ${MAX_GROUP}, not ${argv.group}`);
      }
      const token = resolveToken({ token: argv.token, tokenFile: argv['token-file'] });
      if (argv.devices !== undefined) {
        let slots;
        try {
          slots = selectDevices(argv.devices, discoverGpus());
        } catch (e) {
          throw new CliError((e as Error).message);
        }
        const base = argv['metrics-port'];
        if (
          base !== undefined &&
          (!Number.isInteger(base) || base < 0 || (base > 0 && base + slots.length - 1 > 65535))
        ) {
          throw new CliError(
            `--metrics-port ${base}: not a port number, or ports ${base}…${base + slots.length - 1} do not all exist`,
          );
        }
        const workerArgs = [
          '--connect',
          argv.connect,
          '--backend',
          argv.backend,
          '--engine',
          argv.engine,
          '--give-up-after',
          String(argv['give-up-after']),
          '--metrics-host',
          argv['metrics-host'],
          '--log-level',
          rootLog.level,
          '--log-format',
          rootLog.format,
        ];
        if (argv['tls-ca']) workerArgs.push('--tls-ca', argv['tls-ca']);
        if (argv.insecure) workerArgs.push('--insecure');
        if (argv.simulate) workerArgs.push('--simulate');
        if (argv.group !== undefined) workerArgs.push('--group', String(argv.group));
        const outcomes = await launchNode({
          cliPath: process.argv[1]!,
          workerArgs,
          slots,
          name: argv.name ?? os.hostname(),
          metricsPort: argv['metrics-port'],
          token,
          log: getLogger('launcher'),
        });
        const failed = outcomes.filter((o) => !o.done);
        log.info(
          `node launcher finished: ${outcomes.length - failed.length} of ${outcomes.length} workers done`,
        );
        if (failed.length > 0)
          throw new CliError(
            `${failed.map((o) => `${o.name} (${o.signal ?? `exit code ${o.code}`})`).join(', ')} did not finish`,
          );
        return;
      }
      if (process.env.CUDA_VISIBLE_DEVICES !== undefined)
        log.info(`CUDA_VISIBLE_DEVICES=${process.env.CUDA_VISIBLE_DEVICES}`);
      const engine: GradientEngine = argv.simulate
        ? new SimulatedEngine()
        : await createEngine({
            engine: argv.engine,
            backend: argv.backend,
            group: argv.group,
            log: (m) => log.info(m),
          });
      log.info(
        `engine ${engine.kind} on ${engine.backend} (${engine.device}), ${engine.group} microbatch(es) per request`,
      );
      const metrics = new WorkerMetrics();
      metrics.setEngine(engine);
      metrics.setDevice(process.env.CUDA_VISIBLE_DEVICES);
      const server = await startMetricsServer(metrics, argv['metrics-port'], argv['metrics-host']);
      const client = new WorkerClient({
        url: argv.connect,
        token,
        engine,
        name: argv.name,
        giveUpAfterMs: argv['give-up-after'] * 1000,
        insecure: argv.insecure,
        ca,
        metricsAddress: server ? `${advertisedHost(argv['metrics-host'])}:${server.port}` : undefined,
        log: (m) => log.info(m.replace(/^atlasvae worker: /, '')),
        events: {
          connected: () => metrics.connected(),
          disconnected: () => metrics.disconnected(),
          microbatchComputed: (m) =>
            metrics.observeMicrobatch({
              cells: m.nCells,
              computeSeconds: m.computeMs / 1000,
              step: m.step,
              epoch: m.epoch,
              klWeight: m.klWeight,
              lossSum: m.lossSum,
              reconstructionSum: m.reconstructionSum,
              klSum: m.klSum,
            }),
          bytes: (d, n) => (d === 'sent' ? metrics.bytesSent(n) : metrics.bytesReceived(n)),
          rejected: (reason) => metrics.rejected(reason),
        },
      });
      // a worker started by a supervisor (`train`, `worker --devices`) ends with its parent; the
      // channel alone must not keep it running once training is over
      if (process.send) {
        process.on('disconnect', () => process.exit(0));
        process.channel?.unref();
      }
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

/** a metrics server on every interface is reached at the address the worker connects from (empty) */
function advertisedHost(host: string): string {
  if (host === '' || host === '0.0.0.0' || host === '::') return '';
  return host.includes(':') ? `[${host}]` : host;
}
