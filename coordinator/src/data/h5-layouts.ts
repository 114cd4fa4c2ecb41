// HDF5 inputs by layout: AnnData .h5ad (X, a layer or raw/X; CSR, CSC or dense; obs as anndata
// ≥ 0.7 writes it) and 10x CellRanger .h5 (v3 `matrix/` with `features/`, v2 `<genome>/` with
// `genes`), each checked and opened as an Hdf5Source. Loaded on demand by openSource, so that
// h5wasm stays out of commands that read no HDF5 file.
import path from 'node:path';
import h5wasm from 'h5wasm/node';
import { InputError } from '@atlasvae/shared';
import type { MatrixSource, OpenSourceOptions } from './source.js';
import {
  type H5Dataset,
  type H5File,
  type H5Group,
  attr,
  attrString,
  guard,
  h5wasmReady,
  isDataset,
  isGroup,
  need,
  read,
  strings,
  toNumbers,
} from './h5-read.js';
import { Hdf5Source, type MatrixLayout } from './h5-source.js';

function sparseLayout(
  file: string,
  g: H5Group,
  where: string,
  kind: 'csr' | 'csc',
  nCells: number,
  nGenes: number,
): MatrixLayout {
  const get = (n: string): H5Dataset => {
    const d = g.get(n);
    if (!isDataset(d)) throw new InputError(file, `${where}/${n} is missing`);
    return d;
  };
  const data = get('data'),
    indices = get('indices'),
    indptr = get('indptr');
  const nnz = data.shape?.[0] ?? 0;
  if ((indices.shape?.[0] ?? -1) !== nnz)
    throw new InputError(file, `${where}: data has ${nnz} entries but indices has ${indices.shape?.[0]}`);
  const nMajor = kind === 'csr' ? nCells : nGenes;
  if ((indptr.shape?.[0] ?? -1) !== nMajor + 1)
    throw new InputError(
      file,
      `${where}: indptr has ${indptr.shape?.[0]} entries, expected ${nMajor + 1} for shape [${nCells}, ${nGenes}]`,
    );
  return { kind, data, indices, indptr, nCells, nGenes, where };
}

/** A matrix shape read from the file (`what` names where): exactly two whole sizes. */
function matrixShape(file: string, what: string, shape: ArrayLike<number>): [number, number] {
  const [rows, cols, ...more] = Array.from(shape);
  if (rows === undefined || cols === undefined || more.length > 0)
    throw new InputError(file, `${what} is [${Array.from(shape).join(', ')}], not a 2-d matrix shape`);
  if (!Number.isSafeInteger(rows) || !Number.isSafeInteger(cols) || rows < 0 || cols < 0)
    throw new InputError(file, `${what} is [${rows}, ${cols}]: sizes must be whole numbers ≥ 0`);
  return [rows, cols];
}

/** X-like element of an .h5ad at `where` (group or dataset). */
function h5adMatrix(file: string, f: H5File, where: string): MatrixLayout {
  const e = f.get(where);
  if (!e) throw new InputError(file, `has no ${where}`);
  if (isDataset(e)) {
    const [nCells, nGenes] = matrixShape(file, `${where}'s shape`, e.shape ?? []);
    return { kind: 'dense', dense: e, nCells, nGenes, where };
  }
  if (!isGroup(e)) throw new InputError(file, `${where} is not a matrix`);
  const enc = attrString(e, 'encoding-type') ?? attrString(e, 'h5sparse_format');
  const shapeAttr = attr(e, 'shape') ?? attr(e, 'h5sparse_shape');
  if (!shapeAttr || !ArrayBuffer.isView(shapeAttr))
    throw new InputError(file, `${where} has no shape attribute`);
  const shape = matrixShape(
    file,
    `${where}'s shape attribute`,
    Array.from(shapeAttr as unknown as ArrayLike<number | bigint>, Number),
  );
  if (enc === 'csr_matrix' || enc === 'csr') return sparseLayout(file, e, where, 'csr', ...shape);
  if (enc === 'csc_matrix' || enc === 'csc') return sparseLayout(file, e, where, 'csc', ...shape);
  throw new InputError(file, `${where} has unsupported encoding "${enc}"`);
}

/** Names of a dataframe group's index and columns (anndata ≥ 0.7 layout). */
function dataframeIndex(file: string, g: H5Group, where: string): H5Dataset {
  const name = attrString(g, '_index') ?? '_index';
  const d = g.get(name);
  if (!isDataset(d)) throw new InputError(file, `${where} has no index "${name}"`);
  return d;
}

export async function openHdf5Source(file: string, o: OpenSourceOptions): Promise<MatrixSource> {
  await h5wasmReady();
  const f = guard(file, 'the HDF5 file', () => new h5wasm.File(path.resolve(file), 'r'));
  try {
    return guard(file, 'the file structure', () => openKnownLayout(file, f, o));
  } catch (e) {
    try {
      f.close();
    } catch {
      /* closed */
    }
    throw e;
  }
}

