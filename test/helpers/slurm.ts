// A real one-node Slurm cluster on loopback for tests (../shared/recipes/slurm-single-node.md):
// munged (reused when one already answers), slurmctld and slurmd on free non-default ports, and
// two stand-in GPUs declared as GRES (character devices), so `--gpus-per-task=1` hands each task
// its own CUDA_VISIBLE_DEVICES. Daemons are started and stopped by PID; nothing is left behind.

import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort } from './net.js';
import { tempDir } from './paths.js';
import { isAlive } from './children.js';

export interface SlurmCluster {
  dir: string;
  /** environment for sbatch/squeue/scancel: SLURM_CONF */
  env: NodeJS.ProcessEnv;
  /** run a Slurm client command; returns stdout */
  cmd(name: string, args: string[]): string;
  /** cancel every job, stop the daemons this helper started, remove the folder */
  stop(): Promise<void>;
}

const SBIN = '/usr/sbin';

function which(name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' }).status === 0;
}

function mungeWorks(): boolean {
  const r = spawnSync('sh', ['-c', 'munge -n | unmunge'], { encoding: 'utf8' });
  return r.status === 0 && /STATUS:\s+Success/.test(r.stdout);
}

function readPid(file: string): number | null {
  try {
    const pid = Number(fs.readFileSync(file, 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

async function killPid(pid: number | null): Promise<void> {
  if (pid === null || !isAlive(pid)) return;
  process.kill(pid, 'SIGTERM');
  for (let i = 0; i < 100 && isAlive(pid); i++) await sleep(100);
  if (isAlive(pid)) process.kill(pid, 'SIGKILL');
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Start the cluster, or return why it cannot start here (the test then skips with that message). */
export async function startSlurm(): Promise<SlurmCluster | string> {
  for (const bin of ['slurmctld', 'slurmd', 'munged']) {
    if (!fs.existsSync(path.join(SBIN, bin)))
      return `${SBIN}/${bin} is absent: install slurm-wlm and munge (bash .ci/run does)`;
  }
  for (const bin of ['sbatch', 'squeue', 'scancel', 'sinfo', 'munge', 'unmunge'])
    if (!which(bin)) return `${bin} is not on PATH`;
  if (process.getuid?.() !== 0) return 'slurmd and the stand-in GPU device files need root';

  let mungedPid: number | null = null;
  if (!mungeWorks()) {
    if (!fs.existsSync('/etc/munge/munge.key'))
      return "/etc/munge/munge.key is absent (munge's package creates it)";
    fs.mkdirSync('/run/munge', { recursive: true });
    execFileSync('chown', ['munge:munge', '/run/munge']);
    const r = spawnSync('runuser', ['-u', 'munge', '--', `${SBIN}/munged`], { encoding: 'utf8' });
    if (r.status !== 0) return `munged did not start: ${r.stderr.trim()}`;
    mungedPid = readPid('/run/munge/munged.pid');
    if (!mungeWorks()) return 'munged started but `munge -n | unmunge` fails';
  }

  const dir = tempDir('atlasvae-slurm-');
  fs.chmodSync(dir, 0o755); // slurmctld runs as the slurm user
  for (const d of ['state', 'spool', 'log', 'dev']) fs.mkdirSync(path.join(dir, d));
  execFileSync('chown', ['-R', 'slurm:slurm', path.join(dir, 'state'), path.join(dir, 'log')]);
  for (const i of [0, 1]) execFileSync('mknod', [path.join(dir, 'dev', `nvidia${i}`), 'c', '1', '3']);
  const host = os.hostname().split('.')[0]!;
  const [ctldPort, slurmdPort] = [await freePort(), await freePort()];
  const conf = path.join(dir, 'slurm.conf');
  fs.writeFileSync(
    conf,
    `ClusterName=atlasvae-test
SlurmctldHost=${host}(127.0.0.1)
SlurmctldPort=${ctldPort}
SlurmdPort=${slurmdPort}
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation=${dir}/state
SlurmdSpoolDir=${dir}/spool
SlurmctldPidFile=${dir}/slurmctld.pid
SlurmdPidFile=${dir}/slurmd.pid
SlurmctldLogFile=${dir}/log/slurmctld.log
SlurmdLogFile=${dir}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=${dir}/log/jobcomp.txt
GresTypes=gpu
NodeName=${host} NodeAddr=127.0.0.1 CPUs=2 RealMemory=4000 Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP
`,
  );
  fs.writeFileSync(
    path.join(dir, 'gres.conf'),
    `AutoDetect=off\nNodeName=${host} Name=gpu File=${dir}/dev/nvidia[0-1]\n`,
  );
  const env = { ...process.env, SLURM_CONF: conf };
  const cmd = (name: string, args: string[]): string =>
    execFileSync(name, args, { env, encoding: 'utf8', timeout: 30_000 });
  const daemonPids = (): (number | null)[] => [
    readPid(path.join(dir, 'slurmd.pid')),
    readPid(path.join(dir, 'slurmctld.pid')),
  ];
  const logs = (): string =>
    ['slurmctld.log', 'slurmd.log']
      .map((f) => {
        const p = path.join(dir, 'log', f);
        return `--- ${f} ---\n${fs.existsSync(p) ? fs.readFileSync(p, 'utf8').slice(-2000) : '(none)'}`;
      })
      .join('\n');

  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    try {
      const jobs = cmd('squeue', ['-h', '-o', '%i']).split('\n').filter(Boolean);
      if (jobs.length) cmd('scancel', jobs);
      for (let i = 0; i < 150 && cmd('squeue', ['-h', '-o', '%i']).trim() !== ''; i++) await sleep(200);
    } catch {
      // the controller is already gone
    }
    for (const pid of daemonPids()) await killPid(pid);
    await killPid(mungedPid);
    fs.rmSync(dir, { recursive: true, force: true });
  };

  for (const [bin, extra] of [
    ['slurmctld', []],
    ['slurmd', []],
  ] as const) {
    const r = spawnSync(path.join(SBIN, bin), ['-f', conf, ...extra], {
      env,
      encoding: 'utf8',
      timeout: 30_000,
    });
    if (r.status !== 0) {
      const why = `${bin} did not start (exit ${r.status}): ${r.stderr.trim()}\n${logs()}`;
      await stop();
      return why;
    }
  }
  // the node registers within seconds; then it is idle and takes jobs
  const t0 = Date.now();
  for (;;) {
    let state = '';
    try {
      state = cmd('sinfo', ['-h', '-o', '%t']).trim();
    } catch {
      // the controller is still starting
    }
    if (state === 'idle') break;
    if (Date.now() - t0 > 60_000) {
      const why = `the Slurm node did not become idle within 60 s (state ${state || 'unknown'})\n${logs()}`;
      await stop();
      return why;
    }
    await sleep(250);
  }
  return { dir, env, cmd, stop };
}
