// Run a coordinator from flags to the end of training: used by `coordinator`, `train` and `demo`.

import fs from 'node:fs';
import os from 'node:os';
import { getLogger, CliError } from '@atlasvae/shared';
import { startMetricsServer, type CoordinatorMetrics } from '../metrics.js';
import { Coordinator, type TrainOutcome } from './coordinator.js';
import { prepareTraining, type TrainingFlags, type PreparedTraining } from './setup.js';
import { wireCoordinator } from './observe.js';
import { heldOutValidator } from './validation.js';
import { DivergenceError } from '@atlasvae/shared/train';
import { onStopSignals } from '@atlasvae/shared/runtime';

/** Exit status of a run that diverged (a non-finite loss or gradient). */
export const EXIT_DIVERGED = 3;
import { PrometheusTargetsFile } from './prom-targets.js';

export interface ServeOptions {
  host: string;
  port: number;
  token: string | null;
  tlsCert?: string;
  tlsKey?: string;
  minWorkers: number;
  metricsPort?: number;
  metricsHost?: string;
  audit?: string;
  /** Prometheus file_sd target file kept current with the coordinator and its workers */
  prometheusTargets?: string;
  progress?: boolean;
  /** called once the endpoint listens (e.g. to start local workers) */
  onListening?: (
    url: string,
    prepared: PreparedTraining,
    metrics: CoordinatorMetrics,
  ) => void | Promise<void>;
}

export interface RunResult extends TrainOutcome {
  prepared: PreparedTraining;
  seconds: number;
}

function readPem(file: string, what: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (e) {
    throw new CliError(
      `${file}: cannot read the TLS ${what} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
    );
  }
}

export async function runCoordinator(flags: TrainingFlags, s: ServeOptions): Promise<RunResult> {
  const log = getLogger('coordinator');
  if ((s.tlsCert === undefined) !== (s.tlsKey === undefined))
    throw new CliError('--tls-cert and --tls-key go together');
  if (!Number.isInteger(s.port) || s.port < 0 || s.port > 65535)
    throw new CliError(`--port: ${s.port} is not a port number`);
  if (!Number.isInteger(s.minWorkers) || s.minWorkers < 1)
    throw new CliError('--min-workers must be a positive integer');
  const tls =
    s.tlsCert && s.tlsKey ? { cert: readPem(s.tlsCert, 'certificate'), key: readPem(s.tlsKey, 'key') } : null;
  if (!s.token && s.host !== '127.0.0.1' && s.host !== 'localhost' && s.host !== '::1') {
    log.warn('no --token (or ATLASVAE_TOKEN): any client that reaches this port can join as a worker');
  }
  const prepared = await prepareTraining(flags, (m) => log.info(m), s.minWorkers);
  const { setup } = prepared;
  const coordinator = new Coordinator(
    {
      host: s.host,
      port: s.port,
      token: s.token,
      tls,
      minWorkers: s.minWorkers,
      stepTimeoutMs: flags['step-timeout'] * 1000,
      checkpointEvery: flags['checkpoint-every'],
      checkpointPath: prepared.checkpointPath,
      maxSteps: prepared.maxSteps,
      streamParams: flags['stream-params'] ?? 'auto',
      sharedMemory: flags['shared-memory'] ?? 'auto',
    },
    setup,
  );
  const nValidation = flags['validation-cells'] ?? 10000;
  if (!Number.isInteger(nValidation) || nValidation < 0)
    throw new CliError('--validation-cells must be a non-negative integer');
  if (nValidation > 0) {
    coordinator.setValidator(
      await heldOutValidator(
        setup.modelConfig,
        setup.trainConfig.seed,
        setup.data.source,
        setup.data.validation,
        nValidation,
        'auto',
        (m) => log.debug(m),
      ),
    );
  }
  const wiring = wireCoordinator(coordinator, setup, {
    progress: s.progress ?? true,
    auditPath: s.audit,
    maxSteps: prepared.maxSteps,
  });
  const metricsServer = await startMetricsServer(wiring.metrics, s.metricsPort, s.metricsHost);
  if (s.prometheusTargets) {
    const host =
      !s.metricsHost || s.metricsHost === '0.0.0.0' || s.metricsHost === '::' ? os.hostname() : s.metricsHost;
    const targets = new PrometheusTargetsFile(
      s.prometheusTargets,
      metricsServer ? `${host.includes(':') ? `[${host}]` : host}:${metricsServer.port}` : null,
    );
    coordinator.observe({
      workerConnected: (w) => targets.workerJoined(w),
      workerDisconnected: (w) => targets.workerLeft(w),
    });
    log.info('Prometheus targets file written', { path: s.prometheusTargets });
  }
  const signals = onStopSignals((sig) => {
    log.warn(
      `${sig}: finishing the current step (abandoned after 3 s if it cannot finish), writing the checkpoint ${prepared.checkpointPath}, then stopping (${sig} again quits at once)`,
    );
    coordinator.requestStop();
  });
  const t0 = performance.now();
  let ok = false;
  let finished = false;
  let listening = false;
  try {
    const url = await coordinator.listen().catch((e: Error) => {
      throw new CliError(`cannot listen on ${s.host}:${s.port} (${e.message})`);
    });
    listening = true;
    log.info(
      `checkpoint: ${prepared.checkpointPath}${flags.checkpoint === undefined ? ' (the default, beside the dataset; --checkpoint PATH to choose)' : ''}`,
    );
    const mc = setup.modelConfig;
    log.info('training', {
      cells: setup.data.train.length,
      genes: mc.nGenes,
      batches: mc.nBatch,
      epochs: setup.trainConfig.epochs,
      globalBatch: setup.trainConfig.globalBatch,
      microbatch: setup.trainConfig.microbatch,
      lr: setup.trainConfig.lr,
      parameters: setup.optimizer.params.length,
    });
    await s.onListening?.(url, prepared, wiring.metrics);
    const outcome = await coordinator.train().catch((e: unknown) => {
      if (e instanceof DivergenceError) throw new CliError(e.message, EXIT_DIVERGED);
      throw e;
    });
    ok = true;
    finished = outcome.stopped !== 'interrupted';
    return { ...outcome, prepared, seconds: (performance.now() - t0) / 1000 };
  } finally {
    signals.dispose();
    // no progress summary for a run that never started (e.g. the port was taken)
    wiring.finish(ok, listening && ok);
    // interrupted or failed: leave the workers waiting for a restart with --resume
    await coordinator.close(ok && finished ? 'training finished' : null);
    await metricsServer?.stop();
    await prepared.dataset.close();
  }
}
