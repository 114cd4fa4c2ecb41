// The monitoring stack for real: a Prometheus server (the Debian package's binary) scrapes a live
// training run (a simulated atlas, a coordinator and worker processes on loopback), and every
// PromQL expression of every panel of the shipped Grafana dashboard must return data through
// Prometheus' HTTP API. promtool checks the shipped configuration and the scraped exposition.
//
// Skips (with a message) only when the prometheus/promtool binaries are absent; CI installs them.
// About a minute on 2 cores.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { WebSocket } from 'ws';
import { cliPath, repoRoot, tempDir } from '../helpers/paths.js';
import { freePort } from '../helpers/net.js';

const DASHBOARD = path.join(repoRoot, 'deploy/grafana/dashboards/atlasvae-training.json');
const PROM_CONFIG = path.join(repoRoot, 'deploy/prometheus/prometheus.yml');
const PROM_K8S_CONFIG = path.join(repoRoot, 'deploy/prometheus/prometheus-kubernetes.yml');
const PROM_ALERTS = path.join(repoRoot, 'deploy/prometheus/alerts.yml');
const TOKEN = 'prometheus-test-token';
/** what Grafana's $__rate_interval would be with a 1 s scrape interval, generously */
const RATE_INTERVAL = '10s';

function which(bin: string): string | null {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    const p = path.join(dir, bin);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  return null;
}

const prometheusBin = which('prometheus');
const promtoolBin = which('promtool');
const skip =
  prometheusBin && promtoolBin
    ? false
    : `the prometheus and promtool binaries are not on PATH (Debian: apt-get install prometheus): skipped`;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A child process whose output is kept for the failure message. */
class Proc {
  readonly child: ChildProcess;
  output = '';
  /** stderr alone: logs and progress */
  stderr = '';
  exited: Promise<number | null>;
  /** stopped on purpose: its exit is no failure */
  stopping = false;

  constructor(
    readonly name: string,
    cmd: string,
    args: string[],
    env: NodeJS.ProcessEnv = {},
  ) {
    this.child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    const keep = (d: Buffer): void => {
      this.output += d.toString();
      if (this.output.length > 200_000) this.output = this.output.slice(-100_000);
    };
    this.child.stdout!.on('data', keep);
    this.child.stderr!.on('data', keep);
    this.child.stderr!.on('data', (d: Buffer) => {
      if (this.stderr.length < 5_000_000) this.stderr += d.toString();
    });
    this.exited = new Promise((resolve) => this.child.once('exit', (code) => resolve(code)));
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    this.stopping = true;
    if (!this.running) return;
    this.child.kill(signal);
    const t = setTimeout(() => this.child.kill('SIGKILL'), 5000);
    await this.exited;
    clearTimeout(t);
  }

  /** The first match of `re` in the output; fails with `diagnostics()` if the process exits first or after `ms`. */
  async waitFor(re: RegExp, diagnostics: () => string, ms = 60_000): Promise<RegExpMatchArray> {
    const deadline = Date.now() + ms;
    for (;;) {
      const m = this.output.match(re);
      if (m) return m;
      if (!this.running)
        assert.fail(
          `${this.name} exited (code ${this.child.exitCode}) before printing ${re}\n${diagnostics()}`,
        );
      if (Date.now() > deadline)
        assert.fail(`timed out waiting for ${this.name} to print ${re}\n${diagnostics()}`);
      await sleep(50);
    }
  }

  tail(lines = 25): string {
    return `--- ${this.name} (last lines) ---\n${this.output.split('\n').slice(-lines).join('\n')}`;
  }
}

