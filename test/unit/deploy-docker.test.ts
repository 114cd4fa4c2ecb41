// deploy/docker: no image can be built here (no registry), so the Dockerfiles and compose file are
// checked statically: every path they copy exists (or an earlier stage makes it), the runtime
// stages are non-root with production dependencies only, the GPU image has the CUDA/cuDNN and
// tfjs-node-gpu versions libtensorflow 2.9.1 needs, and entrypoints and commands name real CLI
// commands and flags.
import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { repoRoot } from '../helpers/paths.js';
import { cliCommands, flagValue, unknownFlags } from '../helpers/cli-flags.js';
import { BACKEND_CHOICES } from '@atlasvae/shared/backend';

interface Instr {
  op: string;
  args: string;
}
interface Stage {
  from: string;
  name: string | null;
  instrs: Instr[];
  workdir: string;
}

function parseDockerfile(file: string): Stage[] {
  const text = fs.readFileSync(file, 'utf8').replace(/\\\n/g, ' ');
  const stages: Stage[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const [, op, args] = /^(\w+)\s+(.*)$/.exec(line)!;
    const instr = { op: op!.toUpperCase(), args: args! };
    if (instr.op === 'FROM') {
      const m = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(instr.args)!;
      stages.push({ from: m[1]!, name: m[2] ?? null, instrs: [], workdir: '/' });
    } else if (stages.length) {
      const s = stages.at(-1)!;
      s.instrs.push(instr);
      if (instr.op === 'WORKDIR') s.workdir = path.posix.resolve(s.workdir, instr.args);
    }
  }
  return stages;
}

function words(args: string): string[] {
  return args.trim().startsWith('[') ? (JSON.parse(args) as string[]) : args.trim().split(/\s+/);
}

function copyParts(i: Instr): { from: string | null; sources: string[]; dest: string } {
  const w = words(i.args.replace(/--\w+=\S+\s*/g, ''));
  const from = /--from=(\S+)/.exec(i.args)?.[1] ?? null;
  return { from, sources: w.slice(0, -1), dest: w.at(-1)! };
}

const ignored = fs
  .readFileSync(path.join(repoRoot, '.dockerignore'), 'utf8')
  .split('\n')
  .map((l) => l.trim())
  .filter((l) => l && !l.startsWith('#'));

