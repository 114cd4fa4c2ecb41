// Write matrices into a copy of an AnnData `.h5ad` as `obsm` entries that anndata reads:
// copy the source to a temporary file beside the output, add obsm/<key> (float32 [n_obs, dim],
// encoding-type "array" / encoding-version "0.2.0"; the obsm group itself "dict" / "0.1.0"),
// close, rename. The source is never modified.

import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { InputError } from '@atlasvae/shared';

export interface ObsmMatrix {
  key: string;
  /** [nObs, dim] row-major */
  values: Float32Array;
  dim: number;
}

// h5wasm is loaded on first use: importing it is slow, and every command that never touches an
// .h5ad (train, worker, --help) would pay for it at start-up (docs/benchmarks.md).
type H5wasm = (typeof import('h5wasm/node'))['default'];
/** the library, set by `h5()` before anything here uses it */
let h5wasm: H5wasm;
let ready: Promise<H5wasm> | null = null;
async function h5(): Promise<H5wasm> {
  ready ??= import('h5wasm/node').then(async (m) => {
    await m.default.ready;
    return m.default;
  });
  h5wasm = await ready;
  return h5wasm;
}

/** Number of observations (rows) of an .h5ad, from obs/_index (or X's shape). */
export async function h5adObsCount(file: string): Promise<number> {
  const lib = await h5();
  if (!fs.existsSync(file)) throw new InputError(file, 'file does not exist');
  let f: InstanceType<typeof lib.File>;
  try {
    f = new lib.File(file, 'r');
  } catch (e) {
    throw new InputError(file, `cannot open as HDF5 (${(e as Error).message})`);
  }
  try {
    return obsCountOf(f, file);
  } finally {
    f.close();
  }
}

function obsCountOf(f: InstanceType<typeof h5wasm.File>, file: string): number {
  const obs = f.get('obs');
  if (!(obs instanceof h5wasm.Group)) throw new InputError(file, 'not an AnnData file (no obs group)');
  const indexName = (obs.attrs['_index']?.value as string | undefined) ?? '_index';
  const idx = obs.get(indexName);
  const indexRows = idx instanceof h5wasm.Dataset ? idx.shape?.[0] : undefined;
  if (indexRows !== undefined) return indexRows;
  const x = f.get('X');
  const xRows =
    x instanceof h5wasm.Dataset
      ? x.shape?.[0]
      : x instanceof h5wasm.Group
        ? (x.attrs['shape']?.value as ArrayLike<number | bigint> | undefined)?.[0]
        : undefined;
  if (xRows !== undefined) return Number(xRows);
  throw new InputError(file, 'cannot tell the number of cells (no obs index and no X)');
}

/**
 * Copy `source` to `out` with `matrices` added under obsm. Every matrix must have one row per
 * observation of the source (NaN rows for cells that were not embedded).
 */
export async function writeH5adWithObsm(source: string, out: string, matrices: ObsmMatrix[]): Promise<void> {
  const lib = await h5();
  const nObs = await h5adObsCount(source);
  for (const m of matrices) {
    if (m.values.length !== nObs * m.dim) {
      throw new InputError(source, `has ${nObs} cells but obsm/${m.key} has ${m.values.length / m.dim} rows`);
    }
  }
  const dir = path.dirname(path.resolve(out));
  fs.mkdirSync(dir, { recursive: true });
  const tmp = path.join(
    dir,
    `.${path.basename(out)}.${process.pid}.${crypto.randomBytes(4).toString('hex')}.tmp`,
  );
  fs.copyFileSync(source, tmp);
  try {
    fs.chmodSync(tmp, 0o644); // the source may be read-only; the copy must be writable
    const f = new lib.File(tmp, 'a');
    try {
      let obsm = f.get('obsm');
      if (obsm === null) {
        obsm = f.create_group('obsm');
        obsm.create_attribute('encoding-type', 'dict');
        obsm.create_attribute('encoding-version', '0.1.0');
      }
      if (!(obsm instanceof lib.Group)) throw new InputError(source, 'obsm is not a group');
      for (const m of matrices) {
        if (obsm.keys().includes(m.key))
          throw new InputError(source, `already has obsm/${m.key}; choose another key`);
        const ds = obsm.create_dataset({ name: m.key, data: m.values, shape: [nObs, m.dim], dtype: '<f' });
        ds.create_attribute('encoding-type', 'array');
        ds.create_attribute('encoding-version', '0.2.0');
      }
      f.flush();
    } finally {
      f.close();
    }
    const fd = fs.openSync(tmp, 'r+');
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fs.renameSync(tmp, out);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}

/** Read obsm/<key> of an .h5ad: the matrix and its width. */
export async function readH5adObsm(
  file: string,
  key: string,
): Promise<{ values: Float32Array; nObs: number; dim: number }> {
  const lib = await h5();
  if (!fs.existsSync(file)) throw new InputError(file, 'file does not exist');
  const f = new lib.File(file, 'r');
  try {
    const ds = f.get(`obsm/${key}`);
    if (!(ds instanceof lib.Dataset) || !ds.shape || ds.shape.length !== 2)
      throw new InputError(file, `has no 2-d obsm/${key}`);
    const v = ds.value as ArrayLike<number>;
    return { values: Float32Array.from(v), nObs: ds.shape[0]!, dim: ds.shape[1]! };
  } finally {
    f.close();
  }
}