function promtool(args: string[], input?: string): { status: number | null; out: string } {
  const r = spawnSync(promtoolBin!, args, { input, encoding: 'utf8' });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

/** Every PromQL expression of every panel (rows may nest panels), with its panel title. */
export function dashboardExpressions(dashboard: unknown): { panel: string; expr: string }[] {
  const out: { panel: string; expr: string }[] = [];
  const visit = (panels: unknown): void => {
    if (!Array.isArray(panels)) return;
    for (const p of panels as { title?: string; targets?: { expr?: string }[]; panels?: unknown }[]) {
      for (const t of p.targets ?? []) if (t.expr) out.push({ panel: p.title ?? '(untitled)', expr: t.expr });
      visit(p.panels);
    }
  };
  visit((dashboard as { panels?: unknown }).panels);
  return out;
}

interface PromVectorResult {
  metric: Record<string, string>;
  value: [number, string];
}

async function instantQuery(promUrl: string, expr: string): Promise<PromVectorResult[]> {
  const res = await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent(expr)}`);
  const body = (await res.json()) as {
    status: string;
    error?: string;
    data?: { resultType: string; result: PromVectorResult[] };
  };
  if (body.status !== 'success') throw new Error(`query failed: ${expr}: ${body.error ?? res.status}`);
  assert.equal(body.data!.resultType, 'vector', expr);
  return body.data!.result;
}

/** At least one series with a finite value. */
function hasData(result: PromVectorResult[]): boolean {
  return result.some((r) => Number.isFinite(Number(r.value[1])));
}

test('the shipped Prometheus configuration and alert rules pass promtool', { skip }, (t) => {
  const cfg = promtool(['check', 'config', PROM_CONFIG]);
  assert.equal(cfg.status, 0, cfg.out);
  assert.match(cfg.out, /SUCCESS/);
  const rules = promtool(['check', 'rules', PROM_ALERTS]);
  assert.equal(rules.status, 0, rules.out);
  const k8s = promtool(['check', 'config', PROM_K8S_CONFIG]);
  if (/field kubernetes_sd_configs not found/.test(k8s.out)) {
    // Debian builds Prometheus without Kubernetes discovery: that file cannot be checked here
    t.diagnostic(
      `${path.basename(PROM_K8S_CONFIG)} not checked: this promtool was built without Kubernetes discovery`,
    );
  } else {
    assert.equal(k8s.status, 0, k8s.out);
  }
});

test(
  'a real Prometheus scraping a live training run answers every dashboard query',
  { skip, timeout: 240_000 },
  async (t) => {
    const dir = tempDir('atlasvae-prom-');
    const procs: Proc[] = [];
    const cleanup = async (): Promise<void> => {
      await Promise.all(procs.map((p) => p.stop()));
    };
    t.after(async () => {
      await cleanup();
      fs.rmSync(dir, { recursive: true, force: true });
    });
    const diagnostics = (): string => procs.map((p) => p.tail()).join('\n');

    // 1. a small simulated atlas, prepared
    const data = path.join(dir, 'atlas');
    const sim = spawnSync(
      process.execPath,
      [cliPath, 'simulate', '--cells', '3000', '--genes', '200', '--seed', '3', '--out', data],
      {
        encoding: 'utf8',
      },
    );
    assert.equal(sim.status, 0, `atlasvae simulate failed:\n${sim.stdout}${sim.stderr}`);

    // 2. coordinator and three workers, each with its metrics port. Every process listens on a port
    // of its own choosing (0) and the test reads it from the log: a port picked free beforehand can be
    // taken as the ephemeral port of another connection in the meantime (seen: EADDRINUSE in CI).
    const ckpt = path.join(dir, 'ckpt');
    const coordinator = new Proc('coordinator', process.execPath, [
      cliPath,
      'coordinator',
      '--data',
      data,
      '--host',
      '127.0.0.1',
      '--port',
      '0',
      '--token',
      TOKEN,
      '--min-workers',
      '2',
      '--epochs',
      '5000',
      '--global-batch',
      '384',
      '--microbatch',
      '128',
      '--checkpoint',
      ckpt,
      '--checkpoint-every',
      '20',
      '--metrics-port',
      '0',
      '--metrics-host',
      '127.0.0.1',
      '--log-format',
      'json',
    ]);
    procs.push(coordinator);
    const wsPort = Number(
      (
        await coordinator.waitFor(
          /"msg":"coordinator listening"[^\n]*"url":"ws:\/\/127\.0\.0\.1:(\d+)"/,
          diagnostics,
        )
      )[1],
    );
    const coordMetricsPort = Number(
      (await coordinator.waitFor(/"msg":"metrics server listening"[^\n]*"port":(\d+)/, diagnostics))[1],
    );
    const startWorker = (i: number): Proc => {
      const w = new Proc(`worker ${i}`, process.execPath, [
        cliPath,
        'worker',
        '--connect',
        `ws://127.0.0.1:${wsPort}`,
        '--token',
        TOKEN,
        '--backend',
        'wasm',
        '--name',
        `w${i}`,
        '--metrics-port',
        '0',
        '--metrics-host',
        '127.0.0.1',
      ]);
      procs.push(w);
      return w;
    };
    const workers = [startWorker(0), startWorker(1), startWorker(2)];
    const workerPorts: number[] = [];
    for (const w of workers)
      workerPorts.push(
        Number((await w.waitFor(/metrics server listening url=\S+ port=(\d+)/, diagnostics))[1]),
      );

    // 3. Prometheus: the coordinator as a static target, the workers through file discovery
    const targetsDir = path.join(dir, 'targets');
    fs.mkdirSync(targetsDir);
    fs.writeFileSync(
      path.join(targetsDir, 'workers.json'),
      JSON.stringify([{ targets: workerPorts.map((p) => `127.0.0.1:${p}`), labels: { cluster: 'test' } }]),
    );
    fs.copyFileSync(PROM_ALERTS, path.join(dir, 'alerts.yml'));
    const promConfig = path.join(dir, 'prometheus.yml');
    fs.writeFileSync(
      promConfig,
      [
        'global:',
        '  scrape_interval: 1s',
        '  scrape_timeout: 900ms',
        '  evaluation_interval: 1s',
        'rule_files: [alerts.yml]',
        'scrape_configs:',
        '  - job_name: atlasvae-coordinator',
        '    static_configs:',
        `      - targets: ["127.0.0.1:${coordMetricsPort}"]`,
        '  - job_name: atlasvae-workers',
        '    file_sd_configs:',
        `      - files: ["${path.join(targetsDir, '*.json')}"]`,
        '        refresh_interval: 5s',
        '',
      ].join('\n'),
    );
    const generated = promtool(['check', 'config', promConfig]);
    assert.equal(generated.status, 0, generated.out);
    // Prometheus cannot report a port it chose: pick one, and start it at once
    const promPort = await freePort();
    const prometheus = new Proc('prometheus', prometheusBin!, [
      `--config.file=${promConfig}`,
      `--storage.tsdb.path=${path.join(dir, 'tsdb')}`,
      `--web.listen-address=127.0.0.1:${promPort}`,
      '--log.level=warn',
    ]);
    procs.push(prometheus);
    const promUrl = `http://127.0.0.1:${promPort}`;

    const waitFor = async (what: string, cond: () => Promise<boolean>, ms: number): Promise<void> => {
      const deadline = Date.now() + ms;
      for (;;) {
        try {
          if (await cond()) return;
        } catch {
          // not up yet
        }
        for (const p of procs)
          if (!p.running && !p.stopping)
            assert.fail(
              `${p.name} exited (code ${p.child.exitCode}) while waiting for ${what}\n${diagnostics()}`,
            );
        if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}\n${diagnostics()}`);
        await sleep(250);
      }
    };

    // 4. training is live: healthz says so on the coordinator and every worker
    await waitFor(
      'the coordinator to train',
      async () => (await fetch(`http://127.0.0.1:${coordMetricsPort}/healthz`)).status === 200,
      90_000,
    );
    for (const p of workerPorts) {
      await waitFor(
        `worker on ${p} to be live`,
        async () => (await fetch(`http://127.0.0.1:${p}/healthz`)).status === 200,
        30_000,
      );
    }
    await waitFor('Prometheus to be ready', async () => (await fetch(`${promUrl}/-/ready`)).ok, 30_000);

    // 5. what the error panels show: a wrong token, garbage on an authenticated connection, a worker killed mid-run
    await rejectedConnection(wsPort);
    await garbageMessage(wsPort);
    await sleep(3000);
    await workers[2]!.stop('SIGKILL');

    // 6. every target up
    await waitFor(
      'all four targets up in Prometheus',
      async () => {
        const res = (await (await fetch(`${promUrl}/api/v1/targets`)).json()) as {
          data: { activeTargets: { health: string; scrapeUrl: string }[] };
        };
        const up = res.data.activeTargets.filter((x) => x.health === 'up').map((x) => x.scrapeUrl);
        // the killed worker is down by now; the other three must be up
        return up.length >= 3 && up.some((u) => u.includes(String(coordMetricsPort)));
      },
      30_000,
    );

    // 7. wait until Prometheus has seen every kind of event of the run (validation passes start
    // after the first epoch, in a thread that loads its own backend)
    const facts = [
      'atlasvae_elbo{role="coordinator",split="validation"}',
      'atlasvae_checkpoints_total{role="coordinator"} > 0',
      'atlasvae_worker_disconnects_total{role="coordinator"} > 0',
      'atlasvae_rejected_connections_total{role="coordinator",reason="bad-token"} > 0',
      'atlasvae_rejected_messages_total{role="coordinator"} > 0',
      'atlasvae_cells_total{role="worker"} > 0',
    ];
    const notYet = new Set<string>();
    await waitFor(
      "the run's events in Prometheus",
      async () => {
        notYet.clear();
        for (const f of facts) if (!hasData(await instantQuery(promUrl, f))) notYet.add(f);
        return notYet.size === 0;
      },
      60_000,
    ).catch((err: Error) => {
      throw new Error(`${err.message}\nmissing: ${[...notYet].join(', ')}`);
    });

    // 8. the dashboard: every expression of every panel returns data
    const dashboard = JSON.parse(fs.readFileSync(DASHBOARD, 'utf8')) as unknown;
    const exprs = dashboardExpressions(dashboard);
    assert.ok(exprs.length >= 20, `the dashboard has ${exprs.length} expressions`);
    const substituted = exprs.map((e) => ({
      ...e,
      expr: e.expr.replaceAll('$__rate_interval', RATE_INTERVAL),
    }));
    for (const e of substituted)
      assert.doesNotMatch(e.expr, /\$/, `panel "${e.panel}" uses a template variable the test does not know`);
    const missing = new Map<string, string>();
    await waitFor(
      'every dashboard expression to return data',
      async () => {
        missing.clear();
        for (const e of substituted) {
          const r = await instantQuery(promUrl, e.expr);
          if (!hasData(r)) missing.set(e.expr, e.panel);
        }
        return missing.size === 0;
      },
      60_000,
    ).catch((err: Error) => {
      throw new Error(
        `${err.message}\nno data for:\n${[...missing].map(([x, p]) => `  [${p}] ${x}`).join('\n')}`,
      );
    });

    // 9. and the numbers are the run's: workers by backend, throughput, losses, rejections
    const connected = await instantQuery(
      promUrl,
      'sum by (backend) (atlasvae_workers_connected{role="coordinator"})',
    );
    assert.deepEqual(
      connected.map((r) => [r.metric.backend, Number(r.value[1])]),
      [['wasm', 2]],
      'two wasm workers left after the kill',
    );
    const cps = Number(
      (await instantQuery(promUrl, 'sum(rate(atlasvae_cells_total{role="coordinator"}[1m]))'))[0]!.value[1],
    );
    assert.ok(cps > 0, `cells/s ${cps}`);
    const rejected = await instantQuery(
      promUrl,
      'sum by (reason) (atlasvae_rejected_connections_total{role="coordinator"})',
    );
    assert.ok(
      rejected.some((r) => r.metric.reason === 'bad-token' && Number(r.value[1]) >= 1),
      JSON.stringify(rejected),
    );
    const badMessages = Number(
      (await instantQuery(promUrl, 'sum(atlasvae_rejected_messages_total{role="coordinator"})'))[0]!.value[1],
    );
    assert.ok(badMessages >= 1, 'the garbage frame was counted');
    const lost = Number(
      (await instantQuery(promUrl, 'sum(atlasvae_worker_disconnects_total{role="coordinator"})'))[0]!
        .value[1],
    );
    assert.ok(lost >= 1, 'the killed worker was counted');
    const elbo = await instantQuery(promUrl, 'atlasvae_elbo{role="coordinator"}');
    assert.deepEqual(elbo.map((r) => r.metric.split).sort(), ['train', 'validation']);
    for (const r of elbo)
      assert.ok(Number(r.value[1]) > 0 && Number(r.value[1]) < 1e6, `ELBO ${r.metric.split} = ${r.value[1]}`);
    const phases = await instantQuery(
      promUrl,
      'sum by (phase) (atlasvae_step_duration_seconds_count{role="coordinator"})',
    );
    assert.deepEqual(
      phases.map((r) => r.metric.phase).sort(),
      ['aggregation', 'communication', 'compute', 'optimizer'],
      'every phase of a step is timed',
    );
    for (const r of phases) assert.ok(Number(r.value[1]) > 0);
    const workerPhases = await instantQuery(
      promUrl,
      'sum by (phase) (atlasvae_step_duration_seconds_count{role="worker"})',
    );
    assert.deepEqual(workerPhases.map((r) => r.metric.phase).sort(), ['communication', 'compute']);
    const backends = await instantQuery(promUrl, 'count by (role, backend) (atlasvae_backend_info)');
    assert.ok(
      backends.some((r) => r.metric.role === 'worker' && r.metric.backend === 'wasm'),
      JSON.stringify(backends),
    );

    // 10. promtool lints what was scraped
    for (const port of [coordMetricsPort, workerPorts[0]!]) {
      const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      const lint = promtool(['check', 'metrics'], text);
      assert.equal(lint.status, 0, `promtool check metrics on :${port}:\n${lint.out}`);
    }

    // 11. the rules loaded and evaluate
    const rules = (await (await fetch(`${promUrl}/api/v1/rules`)).json()) as {
      data: { groups: { rules: { health: string; name: string }[] }[] };
    };
    const loaded = rules.data.groups.flatMap((g) => g.rules);
    assert.ok(loaded.length >= 5);
    for (const r of loaded) assert.notEqual(r.health, 'err', `alert ${r.name} fails to evaluate`);

    // 12. the coordinator ran with --log-format json: every stderr line is a JSON record, progress included.
    // Progress lines come every 5 s; on a fast machine the checks above can finish sooner, so wait
    // (bounded) for one that carries a rate before stopping the run.
    await waitFor(
      'a JSON progress record with a rate',
      async () =>
        coordinator.stderr
          .split('\n')
          .some((l) => l.includes('"msg":"progress"') && /"cellsPerSecond":[1-9]/.test(l)),
      30_000,
    );
    await cleanup();
    const lines = coordinator.stderr.split('\n').filter((l) => l.trim() !== '');
    assert.ok(lines.length > 5);
    const records = lines.map((l) => {
      try {
        return JSON.parse(l) as Record<string, unknown>;
      } catch {
        return assert.fail(`not a JSON log line: ${l}`);
      }
    });
    for (const r of records)
      assert.ok(
        typeof r.time === 'string' && typeof r.level === 'string' && typeof r.msg === 'string',
        JSON.stringify(r),
      );
    const progress = records.filter((r) => r.msg === 'progress' || r.msg === 'progress done');
    assert.ok(progress.length >= 1, 'progress records');
    const lastProgress = progress.at(-1)!;
    assert.equal(lastProgress.task, 'training');
    assert.ok(
      (lastProgress.step as number) > 0 && (lastProgress.cellsPerSecond as number) > 0,
      JSON.stringify(lastProgress),
    );
  },
);

/** A connection with a wrong token must be refused (and counted as a rejected connection). */
async function rejectedConnection(port: number): Promise<void> {
  await new Promise<void>((resolve) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}`, { headers: { authorization: 'Bearer wrong-token' } });
    ws.on('error', () => resolve());
    ws.on('unexpected-response', () => resolve());
    ws.on('close', () => resolve());
    setTimeout(() => {
      ws.terminate();
      resolve();
    }, 5000);
  });
}

/** An authenticated connection that sends bytes no message decodes from. */
async function garbageMessage(port: number): Promise<void> {
  await new Promise<void>((resolve) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}`, { headers: { authorization: `Bearer ${TOKEN}` } });
    ws.on('open', () => ws.send(Buffer.from([0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9])));
    ws.on('error', () => resolve());
    ws.on('close', () => resolve());
    setTimeout(() => {
      ws.terminate();
      resolve();
    }, 5000);
  });
}
