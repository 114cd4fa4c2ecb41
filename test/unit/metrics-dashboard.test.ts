// The shipped dashboard and alert rules against the metrics the code exports: every metric name
// they mention exists (a renamed metric would silently empty a panel), every panel is wired to
// the datasource variable and fits the grid. Prometheus itself evaluates them in
// test/integration/prometheus.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { CoordinatorMetrics } from '@atlasvae/coordinator';
import { WorkerMetrics } from '@atlasvae/worker';
import { repoRoot } from '../helpers/paths.js';

interface Panel {
  id: number;
  type: string;
  title: string;
  datasource?: { uid?: string };
  gridPos: { x: number; y: number; w: number; h: number };
  targets?: { expr: string; refId: string }[];
  panels?: Panel[];
}

function exportedNames(): Set<string> {
  const names = new Set<string>();
  for (const reg of [new CoordinatorMetrics().registry, new WorkerMetrics().registry]) {
    for (const m of reg.getMetricsAsArray()) {
      names.add(m.name);
      if ((m as { type?: unknown }).type === 'histogram' || m.constructor.name === 'Histogram') {
        for (const s of ['_bucket', '_sum', '_count']) names.add(m.name + s);
      }
    }
  }
  return names;
}

/** Metric names in a PromQL expression: identifiers followed by `{`, `[` or a space/paren, minus functions and keywords. */
function metricNames(expr: string): string[] {
  const stripped = expr.replace(/"[^"]*"/g, '""');
  const words = stripped.match(/[a-zA-Z_:][a-zA-Z0-9_:]*/g) ?? [];
  return words.filter((w) => /^(atlasvae|process|nodejs)_/.test(w));
}

const dashboard = JSON.parse(
  fs.readFileSync(path.join(repoRoot, 'deploy/grafana/dashboards/atlasvae-training.json'), 'utf8'),
) as {
  uid: string;
  panels: Panel[];
  templating: { list: { name: string; type: string }[] };
};

function allPanels(ps: Panel[]): Panel[] {
  return ps.flatMap((p) => [p, ...allPanels(p.panels ?? [])]);
}

test('every metric the dashboard and the alert rules query is exported', () => {
  const names = exportedNames();
  const used = new Set<string>();
  for (const p of allPanels(dashboard.panels))
    for (const t of p.targets ?? []) for (const n of metricNames(t.expr)) used.add(n);
  const alerts = fs.readFileSync(path.join(repoRoot, 'deploy/prometheus/alerts.yml'), 'utf8');
  for (const line of alerts.split('\n'))
    if (/^\s*expr:/.test(line)) for (const n of metricNames(line)) used.add(n);
  assert.ok(used.size >= 20, `only ${used.size} metric names found`);
  const unknown = [...used].filter((n) => !names.has(n));
  assert.deepEqual(unknown, [], 'queried but not exported');
  // and the other way round: every atlasvae metric appears on the dashboard or in the alerts
  const shown = [...names].filter((n) => n.startsWith('atlasvae_') && !/_(bucket|count)$/.test(n));
  const notShown = shown.filter((n) => !used.has(n) && !used.has(`${n}_sum`) && !used.has(`${n}_bucket`));
  assert.deepEqual(
    notShown.sort(),
    [
      'atlasvae_checkpoint_timestamp_seconds',
      'atlasvae_checkpoints_total',
      'atlasvae_connections_total',
      'atlasvae_coordinator_connected',
      'atlasvae_microbatches_total',
    ].sort(),
    'metrics not on the dashboard',
  );
});

test('dashboard structure: datasource variable, unique ids, panels on the 24-column grid, five rows', () => {
  assert.equal(dashboard.uid, 'atlasvae-training');
  assert.ok(dashboard.templating.list.some((v) => v.name === 'datasource' && v.type === 'datasource'));
  const panels = allPanels(dashboard.panels);
  const ids = panels.map((p) => p.id);
  assert.equal(new Set(ids).size, ids.length, 'panel ids are unique');
  for (const p of panels) {
    assert.ok(p.gridPos.x >= 0 && p.gridPos.x + p.gridPos.w <= 24, `${p.title} fits the grid`);
    if (p.type === 'row') continue;
    assert.equal(p.datasource?.uid, '${datasource}', `${p.title} uses the datasource variable`);
    assert.ok((p.targets ?? []).length > 0, `${p.title} has queries`);
    for (const t of p.targets!) {
      assert.match(t.expr, /\brole\b/, `${p.title}: ${t.expr} selects or groups by role`);
      if (/\b(rate|increase)\(/.test(t.expr))
        assert.match(t.expr, /\[\$__rate_interval\]/, `${p.title}: rate windows follow the scrape interval`);
    }
  }
  assert.deepEqual(
    panels.filter((p) => p.type === 'row').map((p) => p.title),
    ['Throughput', 'ELBO', 'Step time', 'Workers', 'Errors'],
  );
});