function openKnownLayout(file: string, f: H5File, o: OpenSourceOptions): MatrixSource {
  {
    const keys = f.keys();
    if (keys.includes('X') || keys.includes('obs')) return openH5ad(file, f, o);
    if (o.layer || o.useRaw)
      throw new InputError(file, '--layer and --use-raw apply to .h5ad input only (this is a 10x .h5)');
    if (keys.includes('matrix')) return open10xV3(file, f, o);
    for (const k of keys) {
      const g = f.get(k);
      if (isGroup(g) && g.keys().includes('gene_names')) return open10xV2(file, f, g, k, o);
    }
    throw new InputError(
      file,
      `HDF5 file is neither AnnData (no X/obs) nor 10x (no matrix group); top-level entries: ${keys.join(', ') || 'none'}`,
    );
  }
}

function openH5ad(file: string, f: H5File, o: OpenSourceOptions): MatrixSource {
  let where = 'X';
  let varWhere = 'var';
  if (o.useRaw && o.layer) throw new InputError(file, 'use either --layer or --use-raw, not both');
  if (o.layer) {
    const layers = f.get('layers');
    const names = isGroup(layers) ? layers.keys() : [];
    if (!names.includes(o.layer))
      throw new InputError(file, `no layer "${o.layer}"; layers are: ${names.join(', ') || 'none'}`);
    where = `layers/${o.layer}`;
  }
  if (o.useRaw) {
    if (!isGroup(f.get('raw'))) throw new InputError(file, 'has no raw (--use-raw)');
    where = 'raw/X';
    varWhere = 'raw/var';
  }
  const m = h5adMatrix(file, f, where);
  const v = f.get(varWhere);
  if (!isGroup(v)) throw new InputError(file, `has no ${varWhere} dataframe`);
  const varIndex = dataframeIndex(file, v, varWhere);
  const genes = strings(read(file, varIndex, `${varWhere} index`), file, `${varWhere} index`);
  let geneIds: string[] | null = null;
  for (const k of ['gene_ids', 'gene_id', 'feature_id', 'ids']) {
    const d = v.get(k);
    if (isDataset(d)) {
      geneIds = strings(read(file, d, `${varWhere}/${k}`), file, `${varWhere}/${k}`);
      break;
    }
  }
  const obs = need(f.get('obs'), file, 'has no obs dataframe');
  if (!isGroup(obs))
    throw new InputError(
      file,
      'obs is stored in an old layout (compound dataset) that is not supported; re-save it with anndata ≥ 0.7',
    );
  const barcodes = dataframeIndex(file, obs, 'obs');
  return new Hdf5Source(file, f, m, { format: 'h5ad', genes, geneIds, barcodes, obs }, o);
}

function open10xV3(file: string, f: H5File, o: OpenSourceOptions): MatrixSource {
  const g = f.get('matrix') as H5Group;
  const shapeSet = g.get('shape');
  if (!isDataset(shapeSet)) throw new InputError(file, 'matrix/shape is missing');
  const [nGenes, nCells] = matrixShape(
    file,
    'matrix/shape',
    toNumbers(read(file, shapeSet, 'matrix/shape'), file, 'matrix/shape'),
  );
  // 10x stores genes × cells as CSC: its columns (cells) are our rows
  const m = sparseLayout(file, g, 'matrix', 'csr', nCells, nGenes);
  const feats = g.get('features');
  if (!isGroup(feats)) throw new InputError(file, 'matrix/features is missing');
  const nameSet = feats.get('name'),
    idSet = feats.get('id');
  if (!isDataset(nameSet)) throw new InputError(file, 'matrix/features/name is missing');
  const genes = strings(read(file, nameSet, 'matrix/features/name'), file, 'matrix/features/name');
  const geneIds = isDataset(idSet)
    ? strings(read(file, idSet, 'matrix/features/id'), file, 'matrix/features/id')
    : null;
  const typeSet = feats.get('feature_type');
  const featureTypes = isDataset(typeSet)
    ? strings(read(file, typeSet, 'matrix/features/feature_type'), file, 'matrix/features/feature_type')
    : null;
  const barcodes = g.get('barcodes');
  if (!isDataset(barcodes)) throw new InputError(file, 'matrix/barcodes is missing');
  return new Hdf5Source(
    file,
    f,
    m,
    { format: '10x-h5', genes, geneIds, featureTypes, barcodes, obs: null },
    o,
  );
}

function open10xV2(file: string, f: H5File, g: H5Group, genome: string, o: OpenSourceOptions): MatrixSource {
  const shapeSet = g.get('shape');
  if (!isDataset(shapeSet)) throw new InputError(file, `${genome}/shape is missing`);
  const [nGenes, nCells] = matrixShape(
    file,
    `${genome}/shape`,
    toNumbers(read(file, shapeSet, `${genome}/shape`), file, `${genome}/shape`),
  );
  const m = sparseLayout(file, g, genome, 'csr', nCells, nGenes);
  const genes = strings(
    read(file, g.get('gene_names') as H5Dataset, `${genome}/gene_names`),
    file,
    `${genome}/gene_names`,
  );
  const idSet = g.get('genes');
  const geneIds = isDataset(idSet)
    ? strings(read(file, idSet, `${genome}/genes`), file, `${genome}/genes`)
    : null;
  const barcodes = g.get('barcodes');
  if (!isDataset(barcodes)) throw new InputError(file, `${genome}/barcodes is missing`);
  return new Hdf5Source(file, f, m, { format: '10x-h5', genes, geneIds, barcodes, obs: null }, o);
}
