// Options shared by the results commands (embed, normalize, evaluate, umap), and their checks.

import fs from 'node:fs';
import crypto from 'node:crypto';
import type { Argv } from 'yargs';
import { JS_MODEL_BACKEND_CHOICES } from '@atlasvae/shared/backend';
import { CliError } from '@atlasvae/shared';
import { Progress } from '../progress.js';
import type { ChunkPlan } from '../results/cell-stream.js';
import type { FleetChoice } from '../results/inputs.js';

export function withModelAndData<T>(y: Argv<T>) {
  return y
    .option('checkpoint', { type: 'string', describe: 'trained model checkpoint' })
    .option('data', { type: 'string', describe: 'prepared dataset folder (`atlasvae prepare`)' })
    .option('backend', {
      choices: JS_MODEL_BACKEND_CHOICES,
      default: 'auto' as const,
      describe: 'compute backend',
    })
    .option('as-batch', {
      type: 'string',
      describe: 'decode every cell as this model batch (query data from batches the model never saw)',
    })
    .option('chunk-cells', { type: 'number', default: 1024, describe: 'cells per inference chunk' })
    .option('force', { type: 'boolean', default: false, describe: 'replace an existing --out file' })
    .option('local-workers', {
      type: 'number',
      default: 0,
      describe: 'run inference on this many local worker processes (0: in this process)',
    })
    .option('port', {
      type: 'number',
      describe:
        'let `atlasvae worker --connect ws://HOST:PORT` processes join the inference (0: any free port)',
    })
    .option('host', {
      type: 'string',
      default: '127.0.0.1',
      describe: 'interface the inference endpoint listens on (0.0.0.0 for other machines)',
    })
    .option('token', {
      type: 'string',
      describe: 'shared secret inference workers must present (default: $ATLASVAE_TOKEN)',
    })
    .option('tls-cert', { type: 'string', describe: 'PEM certificate: serve wss:// (with --tls-key)' })
    .option('tls-key', { type: 'string', describe: 'PEM private key of --tls-cert' })
    .option('min-workers', {
      type: 'number',
      describe: 'workers to wait for before inference starts (default: --local-workers, or 1)',
    });
}

export interface FleetArgs {
  'local-workers': number;
  port?: number;
  host: string;
  token?: string;
  'tls-cert'?: string;
  'tls-key'?: string;
  'min-workers'?: number;
  'chunk-cells': number;
}

/** Fleet settings from the command line, or null to compute in this process. */
export function fleetChoice(a: FleetArgs): FleetChoice | null {
  const local = requireNonNegativeInt('local-workers', a['local-workers']);
  if (local === 0 && a.port === undefined) return null;
  if (a.port !== undefined && (!Number.isInteger(a.port) || a.port < 0 || a.port > 65535))
    throw new CliError(`--port must be 0..65535 (got ${a.port})`);
  if (Boolean(a['tls-cert']) !== Boolean(a['tls-key']))
    throw new CliError('--tls-cert and --tls-key go together');
  const minWorkers = a['min-workers'] ?? Math.max(1, local);
  requirePositiveInt('min-workers', minWorkers);
  return {
    localWorkers: local,
    port: a.port ?? 0,
    host: a.host,
    token: a.token ?? process.env.ATLASVAE_TOKEN ?? crypto.randomBytes(18).toString('base64url'),
    tls:
      a['tls-cert'] && a['tls-key']
        ? { cert: fs.readFileSync(a['tls-cert']), key: fs.readFileSync(a['tls-key']) }
        : null,
    minWorkers,
    explicitToken: Boolean(a.token ?? process.env.ATLASVAE_TOKEN),
  };
}

export function requirePositiveInt(name: string, v: number): number {
  if (!Number.isInteger(v) || v < 1) throw new CliError(`--${name} must be a positive integer (got ${v})`);
  return v;
}

export function requireNonNegativeInt(name: string, v: number): number {
  if (!Number.isInteger(v) || v < 0)
    throw new CliError(`--${name} must be a non-negative integer (got ${v})`);
  return v;
}

export function requireOption<V>(name: string, v: V | undefined): V {
  if (v === undefined || v === null || v === '') throw new CliError(`--${name} is required`);
  return v;
}

/** Progress over a chunk plan: one step per chunk. */
export function chunkProgress(
  label: string,
  plan: ChunkPlan,
): { tick: (cells: number) => void; finish: () => void } {
  const p = new Progress({ label, totalSteps: Math.ceil(plan.cells.length / plan.chunkSize) });
  return { tick: (cells) => p.update({ cells }), finish: () => p.finish() };
}

/** `--genes g1,g2` or `--genes FILE` (one gene per line, first column). */
export function parseGeneList(v: string | undefined): { genes: string[]; source: string } | null {
  if (v === undefined) return null;
  if (fs.existsSync(v) && fs.statSync(v).isFile()) {
    const genes = fs
      .readFileSync(v, 'utf8')
      .split(/\r?\n/)
      .map((l) => l.split(/[\t,]/)[0]!.trim())
      .filter((g) => g.length > 0);
    if (!genes.length) throw new CliError(`${v}: the gene list is empty`);
    return { genes, source: v };
  }
  const genes = v
    .split(',')
    .map((g) => g.trim())
    .filter((g) => g.length > 0);
  if (!genes.length) throw new CliError('--genes is empty');
  return { genes, source: '--genes' };
}
