// manifest.json of a prepared dataset: what the shards hold and how the cells split. Everything a
// reader needs to serve cells by global index without scanning the shards.

export const DATASET_FORMAT = 'atlasvae-dataset';
export const DATASET_FORMAT_VERSION = 1;
export const MANIFEST_FILE = 'manifest.json';
/** cells per Arrow record batch inside a shard */
export const RECORD_BATCH_CELLS = 1024;

export interface ShardInfo {
  /** file name inside the dataset folder */
  file: string;
  /** global index of the shard's first cell; cells of a shard are consecutive */
  firstCell: number;
  cells: number;
  nnz: number;
  recordBatches: number;
  bytes: number;
  sha256: string;
}

export interface SplitInfo {
  /** the assignment is `trainValidationSplit(nCells, seed, trainFraction)` from shared/plan */
  method: 'trainValidationSplit';
  seed: number;
  trainFraction: number;
  nTrain: number;
  nValidation: number;
}

export interface HvgInfo {
  flavor: 'seurat_v3';
  nTopGenes: number;
  /** batch-aware selection used this obs key */
  batchKey: string | null;
  /** genes in the source before selection */
  nSourceGenes: number;
}

export interface SourceInfo {
  path: string;
  format: 'h5ad' | '10x-h5' | 'mtx' | 'simulated';
  nCells: number;
  nGenes: number;
  /** the options prepare/simulate ran with */
  options: Record<string, unknown>;
}

export interface DatasetManifest {
  format: typeof DATASET_FORMAT;
  formatVersion: number;
  createdAt: string;
  nCells: number;
  nGenes: number;
  nnz: number;
  recordBatchCells: number;
  genes: string[];
  /** stable gene identifiers (e.g. Ensembl) when the source has them */
  geneIds: string[] | null;
  batchKey: string | null;
  /** batch code c means batchCategories[c]; one category when there is no batch key */
  batchCategories: string[];
  labelKey: string | null;
  /** label code c means labelCategories[c]; -1 unknown */
  labelCategories: string[];
  /** counts are all integers (false only with --allow-non-integer and non-integer data) */
  integerCounts: boolean;
  shards: ShardInfo[];
  split: SplitInfo;
  source: SourceInfo;
  /** source cells left out because they had no counts over the kept genes */
  droppedZeroCountCells: number;
  /** genes of an imposed list (--genes) absent from the source, filled with zeros */
  missingGenes: number;
  hvg: HvgInfo | null;
}

/** Problems with a parsed manifest (empty when valid). */
export function manifestProblems(m: unknown): string[] {
  const p: string[] = [];
  if (typeof m !== 'object' || m === null) return ['not a JSON object'];
  const o = m as Record<string, unknown>;
  if (o.format !== DATASET_FORMAT)
    p.push(`format is ${JSON.stringify(o.format)}, expected "${DATASET_FORMAT}"`);
  if (o.formatVersion !== DATASET_FORMAT_VERSION)
    p.push(
      `format version ${JSON.stringify(o.formatVersion)} is not supported (this build reads version ${DATASET_FORMAT_VERSION})`,
    );
  const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0;
  for (const k of ['nCells', 'nGenes', 'nnz', 'recordBatchCells', 'droppedZeroCountCells', 'missingGenes'])
    if (!isCount(o[k])) p.push(`${k} must be a non-negative integer`);
  const strList = (k: string) =>
    Array.isArray(o[k]) && (o[k] as unknown[]).every((s) => typeof s === 'string');
  if (!strList('genes')) p.push('genes must be a list of strings');
  else if ((o.genes as string[]).length !== o.nGenes)
    p.push(`genes lists ${(o.genes as string[]).length} names, nGenes is ${String(o.nGenes)}`);
  if (o.geneIds !== null && !strList('geneIds')) p.push('geneIds must be a list of strings or null');
  if (!strList('batchCategories') || (o.batchCategories as string[]).length < 1)
    p.push('batchCategories must be a non-empty list of strings');
  if (!strList('labelCategories')) p.push('labelCategories must be a list of strings');
  if (!Array.isArray(o.shards)) p.push('shards must be a list');
  else {
    let next = 0,
      cells = 0,
      nnz = 0;
    (o.shards as unknown[]).forEach((s, i) => {
      const sh = s as Partial<ShardInfo>;
      if (typeof sh?.file !== 'string' || !/^[\w.-]+$/.test(sh.file)) p.push(`shard ${i}: bad file name`);
      if (
        !isCount(sh?.cells) ||
        !isCount(sh?.nnz) ||
        !isCount(sh?.firstCell) ||
        !isCount(sh?.recordBatches)
      ) {
        p.push(`shard ${i}: bad counts`);
        return;
      }
      if (sh.firstCell !== next) p.push(`shard ${i}: first cell ${sh.firstCell}, expected ${next}`);
      if (typeof sh.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(sh.sha256))
        p.push(`shard ${i}: bad sha256`);
      next = sh.firstCell + sh.cells;
      cells += sh.cells;
      nnz += sh.nnz;
    });
    if (cells !== o.nCells) p.push(`shards hold ${cells} cells, nCells is ${String(o.nCells)}`);
    if (nnz !== o.nnz) p.push(`shards hold ${nnz} entries, nnz is ${String(o.nnz)}`);
  }
  const sp = o.split as Partial<SplitInfo> | undefined;
  if (
    !sp ||
    sp.method !== 'trainValidationSplit' ||
    typeof sp.seed !== 'number' ||
    typeof sp.trainFraction !== 'number' ||
    !(sp.trainFraction > 0 && sp.trainFraction <= 1)
  )
    p.push('split is missing or malformed');
  return p;
}
