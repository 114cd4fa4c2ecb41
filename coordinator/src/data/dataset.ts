// Opening a prepared dataset: the manifest checked, its shards' sizes (and optionally checksums)
// against it, the train/validation split, and a DatasetSource serving its cells.
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import {
  MANIFEST_FILE,
  type DatasetManifest,
  manifestProblems,
  trainValidationSplit,
  InputError,
} from '@atlasvae/shared';
import { DatasetSource } from './dataset-source.js';

export { DatasetSource };

export interface OpenDatasetOptions {
  /** hash every shard and compare with the manifest (reads the whole dataset once) */
  verifyChecksums?: boolean;
  /** bytes of decoded record batches kept in memory (default 256 MiB) */
  cacheBytes?: number;
  /** shard files kept open at once (default 16) */
  maxOpenShards?: number;
}

export interface Dataset {
  dir: string;
  manifest: DatasetManifest;
  /** global indices of training cells, ascending */
  train: Uint32Array;
  /** global indices of validation cells, ascending */
  validation: Uint32Array;
  source: DatasetSource;
  close(): Promise<void>;
}

/** sha256 of a file, streamed. */
export async function sha256File(file: string): Promise<string> {
  const hash = crypto.createHash('sha256');
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 1 << 20 }))
    hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** Reads and validates manifest.json of a dataset folder. */
export function readManifest(dir: string): DatasetManifest {
  const file = path.join(dir, MANIFEST_FILE);
  if (!fs.existsSync(dir)) throw new InputError(dir, 'no such dataset folder');
  if (!fs.existsSync(file))
    throw new InputError(
      dir,
      `not a prepared dataset (no ${MANIFEST_FILE}); run \`atlasvae prepare\` or \`atlasvae simulate\` first`,
    );
  let m: unknown;
  try {
    m = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new InputError(file, `not valid JSON (${(e as Error).message})`);
  }
  const problems = manifestProblems(m);
  if (problems.length > 0) throw new InputError(file, problems.join('; '));
  return m as DatasetManifest;
}

/** Opens a prepared dataset: manifest, split, and a cell source over its shards. */
export async function openDataset(dir: string, o: OpenDatasetOptions = {}): Promise<Dataset> {
  const manifest = readManifest(dir);
  for (const s of manifest.shards) {
    const file = path.join(dir, s.file);
    let size: number;
    try {
      size = fs.statSync(file).size;
    } catch {
      throw new InputError(file, 'shard listed in the manifest is missing');
    }
    if (size !== s.bytes)
      throw new InputError(
        file,
        `shard has ${size} bytes, the manifest says ${s.bytes} (truncated or replaced)`,
      );
    if (o.verifyChecksums) {
      const h = await sha256File(file);
      if (h !== s.sha256) throw new InputError(file, 'sha256 does not match the manifest (corrupt shard)');
    }
  }
  const { train, validation } = trainValidationSplit(
    manifest.nCells,
    manifest.split.seed,
    manifest.split.trainFraction,
  );
  const source = new DatasetSource(dir, manifest, {
    cacheBytes: o.cacheBytes ?? 256 * 1048576,
    maxOpenShards: o.maxOpenShards ?? 16,
  });
  return { dir, manifest, train, validation, source, close: () => source.close() };
}