function checkDockerfile(file: string): Stage[] {
  const stages = parseDockerfile(file);
  const names = new Map(stages.filter((s) => s.name).map((s) => [s.name!, s]));
  const finalStage = stages.at(-1)!;
  for (const [si, s] of stages.entries()) {
    for (const i of s.instrs.filter((x) => x.op === 'COPY')) {
      const { from, sources } = copyParts(i);
      for (const src of sources) {
        if (from === null) {
          assert.ok(
            fs.existsSync(path.join(repoRoot, src)),
            `${path.basename(file)}: COPY ${src}: no such path in the repository`,
          );
          assert.ok(
            !ignored.some((g) => src === g || src.startsWith(`${g}/`)),
            `${path.basename(file)}: COPY ${src} is excluded by .dockerignore`,
          );
          continue;
        }
        const stage = names.get(from);
        assert.ok(
          stage && stages.indexOf(stage) < si,
          `${path.basename(file)}: COPY --from=${from}: no earlier stage of that name`,
        );
        if (stage.instrs.length === 0) continue; // a plain image (e.g. node:20): its own files
        assert.ok(
          src.startsWith(`${stage.workdir}/`),
          `COPY --from=${from} ${src}: outside the stage's ${stage.workdir}`,
        );
        const rel = src.slice(stage.workdir.length + 1);
        const runs = stage.instrs
          .filter((x) => x.op === 'RUN')
          .map((x) => x.args)
          .join(' ; ');
        const copied = stage.instrs.filter((x) => x.op === 'COPY').flatMap((x) => copyParts(x).sources);
        if (rel === 'node_modules') {
          assert.match(runs, /npm ci/, `${from} installs node_modules`);
        } else if (/^(shared|worker|coordinator)\/dist$/.test(rel)) {
          const pkg = rel.split('/')[0]!;
          assert.match(runs, new RegExp(`tsc -b [^;&]*\\b${pkg}\\b`), `${from} compiles ${pkg}`);
          assert.ok(
            copied.includes(`${pkg}/src`) && copied.includes(`${pkg}/tsconfig.json`),
            `${from} copies ${pkg}'s sources and tsconfig`,
          );
          assert.ok(fs.existsSync(path.join(repoRoot, pkg, 'src')));
        } else {
          assert.ok(
            copied.includes(rel),
            `COPY --from=${from} ${src}: the stage neither copies nor builds it`,
          );
        }
      }
    }
  }
  // the root's `prepare` script builds at `npm ci` (for a fresh clone's `npx atlasvae`): in an image
  // the sources are not there yet when dependencies install, and typescript is absent without dev
  // dependencies, so every install must skip lifecycle scripts
  const rootScripts =
    (
      JSON.parse(fs.readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as {
        scripts?: Record<string, string>;
      }
    ).scripts ?? {};
  if (rootScripts.prepare !== undefined) {
    for (const s of stages) {
      for (const i of s.instrs.filter((x) => x.op === 'RUN' && /npm ci\b/.test(x.args))) {
        for (const run of i.args.split('&&').filter((c) => /npm ci\b/.test(c))) {
          assert.match(
            run,
            /--ignore-scripts/,
            `${path.basename(file)}: \`${run.trim()}\` would run the root's prepare script (tsc -b) before the sources are copied`,
          );
        }
      }
    }
  }
  // production dependencies only in the image that runs
  const nm = finalStage.instrs.find(
    (x) => x.op === 'COPY' && copyParts(x).sources.some((p) => p.endsWith('/node_modules')),
  );
  assert.ok(nm, 'the runtime stage copies node_modules from a build stage');
  const nmStage = names.get(copyParts(nm).from!)!;
  const nmRuns = nmStage.instrs
    .filter((x) => x.op === 'RUN')
    .map((x) => x.args)
    .join(' ; ');
  assert.match(nmRuns, /npm ci --omit=dev|npm prune --omit=dev/, 'node_modules without dev dependencies');
  assert.ok(
    !finalStage.instrs.some((x) => x.op === 'RUN' && /npm (ci|install)/.test(x.args)),
    'nothing installed in the runtime stage',
  );
  // non-root
  const user = finalStage.instrs.filter((x) => x.op === 'USER').at(-1)?.args;
  assert.ok(
    user && !/^(root|0)(:|$)/.test(user),
    `${path.basename(file)}: runs as a non-root user (USER ${user})`,
  );
  // the entrypoint is the CLI the build produces; the default command is a real one
  const entry = words(finalStage.instrs.find((x) => x.op === 'ENTRYPOINT')!.args);
  assert.deepEqual(entry, ['node', '/app/coordinator/dist/cli.js']);
  assert.equal(finalStage.workdir, '/app');
  assert.ok(
    finalStage.instrs.some((x) => x.op === 'COPY' && copyParts(x).dest === 'coordinator/dist'),
    'the CLI is in the image',
  );
  assert.ok(fs.existsSync(path.join(repoRoot, 'coordinator/src/cli.ts')));
  const cmd = words(finalStage.instrs.find((x) => x.op === 'CMD')!.args);
  if (!cmd[0]!.startsWith('--')) {
    assert.ok(cliCommands().has(cmd[0]!), `CMD ${cmd[0]} is an atlasvae command`);
    assert.deepEqual(unknownFlags(cmd[0]!, cmd.slice(1)), []);
  }
  return stages;
}

test('Dockerfile (coordinator, CPU workers): sources exist, multi-stage, non-root, production dependencies only', () => {
  const stages = checkDockerfile(path.join(repoRoot, 'deploy/docker/Dockerfile'));
  assert.ok(stages.length >= 2, 'multi-stage');
  assert.match(stages.at(-1)!.from, /^node:20/);
});

test('Dockerfile.gpu: CUDA 11.2 + cuDNN 8 runtime, Node 20, tfjs-node-gpu 4.22.0 with libtensorflow 2.9.1 fetched at build time, memory growth, a JIT cache volume', () => {
  const file = path.join(repoRoot, 'deploy/docker/Dockerfile.gpu');
  const text = fs.readFileSync(file, 'utf8');
  const stages = checkDockerfile(file);
  const cudaImage = /ARG CUDA_IMAGE=(\S+)/.exec(text)?.[1];
  assert.equal(cudaImage, 'nvidia/cuda:11.2.2-cudnn8-runtime-ubuntu20.04');
  assert.equal(stages.at(-1)!.from, '${CUDA_IMAGE}');
  assert.ok(
    stages.some((s) => /^node:20\b/.test(s.from) && s.name === 'node'),
    'Node 20 from its official image',
  );
  assert.match(text, /@tensorflow\/tfjs-node-gpu@4\.22\.0/);
  assert.match(text, /libtensorflow-gpu-linux-x86_64-2\.9\.1\.tar\.gz/);
  assert.match(
    text,
    /deps\/lib\/libtensorflow\.so\.2\.9\.1/,
    'checks the tarball landed where the install script looks',
  );
  const env = stages
    .at(-1)!
    .instrs.filter((x) => x.op === 'ENV')
    .map((x) => x.args)
    .join(' ');
  assert.match(env, /TF_FORCE_GPU_ALLOW_GROWTH=true/);
  const cachePath = /CUDA_CACHE_PATH=(\S+)/.exec(env)?.[1];
  assert.ok(cachePath);
  assert.ok(
    stages.at(-1)!.instrs.some((x) => x.op === 'VOLUME' && x.args.trim() === cachePath),
    'the CUDA cache path is a volume',
  );
});

test("Dockerfile.webgpu: the device engine on Dawn's Vulkan backend, with the webgpu packages installed, the Vulkan loader and the graphics capability for the NVIDIA runtime", () => {
  const file = path.join(repoRoot, 'deploy/docker/Dockerfile.webgpu');
  const text = fs.readFileSync(file, 'utf8');
  const stages = checkDockerfile(file);
  assert.match(stages.at(-1)!.from, /^node:20/);
  const shared = JSON.parse(fs.readFileSync(path.join(repoRoot, 'shared/package.json'), 'utf8')) as {
    optionalDependencies?: Record<string, string>;
    dependencies?: Record<string, string>;
  };
  const deps = { ...shared.dependencies, ...shared.optionalDependencies };
  assert.ok(
    deps.webgpu && deps['@tensorflow/tfjs-backend-webgpu'],
    'shared/package.json names the webgpu packages the image checks for',
  );
  assert.match(
    text,
    /test -d node_modules\/webgpu && test -d node_modules\/@tensorflow\/tfjs-backend-webgpu/,
  );
  const runtime = stages.at(-1)!;
  assert.ok(
    runtime.instrs.some((x) => x.op === 'RUN' && /apt-get install[^;]*\blibvulkan1\b/.test(x.args)),
    'the Vulkan loader is installed',
  );
  const env = runtime.instrs
    .filter((x) => x.op === 'ENV')
    .map((x) => x.args)
    .join(' ');
  assert.match(
    env,
    /NVIDIA_DRIVER_CAPABILITIES=\S*graphics/,
    'the NVIDIA runtime mounts the Vulkan driver only with the graphics capability',
  );
  assert.match(text, /--backend webgpu/);
  assert.ok(BACKEND_CHOICES.includes('webgpu'), 'webgpu is a backend the CLI offers');
});

test('docker-compose.yml: coordinator and workers beside Prometheus and Grafana, with real commands, flags and ports', () => {
  const deploy = path.join(repoRoot, 'deploy');
  const compose = YAML.parse(fs.readFileSync(path.join(deploy, 'docker-compose.yml'), 'utf8'), {
    merge: true,
  }) as { services: Record<string, Record<string, unknown>> };
  const s = compose.services;
  assert.deepEqual(Object.keys(s).sort(), ['coordinator', 'grafana', 'prometheus', 'worker-1', 'worker-2']);
  const promTargets = new Set<string>();
  const prom = YAML.parse(fs.readFileSync(path.join(deploy, 'prometheus/prometheus.yml'), 'utf8')) as {
    scrape_configs: { static_configs?: { targets: string[] }[] }[];
  };
  for (const sc of prom.scrape_configs)
    for (const st of sc.static_configs ?? []) for (const t of st.targets) promTargets.add(t);
  for (const f of fs.readdirSync(path.join(deploy, 'prometheus/targets'))) {
    for (const g of JSON.parse(fs.readFileSync(path.join(deploy, 'prometheus/targets', f), 'utf8')) as {
      targets: string[];
    }[])
      for (const t of g.targets) promTargets.add(t);
  }
  for (const name of ['coordinator', 'worker-1', 'worker-2']) {
    const svc = s[name]!;
    const build = svc.build as { context: string; dockerfile: string };
    assert.ok(
      fs.existsSync(path.join(deploy, build.context, build.dockerfile)),
      `${name}: ${build.dockerfile} exists`,
    );
    const cmd = svc.command as string[];
    assert.ok(cliCommands().has(cmd[0]!), `${name}: ${cmd[0]} is an atlasvae command`);
    assert.deepEqual(unknownFlags(cmd[0]!, cmd.slice(1)), [], `${name}: flags the CLI does not have`);
    assert.ok(
      promTargets.has(`localhost:${flagValue(cmd, 'metrics-port')}`),
      `${name}: its metrics port is one deploy/prometheus scrapes`,
    );
    assert.ok(
      (svc.environment as string[]).includes('ATLASVAE_TOKEN'),
      `${name}: the token comes from the environment`,
    );
    assert.ok(!cmd.some((a) => a.startsWith('--token')), 'no token on the command line');
  }
  const coordPort = flagValue(s.coordinator!.command as string[], 'port');
  for (const w of ['worker-1', 'worker-2'])
    assert.equal(flagValue(s[w]!.command as string[], 'connect'), `ws://127.0.0.1:${coordPort}`);
  for (const svc of Object.values(s)) {
    for (const v of (svc.volumes ?? []) as string[]) {
      const host = v.split(':')[0]!;
      if (host.startsWith('./')) assert.ok(fs.existsSync(path.join(deploy, host)), `volume ${host} exists`);
    }
  }
});
