// Cost of monitoring: microseconds per reported step (metrics + progress), and the time and size
// of one /metrics scrape. Printed as JSON; medians of repeated runs (the machine is shared).
import { CoordinatorMetrics, Progress } from '@atlasvae/coordinator';
import { Logger } from '@atlasvae/shared';

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

export async function run(): Promise<Record<string, unknown>> {
  const m = new CoordinatorMetrics();
  m.trainingStarted({ totalSteps: 1e9, backend: 'js' });
  for (let i = 0; i < 8; i++) m.workerConnected(i % 2 ? 'wasm' : 'tensorflow');
  const progress = new Progress({
    totalSteps: 1e9,
    mode: 'lines',
    logger: new Logger({ sink: { write: () => true } }),
  });
  const n = 20_000;
  const perStepUs: number[] = [];
  for (let rep = 0; rep < 5; rep++) {
    const t0 = performance.now();
    for (let i = 0; i < n; i++) {
      m.observeStep({
        cells: 1024,
        epoch: 1,
        phaseSeconds: { compute: 0.1, communication: 0.01, aggregation: 0.001, optimizer: 0.002 },
        elbo: 1000,
        reconstruction: 990,
        kl: 10,
        klWeight: 0.5,
        learningRate: 1e-3,
        gradientNorm: 3,
      });
      m.bytesSent(1e6);
      m.bytesReceived(1e6);
      progress.update({ cells: 1024, epoch: 1, elbo: 1000 });
    }
    perStepUs.push(((performance.now() - t0) * 1000) / n);
  }
  const scrapeMs: number[] = [];
  let bytes = 0;
  for (let rep = 0; rep < 20; rep++) {
    const t0 = performance.now();
    const text = await m.registry.metrics();
    scrapeMs.push(performance.now() - t0);
    bytes = text.length;
  }
  return {
    metrics_observe_step_us: Number(median(perStepUs).toFixed(2)),
    metrics_scrape_ms: Number(median(scrapeMs).toFixed(2)),
    metrics_scrape_bytes: bytes,
  };
}

// run directly: node test/dist/bench/metrics.js
if (import.meta.url === `file://${process.argv[1]}`) {
  console.log(JSON.stringify(await run()));
}
