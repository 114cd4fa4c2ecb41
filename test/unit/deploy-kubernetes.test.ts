// Manifests are parsed YAML checked field by field: the assertions are the type check here.
/* eslint-disable @typescript-eslint/no-explicit-any, @typescript-eslint/no-unsafe-return, @typescript-eslint/no-unsafe-call */
// deploy/kubernetes: every manifest, and every overlay as kustomize would build it, validated
// offline against the Kubernetes (and Prometheus Operator) schemas with `kubernetes-models`; and
// the names that must agree do: image, ports, Secret, volumes, labels, and the CLI's own flags.
import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { Namespace, PersistentVolumeClaim, Secret, Service } from 'kubernetes-models/v1';
import { Job } from 'kubernetes-models/batch/v1';
import { PodMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1';
import { repoRoot } from '../helpers/paths.js';
import { cliCommands, flagValue, unknownFlags } from '../helpers/cli-flags.js';

const root = path.join(repoRoot, 'deploy', 'kubernetes');
const OVERLAYS = ['cpu', 'nvidia-gpu'];

type Obj = Record<string, any>;

const MODELS: Record<string, new (o: Obj) => { validate(): void }> = {
  'v1/Namespace': Namespace,
  'v1/Secret': Secret,
  'v1/Service': Service,
  'v1/PersistentVolumeClaim': PersistentVolumeClaim,
  'batch/v1/Job': Job,
  'monitoring.coreos.com/v1/PodMonitor': PodMonitor as never,
};

function validate(o: Obj, where: string): void {
  const Model = MODELS[`${o.apiVersion}/${o.kind}`];
  assert.ok(Model, `${where}: no schema for ${o.apiVersion} ${o.kind}`);
  try {
    new Model(o).validate();
  } catch (e) {
    assert.fail(`${where}: ${o.kind} ${o.metadata?.name}: ${(e as Error).message}`);
  }
}

function loadYaml(file: string): Obj[] {
  return YAML.parseAllDocuments(fs.readFileSync(file, 'utf8'))
    .map((d) => {
      if (d.errors.length) throw new Error(`${file}: ${d.errors[0]!.message}`);
      return d.toJSON() as Obj;
    })
    .filter((d) => d !== null);
}

/** Strategic-merge as kustomize does for these manifests: maps merge, lists of named items merge by name, other lists are replaced. */
function merge(base: unknown, patch: unknown): unknown {
  if (Array.isArray(base) && Array.isArray(patch)) {
    if (!patch.every((p) => p && typeof p === 'object' && 'name' in p)) return patch;
    const out = base.map((b) => ({ ...b }));
    for (const p of patch as Obj[]) {
      const i = out.findIndex((b) => b.name === p.name);
      if (i >= 0) out[i] = merge(out[i], p) as Obj;
      else out.push(p);
    }
    return out;
  }
  if (
    base &&
    patch &&
    typeof base === 'object' &&
    typeof patch === 'object' &&
    !Array.isArray(base) &&
    !Array.isArray(patch)
  ) {
    const out: Obj = { ...(base as Obj) };
    for (const [k, v] of Object.entries(patch as Obj)) out[k] = k in out ? merge(out[k], v) : v;
    return out;
  }
  return patch;
}

function podSpecs(o: Obj): Obj[] {
  return o.kind === 'Job' ? [o.spec.template.spec] : [];
}

/** What `kustomize build DIR` makes of these files (resources, patches, images, namespace, labels). */
function build(dir: string): Obj[] {
  const k = loadYaml(path.join(dir, 'kustomization.yaml'))[0]!;
  let objs: Obj[] = [];
  for (const r of k.resources as string[]) {
    const p = path.join(dir, r);
    objs.push(...(fs.statSync(p).isDirectory() ? build(p) : loadYaml(p)));
  }
  for (const { path: pf } of (k.patches ?? []) as { path: string }[]) {
    for (const patch of loadYaml(path.join(dir, pf))) {
      const i = objs.findIndex((o) => o.kind === patch.kind && o.metadata.name === patch.metadata.name);
      assert.ok(
        i >= 0,
        `${dir}/${pf}: patches ${patch.kind} ${patch.metadata.name}, which the base does not have`,
      );
      objs[i] = merge(objs[i], patch) as Obj;
    }
  }
  for (const img of (k.images ?? []) as Obj[]) {
    for (const o of objs)
      for (const s of podSpecs(o))
        for (const c of s.containers)
          if (c.image === img.name) c.image = `${img.newName ?? img.name}:${img.newTag}`;
  }
  objs = objs.map((o) => {
    const out = structuredClone(o);
    if (k.namespace && o.kind !== 'Namespace') out.metadata.namespace = k.namespace;
    for (const l of (k.labels ?? []) as Obj[])
      out.metadata.labels = { ...(out.metadata.labels ?? {}), ...l.pairs };
    return out;
  });
  return objs;
}

function find(objs: Obj[], kind: string, name: string): Obj {
  const o = objs.find((x) => x.kind === kind && x.metadata.name === name);
  assert.ok(o, `${kind} ${name} is missing`);
  return o;
}

function containerPort(c: Obj, name: string): number {
  const p = (c.ports ?? []).find((x: Obj) => x.name === name);
  assert.ok(p, `container ${c.name} has no port named ${name}`);
  return p.containerPort;
}

test('every kustomization names files that exist, and every manifest beside it is used', () => {
  for (const dir of [path.join(root, 'base'), ...OVERLAYS.map((o) => path.join(root, 'overlays', o))]) {
    const k = loadYaml(path.join(dir, 'kustomization.yaml'))[0]!;
    const used = [...(k.resources as string[]), ...((k.patches ?? []) as Obj[]).map((p) => p.path as string)];
    for (const f of used) assert.ok(fs.existsSync(path.join(dir, f)), `${dir}: ${f} does not exist`);
    const yamls = fs.readdirSync(dir).filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml');
    assert.deepEqual(
      yamls.filter((f) => !used.includes(f)),
      [],
      `${dir}: manifests no kustomization uses`,
    );
  }
});

test('every base manifest and every built overlay validates against the Kubernetes schemas', () => {
  for (const f of fs.readdirSync(path.join(root, 'base')).filter((n) => n !== 'kustomization.yaml')) {
    for (const o of loadYaml(path.join(root, 'base', f))) validate(o, `base/${f}`);
  }
  for (const overlay of OVERLAYS) {
    const objs = build(path.join(root, 'overlays', overlay));
    assert.equal(objs.length, 7);
    for (const o of objs) validate(o, `overlays/${overlay}`);
  }
  // the validator is really at work: a wrong completion mode and a non-integer parallelism fail
  const workers = find(build(path.join(root, 'overlays', 'cpu')), 'Job', 'atlasvae-workers');
  assert.throws(
    () => new Job({ ...workers, spec: { ...workers.spec, completionMode: 'Ordered' } }).validate(),
    /completionMode/,
  );
  assert.throws(
    () => new Job({ ...workers, spec: { ...workers.spec, parallelism: 'two' } }).validate(),
    /parallelism/,
  );
});

for (const overlay of OVERLAYS) {
  test(`overlays/${overlay}: image, ports, Secret, volumes, labels and CLI flags agree`, () => {
    const objs = build(path.join(root, 'overlays', overlay));
    const k = loadYaml(path.join(root, 'overlays', overlay, 'kustomization.yaml'))[0]!;
    const coordJob = find(objs, 'Job', 'atlasvae-coordinator');
    const workersJob = find(objs, 'Job', 'atlasvae-workers');
    const service = find(objs, 'Service', 'atlasvae-coordinator');
    const secret = find(objs, 'Secret', 'atlasvae-token');
    const pvc = find(objs, 'PersistentVolumeClaim', 'atlasvae-data');
    const podMonitor = find(objs, 'PodMonitor', 'atlasvae');
    const coordPod = coordJob.spec.template;
    const workerPod = workersJob.spec.template;
    const [coord] = coordPod.spec.containers as Obj[];
    const [worker] = workerPod.spec.containers as Obj[];
    assert.ok(coord && worker);

    // one image, the overlay's
    const img = (k.images as Obj[])[0]!;
    assert.equal(coord.image, `${img.newName}:${img.newTag}`);
    assert.equal(worker.image, coord.image);

    // real commands and flags
    const commands = cliCommands();
    for (const [c, cmd] of [
      [coord, 'coordinator'],
      [worker, 'worker'],
    ] as const) {
      assert.equal(c.args[0], cmd);
      assert.ok(commands.has(cmd));
      assert.deepEqual(unknownFlags(cmd, c.args.slice(1)), [], `${cmd}: flags the CLI does not have`);
    }

    // the WebSocket port: coordinator flag = container port = Service target; workers dial the Service
    const port = Number(flagValue(coord.args, 'port'));
    assert.equal(containerPort(coord, 'ws'), port);
    const wsPort = (service.spec.ports as Obj[]).find((p) => p.name === 'ws')!;
    assert.equal(wsPort.targetPort, 'ws');
    assert.equal(flagValue(worker.args, 'connect'), `ws://${service.metadata.name}:${wsPort.port}`);
    for (const [key, v] of Object.entries(service.spec.selector as Record<string, string>))
      assert.equal(coordPod.metadata.labels[key], v, `Service selector ${key}`);

    // metrics: flag = container port = annotations = probes; the PodMonitor selects both pods by port name
    for (const [c, pod] of [
      [coord, coordPod],
      [worker, workerPod],
    ] as const) {
      const mport = Number(flagValue(c.args, 'metrics-port'));
      assert.equal(containerPort(c, 'metrics'), mport);
      assert.equal(pod.metadata.annotations['prometheus.io/port'], String(mport));
      assert.equal(pod.metadata.annotations['atlasvae.io/metrics-port'], String(mport));
      assert.equal(pod.metadata.annotations['atlasvae.io/scrape'], 'true');
      for (const probe of ['readinessProbe', 'livenessProbe', 'startupProbe']) {
        const p = c[probe];
        if (!p) continue;
        const target = p.httpGet?.port ?? p.tcpSocket?.port;
        assert.ok(target === 'metrics' || target === mport, `${c.name} ${probe} on the metrics port`);
        if (p.httpGet) assert.equal(p.httpGet.path, '/healthz');
      }
      for (const [key, v] of Object.entries(podMonitor.spec.selector.matchLabels as Record<string, string>))
        assert.equal(pod.metadata.labels[key], v);
      assert.equal(podMonitor.spec.podMetricsEndpoints[0].port, 'metrics');
    }
    assert.equal(
      (service.spec.ports as Obj[]).find((p) => p.name === 'metrics')!.port,
      Number(flagValue(coord.args, 'metrics-port')),
    );

    // the token: every reference names the Secret and a key it has
    for (const c of [coord, worker]) {
      const refs = (c.env as Obj[])
        .filter((e) => e.valueFrom?.secretKeyRef)
        .map((e) => e.valueFrom.secretKeyRef);
      assert.ok(
        refs.length === 1 &&
          (c.env as Obj[]).some((e) => e.name === 'ATLASVAE_TOKEN' && e.valueFrom?.secretKeyRef),
        `${c.name} takes ATLASVAE_TOKEN from the Secret`,
      );
      for (const r of refs) {
        assert.equal(r.name, secret.metadata.name);
        assert.ok(r.key in secret.stringData, `Secret has key ${r.key}`);
      }
      assert.ok(!c.args.some((a: string) => a.startsWith('--token')), 'no token on the command line');
    }

    // volumes: every mount has a volume; the coordinator's data and checkpoint are on the PVC
    for (const [c, pod] of [
      [coord, coordPod],
      [worker, workerPod],
    ] as const) {
      const vols = new Set(((pod.spec.volumes ?? []) as Obj[]).map((v) => v.name));
      for (const m of (c.volumeMounts ?? []) as Obj[])
        assert.ok(vols.has(m.name), `${c.name}: mount ${m.name} has a volume`);
    }
    const dataVol = (coordPod.spec.volumes as Obj[]).find((v) => v.persistentVolumeClaim)!;
    assert.equal(dataVol.persistentVolumeClaim.claimName, pvc.metadata.name);
    const mount = (coord.volumeMounts as Obj[]).find((m) => m.name === dataVol.name)!;
    for (const f of ['data', 'checkpoint'])
      assert.ok(flagValue(coord.args, f)!.startsWith(`${mount.mountPath}/`), `--${f} is on the PVC`);
    assert.ok(coord.args.includes('--resume'), 'a restarted coordinator pod resumes');

    // workers: an Indexed Job of exactly --min-workers pods
    assert.equal(workersJob.spec.completionMode, 'Indexed');
    assert.equal(workersJob.spec.completions, workersJob.spec.parallelism);
    assert.equal(workersJob.spec.completions, Number(flagValue(coord.args, 'min-workers')));
    for (const pod of [coordPod, workerPod]) assert.equal(pod.spec.securityContext.runAsNonRoot, true);

    const gpus = worker.resources.limits['nvidia.com/gpu'];
    const env = Object.fromEntries(
      (worker.env as Obj[]).filter((e) => 'value' in e).map((e) => [e.name, e.value]),
    );
    if (overlay === 'nvidia-gpu') {
      assert.equal(gpus, 1, 'one GPU per worker pod');
      assert.equal(flagValue(worker.args, 'backend'), 'tensorflow');
      assert.equal(env.TF_FORCE_GPU_ALLOW_GROWTH, 'true');
      const cache = (worker.volumeMounts as Obj[]).find((m) => m.name === 'cuda-cache');
      assert.equal(env.CUDA_CACHE_PATH, cache?.mountPath, 'the CUDA JIT cache is on its volume');
      assert.equal(coord.resources.limits['nvidia.com/gpu'], undefined, 'the coordinator needs no GPU');
    } else {
      assert.equal(gpus, undefined);
      assert.equal(flagValue(worker.args, 'backend'), 'wasm');
    }
  });
}
