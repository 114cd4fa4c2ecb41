// The Prometheus file_sd target file of a run (`--prometheus-targets FILE`): the coordinator's
// metrics endpoint and every connected worker's, rewritten as workers join and leave. Prometheus
// re-reads it by itself (`file_sd_configs`), so a scheduler's workers are scraped wherever they
// land. Written to a temporary file and renamed over the old one: a reader never sees half a file.

import fs from 'node:fs';
import path from 'node:path';
import type { WorkerInfo } from './events.js';

export interface TargetGroup {
  targets: string[];
  labels: Record<string, string>;
}

/** A worker's endpoint: its hello's "HOST:PORT", an empty HOST meaning the address it connects from. */
export function workerMetricsTarget(w: Pick<WorkerInfo, 'metrics' | 'remote'>): string | null {
  if (!w.metrics) return null;
  if (!w.metrics.startsWith(':')) return w.metrics;
  const addr = w.remote.slice(0, w.remote.lastIndexOf(':')).replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/, '');
  if (addr === '' || addr === '?') return null;
  return `${addr.includes(':') ? `[${addr}]` : addr}${w.metrics}`;
}

export class PrometheusTargetsFile {
  private readonly workers = new Map<number, TargetGroup>();

  /** `coordinator`: its own "HOST:PORT", or null when it serves no metrics */
  constructor(
    readonly file: string,
    private readonly coordinator: string | null,
  ) {
    this.write();
  }

  workerJoined(w: WorkerInfo): void {
    const target = workerMetricsTarget(w);
    if (target === null) return;
    this.workers.set(w.id, {
      targets: [target],
      labels: { atlasvae_process: 'worker', atlasvae_worker: w.name },
    });
    this.write();
  }

  workerLeft(w: WorkerInfo): void {
    if (this.workers.delete(w.id)) this.write();
  }

  groups(): TargetGroup[] {
    const g: TargetGroup[] = [];
    if (this.coordinator !== null)
      g.push({ targets: [this.coordinator], labels: { atlasvae_process: 'coordinator' } });
    for (const id of [...this.workers.keys()].sort((a, b) => a - b)) g.push(this.workers.get(id)!);
    return g;
  }

  private write(): void {
    const tmp = path.join(path.dirname(this.file), `.${path.basename(this.file)}.${process.pid}.tmp`);
    fs.writeFileSync(tmp, JSON.stringify(this.groups(), null, 2) + '\n');
    fs.renameSync(tmp, this.file);
  }
}
