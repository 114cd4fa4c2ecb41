// Wires a Coordinator's events to the logger, Prometheus metrics, the progress display and an
// optional audit log (one JSON line per accepted microbatch, with its cells: proof that every
// training cell is used exactly once per epoch).

import fs from 'node:fs';
import { getLogger, stepsPerEpoch } from '@atlasvae/shared';
import { CoordinatorMetrics } from '../metrics.js';
import { Progress } from '../progress.js';
import type { Coordinator, TrainingSetup } from './coordinator.js';

export interface Wiring {
  metrics: CoordinatorMetrics;
  progress: Progress | null;
  /** `started`: training began (false: end without a progress summary) */
  finish(ok: boolean, started?: boolean): void;
}

/** reasons that concern the connection itself; the others are a bad message on it */
const CONNECTION_REASONS = new Set<string>([
  'bad-token',
  'bad-protocol-version',
  'hello-timeout',
  'heartbeat-timeout',
]);

export function wireCoordinator(
  c: Coordinator,
  setup: TrainingSetup,
  o: { progress: boolean; auditPath?: string; maxSteps: number | null },
): Wiring {
  const log = getLogger('coordinator');
  const metrics = new CoordinatorMetrics();
  const tc = setup.trainConfig;
  const perEpoch = stepsPerEpoch(setup.data.train.length, tc.globalBatch, tc.minLastBatch);
  let total = perEpoch * tc.epochs;
  if (o.maxSteps !== null) total = Math.min(total, o.maxSteps);
  const progress = o.progress
    ? new Progress({
        label: 'training',
        totalSteps: total,
        completedSteps: setup.position.globalStep,
        totalEpochs: tc.epochs,
        logger: log,
      })
    : null;
  let completed = setup.position.globalStep;
  const audit = o.auditPath ? fs.openSync(o.auditPath, 'a') : null;
  metrics.setBackend('js');
  metrics.trainingStarted({
    totalSteps: total,
    completedSteps: setup.position.globalStep,
    epoch: setup.position.epoch,
    backend: 'js',
  });

  c.observe({
    listening: (url) => log.info('coordinator listening', { url }),
    workerConnected: (w) => metrics.workerConnected(w.backend),
    workerDisconnected: (w) => metrics.workerDisconnected(w.backend),
    connectionRejected: (reason) =>
      metrics.rejected(CONNECTION_REASONS.has(reason) ? 'connection' : 'message', reason),
    resultDropped: (reason) => metrics.rejected('message', reason),
    microbatchRedone: (r) => {
      metrics.microbatchRedone(1);
      log.info('microbatch handed out again', {
        step: r.globalStep,
        microbatch: r.microbatch,
        reason: r.reason,
        worker: r.workerId,
      });
    },
    microbatchAccepted:
      audit === null
        ? undefined
        : (a) => {
            fs.writeSync(
              audit,
              JSON.stringify({
                epoch: a.epoch,
                step: a.globalStep,
                microbatch: a.microbatch,
                worker: a.workerId,
                cells: Array.from(a.cells),
              }) + '\n',
            );
          },
    bytes: (dir, n) => (dir === 'sent' ? metrics.bytesSent(n) : metrics.bytesReceived(n)),
    stepCompleted: (s) => {
      metrics.observeStep({
        cells: s.nCells,
        completedSteps: s.globalStep + 1,
        totalSteps: total,
        epoch: s.epoch,
        elbo: s.reconstruction + s.kl,
        loss: s.loss,
        reconstruction: s.reconstruction,
        kl: s.kl,
        klWeight: s.klWeight,
        learningRate: tc.lr,
        gradientNorm: s.gradNorm,
        phaseSeconds: {
          compute: s.computeMs / 1000,
          communication: (s.communicationMs + s.broadcastMs) / 1000,
          aggregation: s.aggregationMs / 1000,
          optimizer: s.optimizerMs / 1000,
        },
      });
      completed = s.globalStep + 1;
      progress?.update({ cells: s.nCells, completedSteps: completed, epoch: s.epoch, elbo: s.loss });
      log.debug('step', { ...s });
    },
    epochCompleted: (e) => {
      const fields: Record<string, number> = {
        loss: +e.loss.toFixed(3),
        elbo: +e.elbo.toFixed(3),
        reconstruction: +e.reconstruction.toFixed(3),
        kl: +e.kl.toFixed(3),
        cells: e.nCells,
        seconds: +(e.ms / 1000).toFixed(1),
      };
      if (e.validationElbo !== undefined) {
        fields.validationElbo = +e.validationElbo.toFixed(3);
        metrics.observeValidation({
          elbo: e.validationElbo,
          reconstruction: e.validationReconstruction,
          kl: e.validationKl,
        });
        progress?.update({ cells: 0, completedSteps: completed, validationElbo: e.validationElbo });
      }
      log.info(`epoch ${e.epoch + 1}/${tc.epochs} done`, fields);
    },
    checkpointWritten: (k) => {
      metrics.checkpointWritten();
      log.info('checkpoint written', { path: k.path, step: k.globalStep, ms: Math.round(k.ms) });
    },
    waitingForWorkers: (have, need) => log.info('waiting for workers', { connected: have, needed: need }),
    log: (level, message) => log.log(level, message),
  });
  return {
    metrics,
    progress,
    finish(ok, started = true) {
      progress?.finish(started);
      metrics.trainingFinished(ok);
      if (audit !== null) fs.closeSync(audit);
    },
  };
}
