// Distributed-training benchmark (`npm run bench`):
//  (a) cells/s with 1 and 2 local worker processes against the single-process trainer;
//  (b) coordinator time per step: aggregation, optimizer, Arrow encoding, sending, and their share;
//  (c) capacity: N = 1…32 simulated workers (no math, right-sized gradients at once): steps/s and
//      gradient GB/s the coordinator sustains on loopback, beside raw ws loopback throughput
//      measured in the same run with the same message sizes.
// Medians of repeats; the machine is shared, so read the numbers as noisy.

import { fork, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { PerformanceObserver } from 'node:perf_hooks';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { WebSocketServer, type WebSocket } from 'ws';
import {
  defaultModelConfig,
  defaultTrainConfig,
  type ModelConfig,
  type TrainConfig,
  configureLogging,
} from '@atlasvae/shared';
import { initBackend } from '@atlasvae/shared/backend';
import { trainInProcess as train } from '@atlasvae/shared/train';
import { bufferLayout } from '@atlasvae/shared/model';
import { encodeFrame } from '@atlasvae/shared/protocol';
import {
  simulateToDataset,
  defaultSimulationOptions,
  openDataset,
  type Dataset,
} from '@atlasvae/coordinator/data';
import {
  trainingData,
  type TrainingData,
  Coordinator,
  SharedStepOptimizer,
  type StepReport,
} from '@atlasvae/coordinator/server';

const here = path.dirname(fileURLToPath(import.meta.url));
const cli = path.resolve(here, '../../../coordinator/dist/cli.js');
const simWorkers = path.join(here, 'dist-simworkers.js');

const GENES = 2000;
const REPEATS = Number(process.env.ATLASVAE_BENCH_REPEATS ?? 3);
/** which parts to run: a (throughput) and b (coordinator step) run together; c (capacity) */
const PARTS = process.env.ATLASVAE_BENCH_DIST_PARTS ?? 'abc';
/** capacity runs: warm-up steps, then timed steps per worker count (about 1.5 s each) */
const CAPACITY_WARMUP = 15;
const CAPACITY_TIMED: Record<number, number> = { 1: 250, 2: 200, 4: 120, 8: 60, 16: 32, 32: 20 };

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** the median of per-repeat ratios xs[r] / ys[r] (each pair run seconds apart, so less skewed by drift) */
function medianOfRatios(xs: number[], ys: number[]): number {
  return median(xs.map((x, r) => x / ys[r]!));
}

const round = (x: number, d = 2): number => Math.round(x * 10 ** d) / 10 ** d;

/** progress on stderr (stdout is the JSON result) */
function note(msg: string): void {
  process.stderr.write(`bench dist: ${msg}\n`);
}

function children(): {
  spawn(args: string[], file?: string): ChildProcess;
  killAll(): Promise<void>;
  pids(): number[];
} {
  const list: ChildProcess[] = [];
  return {
    pids: () => list.map((c) => c.pid!).filter((p) => p !== undefined),
    spawn(args, file = cli) {
      const c = fork(file, args, { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
      list.push(c);
      return c;
    },
    async killAll() {
      await Promise.all(
        list.map(
          (c) =>
            new Promise<void>((r) => {
              if (c.exitCode !== null || c.signalCode !== null) return r();
              c.once('exit', () => r());
              c.kill('SIGKILL');
            }),
        ),
      );
    },
  };
}

interface Timed {
  cellsPerSecond: number;
  /** CPU seconds (user + system, coordinator and all workers) per 1,000 cells over the timed steps */
  cpuSecondsPer1000Cells: number;
  /** the coordinator's share of that CPU time */
  coordinatorCpuShare: number;
  /** the coordinator process's garbage-collection pauses per timed step (ms) */
  coordinatorGcMsPerStep: number;
  reports: StepReport[];
}

/** user + system CPU seconds of a process (Linux /proc), or NaN elsewhere */
function procCpuSeconds(pid: number | undefined): number {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
  } catch {
    return NaN;
  }
}

function selfCpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/** Train `steps` steps with an in-process coordinator and `workers` worker processes; time steps after `warmup`. */
async function distributed(
  ds: Dataset,
  data: TrainingData,
  mc: ModelConfig,
  tc: TrainConfig,
  workers: number,
  steps: number,
  warmup: number,
  simulate = false,
  encodeMs?: number[],
  sharedMemory: 'auto' | 'never' = 'auto',
): Promise<Timed> {
  const token = 'bench';
  const timedData: TrainingData = encodeMs
    ? {
        ...data,
        microbatchArrow: async (cells) => {
          const t = performance.now();
          const b = await data.microbatchArrow(cells);
          encodeMs.push(performance.now() - t);
          return b;
        },
      }
    : data;
  const coord = new Coordinator(
    {
      host: '127.0.0.1',
      port: 0,
      token,
      tls: null,
      minWorkers: workers,
      stepTimeoutMs: 600_000,
      checkpointEvery: 0,
      checkpointPath: null,
      maxSteps: steps,
      sharedMemory,
    },
    {
      modelConfig: mc,
      trainConfig: tc,
      data: timedData,
      optimizer: SharedStepOptimizer.fresh(mc, tc),
      position: { epoch: 0, stepInEpoch: 0, globalStep: 0 },
      history: [],
    },
  );
  const reports: StepReport[] = [];
  const stamps: number[] = [];
  const kids = children();
  const cpu = (): [number, number] => [
    selfCpuSeconds(),
    kids.pids().reduce((a, p) => a + procCpuSeconds(p), 0),
  ];
  let cpuStart: [number, number] = [NaN, NaN],
    cpuEnd: [number, number] = [NaN, NaN];
  let gcMs = 0,
    timing = false;
  const gc = new PerformanceObserver((list) => {
    if (timing) for (const e of list.getEntries()) gcMs += e.duration;
  });
  gc.observe({ entryTypes: ['gc'] });
  coord.observe({
    stepCompleted: (s) => {
      reports.push(s);
      stamps.push(performance.now());
      if (reports.length === warmup) {
        cpuStart = cpu();
        timing = true;
      }
      if (reports.length === steps) {
        cpuEnd = cpu();
        timing = false;
      }
    },
  });
  const url = await coord.listen();
  try {
    if (simulate) kids.spawn(['protocol', url, token, String(workers)], simWorkers);
    else
      for (let i = 0; i < workers; i++)
        kids.spawn([
          'worker',
          '--connect',
          url,
          '--token',
          token,
          '--backend',
          'wasm',
          '--log-level',
          'warn',
        ]);
    await coord.train();
  } finally {
    await coord.close();
    await kids.killAll();
    gc.disconnect();
  }
  void ds;
  const timed = reports.slice(warmup);
  const cells = timed.reduce((a, r) => a + r.nCells, 0);
  const seconds = (stamps[stamps.length - 1]! - stamps[warmup - 1]!) / 1000;
  const coordCpu = cpuEnd[0] - cpuStart[0],
    workerCpu = cpuEnd[1] - cpuStart[1];
  return {
    cellsPerSecond: cells / seconds,
    cpuSecondsPer1000Cells: ((coordCpu + workerCpu) / cells) * 1000,
    coordinatorCpuShare: coordCpu / (coordCpu + workerCpu),
    coordinatorGcMsPerStep: gcMs / timed.length,
    reports: timed,
  };
}

async function singleProcess(
  ds: Dataset,
  mc: ModelConfig,
  tc: TrainConfig,
  steps: number,
  warmup: number,
): Promise<{ cellsPerSecond: number; cpuSecondsPer1000Cells: number }> {
  await initBackend('wasm', () => undefined);
  const stamps: number[] = [];
  const cells: number[] = [];
  let cpuStart = NaN;
  const r = await train({
    source: ds.source,
    modelConfig: mc,
    trainConfig: tc,
    trainCells: ds.train,
    validationCells: new Uint32Array(0),
    maxSteps: steps,
    observers: [
      {
        stepCompleted: (s) => {
          stamps.push(performance.now());
          cells.push(s.nCells);
          if (cells.length === warmup) cpuStart = selfCpuSeconds();
        },
      },
    ],
  });
  const cpuEnd = selfCpuSeconds();
  r.model.dispose();
  const n = cells.slice(warmup).reduce((a, b) => a + b, 0);
  return {
    cellsPerSecond: n / ((stamps[stamps.length - 1]! - stamps[warmup - 1]!) / 1000),
    cpuSecondsPer1000Cells: ((cpuEnd - cpuStart) / n) * 1000,
  };
}

/**
 * The machine's own ceiling for two workers: the worker's math alone (no coordinator, no network)
 * in one process, then in two processes at once. Two busy cores share caches, memory bandwidth and
 * the host, so two processes do not reach twice one even with no communication at all.
 */
async function computeCeiling(dataDir: string, seconds: number): Promise<{ solo: number; pair: number }> {
  const runOne = (): Promise<number> =>
    new Promise((resolve, reject) => {
      const c = fork(simWorkers, ['compute', dataDir, String(seconds)], {
        stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
      });
      let out = '';
      c.stdout!.on('data', (d: Buffer) => {
        out += d.toString('utf8');
      });
      c.once('exit', (code) => {
        if (code !== 0) return reject(new Error(`compute child exited with ${code}`));
        resolve((JSON.parse(out) as { cellsPerSecond: number }).cellsPerSecond);
      });
    });
  const solo = await runOne();
  const [a, b] = await Promise.all([runOne(), runOne()]);
  return { solo, pair: a + b };
}

/** Raw ws ceiling: the server sends `bytes` to each of N echo clients and waits for all N echoes, `rounds` times after `warmup`. */
async function rawWs(
  n: number,
  bytes: number,
  rounds: number,
  warmup: number,
): Promise<{ roundsPerSecond: number; upGBps: number }> {
  const wss = new WebSocketServer({
    host: '127.0.0.1',
    port: 0,
    perMessageDeflate: false,
    maxPayload: 1 << 30,
  });
  await new Promise<void>((r) => wss.once('listening', () => r()));
  const port = (wss.address() as { port: number }).port;
  const clients: WebSocket[] = [];
  const kids = children();
  const connected = new Promise<void>((resolve) =>
    wss.on('connection', (ws) => {
      clients.push(ws);
      if (clients.length === n) resolve();
    }),
  );
  kids.spawn(['raw', `ws://127.0.0.1:${port}`, String(n)], simWorkers);
  await connected;
  const payload = encodeFrame({ type: 'params', version: 0 }, new Float32Array(bytes / 4));
  let pending = 0;
  let done: () => void = () => undefined;
  for (const ws of clients)
    ws.on('message', () => {
      if (--pending === 0) done();
    });
  const round1 = (): Promise<void> =>
    new Promise((r) => {
      done = r;
      pending = n;
      for (const ws of clients) ws.send(payload, { binary: true });
    });
  for (let i = 0; i < warmup; i++) await round1();
  const t0 = performance.now();
  for (let i = 0; i < rounds; i++) await round1();
  const s = (performance.now() - t0) / 1000;
  for (const ws of clients) ws.close();
  await kids.killAll();
  await new Promise<void>((r) => wss.close(() => r()));
  return { roundsPerSecond: rounds / s, upGBps: (rounds * n * payload.byteLength) / s / 1e9 };
}

export async function run(): Promise<Record<string, unknown>> {
  configureLogging({ level: 'error' });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'atlasvae-bench-dist-'));
  try {
    await simulateToDataset({
      ...defaultSimulationOptions,
      cells: 8000,
      genes: GENES,
      out: path.join(dir, 'data'),
      shardCells: 8192,
      seed: 3,
    });
    const ds = await openDataset(path.join(dir, 'data'));
    const data = trainingData(ds);
    const mc = defaultModelConfig(GENES, ds.manifest.batchCategories.length);
    const tc = defaultTrainConfig(ds.manifest.nCells, { globalBatch: 256, microbatch: 128, seed: 1 });
    // steady state, as in part (c): 10 warm-up steps (JIT, heap, the first GCs), then 60 timed
    // (~2–4 s); 4 + 18 steps measured mostly the first, slower steps (one A/B: 0.72 against 0.78)
    const STEPS = 70,
      WARMUP = 10;

    const result: Record<string, unknown> = {};
    if (/[ab]/.test(PARTS)) {
      // (a) throughput
      const single: { cellsPerSecond: number; cpuSecondsPer1000Cells: number }[] = [],
        one: Timed[] = [],
        two: Timed[] = [];
      const ceilings: { solo: number; pair: number }[] = [];
      const stepReports: StepReport[] = [];
      const encodeMs: number[] = [];
      for (let r = 0; r < REPEATS; r++) {
        note(`throughput, repeat ${r + 1}/${REPEATS}`);
        single.push(await singleProcess(ds, mc, tc, STEPS, WARMUP));
        one.push(await distributed(ds, data, mc, tc, 1, STEPS, WARMUP));
        const t2 = await distributed(ds, data, mc, tc, 2, STEPS, WARMUP, false, encodeMs);
        two.push(t2);
        stepReports.push(...t2.reports);
        ceilings.push(await computeCeiling(path.join(dir, 'data'), 5));
      }
      const med = (
        xs: { cellsPerSecond: number; cpuSecondsPer1000Cells: number }[],
        k: 'cellsPerSecond' | 'cpuSecondsPer1000Cells',
      ): number => median(xs.map((x) => x[k]));
      const throughput = {
        genes: GENES,
        globalBatch: tc.globalBatch,
        microbatch: tc.microbatch,
        repeats: REPEATS,
        singleProcessCellsPerSecond: round(med(single, 'cellsPerSecond'), 0),
        oneWorkerCellsPerSecond: round(med(one, 'cellsPerSecond'), 0),
        twoWorkersCellsPerSecond: round(med(two, 'cellsPerSecond'), 0),
        oneWorkerVsSingleProcess: round(med(one, 'cellsPerSecond') / med(single, 'cellsPerSecond'), 3),
        scalingEfficiencyTwoWorkers: round(med(two, 'cellsPerSecond') / (2 * med(one, 'cellsPerSecond')), 3),
        scalingEfficiencyTwoWorkersPaired: round(
          medianOfRatios(
            two.map((x) => x.cellsPerSecond),
            one.map((x) => 2 * x.cellsPerSecond),
          ),
          3,
        ),
        // the same ratio for the worker's math alone, two processes against one, no coordinator:
        // what this machine allows two workers at all
        machineCeiling: {
          mathAloneOneProcessCellsPerSecond: round(median(ceilings.map((c) => c.solo)), 0),
          mathAloneTwoProcessesCellsPerSecond: round(median(ceilings.map((c) => c.pair)), 0),
          twoProcessEfficiency: round(median(ceilings.map((c) => c.pair / (2 * c.solo))), 3),
        },
        scalingEfficiencyOfMachineCeiling: round(
          med(two, 'cellsPerSecond') /
            (2 * med(one, 'cellsPerSecond')) /
            median(ceilings.map((c) => c.pair / (2 * c.solo))),
          3,
        ),
        // load-independent view: CPU seconds spent per 1,000 cells (all processes)
        cpuSecondsPer1000Cells: {
          singleProcess: round(med(single, 'cpuSecondsPer1000Cells'), 3),
          oneWorker: round(med(one, 'cpuSecondsPer1000Cells'), 3),
          twoWorkers: round(med(two, 'cpuSecondsPer1000Cells'), 3),
          coordinatorShareOneWorker: round(median(one.map((x) => x.coordinatorCpuShare)), 3),
          coordinatorShareTwoWorkers: round(median(two.map((x) => x.coordinatorCpuShare)), 3),
        },
        coordinatorGcMsPerStep: {
          oneWorker: round(median(one.map((x) => x.coordinatorGcMsPerStep))),
          twoWorkers: round(median(two.map((x) => x.coordinatorGcMsPerStep))),
        },
        cpuCores: os.cpus().length,
        loadAverage1m: round(os.loadavg()[0]!, 1),
      };

      // (b) coordinator time per step (2 workers), from the coordinator's own step reports
      const k = Math.ceil(tc.globalBatch / tc.microbatch);
      const total = median(stepReports.map((s) => s.totalMs));
      const apply = median(stepReports.map((s) => s.applyMs));
      const broadcast = median(stepReports.map((s) => s.broadcastMs));
      const encode = median(encodeMs) * k;
      const coordinatorMs = apply + broadcast + encode;
      const coordinatorStep = {
        parameters: stepReports.length ? SharedStepOptimizer.fresh(mc, tc).params.length : 0,
        microbatchesPerStep: k,
        stepMs: round(total),
        workerComputeMs: round(median(stepReports.map((s) => s.computeMs))),
        aggregationMs: round(median(stepReports.map((s) => s.aggregationMs))),
        optimizerMs: round(median(stepReports.map((s) => s.optimizerMs))),
        applyAfterLastResultMs: round(apply),
        arrowEncodingMs: round(encode),
        sendingParamsMs: round(broadcast),
        gcMsPerStep: throughput.coordinatorGcMsPerStep.twoWorkers,
        coordinatorMs: round(coordinatorMs),
        coordinatorShareOfStep: round(coordinatorMs / total, 3),
        note: 'gradients are summed in microbatch order as they arrive (aggregationMs, overlapped with waiting for the slowest microbatch); applyAfterLastResultMs (Adam + BatchNorm merge) and sending the parameters are on the critical path; Arrow encoding of the next step overlaps the current one (prefetch) and is counted anyway',
      };

      result.a_throughput = throughput;
      result.b_coordinatorStep = coordinatorStep;
    }

    // (c) capacity with simulated workers
    const gradBytes = 4 * (SharedStepOptimizer.fresh(mc, tc).params.length + bufferLayout(mc).size);
    const capacity: Record<string, unknown>[] = [];
    for (const n of PARTS.includes('c') ? [1, 2, 4, 8, 16, 32] : []) {
      const ctc = defaultTrainConfig(ds.manifest.nCells, { globalBatch: 16 * n, microbatch: 16, seed: 1 });
      // steady state: warm up the JIT and the heap for CAPACITY_WARMUP steps (or echo rounds), then
      // time about 1.5 s; short runs mostly measure the first, unoptimized steps
      const timed = CAPACITY_TIMED[n]!;
      note(`capacity with ${n} simulated workers`);
      // socket only (the same bytes as the raw echo), and with the parameters through shared memory
      // (the default for workers on the coordinator's host: parameters and gradients through files)
      // interleaved, one of each per repeat: this VM drifts between minutes, and a ratio of runs
      // seconds apart is less skewed by that than one of runs a minute apart
      const sps: number[] = [],
        spsShm: number[] = [],
        applyMs: number[] = [];
      const raws: { roundsPerSecond: number; upGBps: number }[] = [];
      for (let r = 0; r < REPEATS; r++) {
        const socket = await distributed(
          ds,
          data,
          mc,
          ctc,
          n,
          CAPACITY_WARMUP + timed,
          CAPACITY_WARMUP,
          true,
          undefined,
          'never',
        );
        sps.push(socket.cellsPerSecond / ctc.globalBatch);
        applyMs.push(...socket.reports.map((s) => s.applyMs));
        raws.push(await rawWs(n, gradBytes, timed, CAPACITY_WARMUP));
        spsShm.push(
          (
            await distributed(
              ds,
              data,
              mc,
              ctc,
              n,
              CAPACITY_WARMUP + timed,
              CAPACITY_WARMUP,
              true,
              undefined,
              'auto',
            )
          ).cellsPerSecond / ctc.globalBatch,
        );
      }
      const stepsPerSecond = median(sps);
      const rawRounds = median(raws.map((x) => x.roundsPerSecond));
      // the parameters leave only once Adam has them (all of them, for workers on this host): the
      // echo's round plus the optimizer's time bounds what the coordinator can reach here
      const adamMs = median(applyMs);
      const echoPlusOptimizer = 1000 / rawRounds / (1000 / rawRounds + adamMs);
      capacity.push({
        workers: n,
        stepsPerSecond: round(stepsPerSecond, 1),
        gradientGBps: round((stepsPerSecond * n * gradBytes) / 1e9, 3),
        rawWsRoundsPerSecond: round(rawRounds, 1),
        rawWsGradientGBps: round(median(raws.map((x) => x.upGBps)), 3),
        fractionOfRawWs: round(stepsPerSecond / rawRounds, 3),
        fractionOfRawWsPaired: round(
          medianOfRatios(
            sps,
            raws.map((x) => x.roundsPerSecond),
          ),
          3,
        ),
        optimizerMsPerStep: round(adamMs, 3),
        fractionBoundByOptimizer: round(echoPlusOptimizer, 3),
        sharedMemory: {
          stepsPerSecond: round(median(spsShm), 1),
          vsRawWs: round(median(spsShm) / rawRounds, 3),
        },
      });
    }
    await ds.close();
    if (capacity.length) {
      result.c_capacity = {
        gradientBytes: gradBytes,
        microbatchCells: 16,
        note: 'raw ws = the same message sizes echoed (server → N clients → server) with no protocol, validation or optimizer; stepsPerSecond and fractionOfRawWs are socket-only (--shared-memory never: the same bytes as the echo); sharedMemory = the default for workers on this host, parameters and gradients through /dev/shm files, only small headers on the socket; fractionBoundByOptimizer = echo round / (echo round + optimizerMsPerStep): the most a coordinator can reach that runs Adam between the last gradient and the first parameter byte, with everything else free',
        points: capacity,
      };
    }
    return result;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
