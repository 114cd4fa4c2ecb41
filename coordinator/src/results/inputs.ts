// Opening what every results command needs: a checkpoint (model configuration, parameters,
// genes, categories), a prepared dataset to run it on, and an inference engine. Checks that the
// dataset fits the model: the same genes in the same order (a query dataset is prepared with
// `--genes` from the model's gene list), and batches the model knows (or one named with --as-batch).

import { readObsFile } from '../data/obs-store.js';
import { loadCheckpoint, type Checkpoint, InputError, CliError, log } from '@atlasvae/shared';
import { initBackend, type BackendChoice } from '@atlasvae/shared/backend';
import { createModel } from '@atlasvae/shared/model';
import { openDataset, type Dataset } from '../data/dataset.js';
import { LocalEngine, type InferenceEngine } from './engine.js';
import { FleetEngine } from './fleet.js';
import type { CellNaming } from './cell-names.js';

export interface ResultsInputs {
  checkpoint: Checkpoint;
  checkpointPath: string;
  dataset: Dataset;
  engine: InferenceEngine;
  /** dataset batch code → model batch code; undefined when identical */
  batchMap: Int32Array | undefined;
  naming: CellNaming;
  backend: string;
  close(): Promise<void>;
}

/** Every dataset cell (train and validation), ascending global index. */
export function allCells(d: Dataset): Uint32Array {
  return Uint32Array.from({ length: d.manifest.nCells }, (_, i) => i);
}

export function checkGenes(
  modelGenes: string[],
  dataGenes: string[],
  dataDir: string,
  checkpointPath: string,
): void {
  if (modelGenes.length === dataGenes.length && modelGenes.every((g, i) => g === dataGenes[i])) return;
  const inModel = new Set(modelGenes);
  const shared = dataGenes.filter((g) => inModel.has(g)).length;
  let detail: string;
  if (modelGenes.length !== dataGenes.length)
    detail = `it has ${dataGenes.length} genes, the model (${checkpointPath}) ${modelGenes.length}, ${shared} in common`;
  else {
    const i = modelGenes.findIndex((g, k) => g !== dataGenes[k]);
    detail = `gene ${i + 1} is ${dataGenes[i]} in the dataset but ${modelGenes[i]} in the model (${checkpointPath})`;
  }
  throw new InputError(
    dataDir,
    `the dataset's genes do not match the model's: ${detail}. Prepare it with the model's gene list: \`atlasvae prepare INPUT --genes GENES.txt\` (write GENES.txt with \`atlasvae embed --checkpoint ${checkpointPath} --list-genes\`)`,
  );
}

/**
 * Dataset batch codes → model batch codes by category name. `asBatch` names one model batch for
 * every cell (query data from batches the model never saw).
 */
export function mapBatches(
  modelBatches: string[],
  dataBatches: string[],
  asBatch: string | undefined,
  dataDir: string,
): Int32Array | undefined {
  if (asBatch !== undefined) {
    const b = modelBatches.indexOf(asBatch);
    if (b < 0)
      throw new CliError(`--as-batch ${asBatch}: the model's batches are ${modelBatches.join(', ')}`);
    return new Int32Array(dataBatches.length).fill(b);
  }
  if (modelBatches.length === 1)
    return dataBatches.length === 1 && dataBatches[0] === modelBatches[0]
      ? undefined
      : new Int32Array(dataBatches.length);
  const pos = new Map(modelBatches.map((n, i) => [n, i]));
  const unknown = dataBatches.filter((n) => !pos.has(n));
  if (unknown.length) {
    throw new InputError(
      dataDir,
      `batches ${unknown.slice(0, 5).join(', ')} are not among the model's (${modelBatches.join(', ')}); choose one with --as-batch NAME`,
    );
  }
  const map = Int32Array.from(dataBatches, (n) => pos.get(n)!);
  return map.every((m, i) => m === i) ? undefined : map;
}

/** Where inference runs when not in this process: local worker processes and/or workers joining on a port. */
export interface FleetChoice {
  localWorkers: number;
  port: number;
  host: string;
  token: string;
  tls: { cert: Buffer; key: Buffer } | null;
  minWorkers: number;
  explicitToken: boolean;
}

export async function openResultsInputs(o: {
  checkpoint: string;
  data: string;
  backend: BackendChoice;
  asBatch?: string;
  fleet?: FleetChoice | null;
  chunkCells?: number;
}): Promise<ResultsInputs> {
  const checkpoint = loadCheckpoint(o.checkpoint);
  const cfg = checkpoint.modelConfig;
  if (checkpoint.genes.length !== cfg.nGenes)
    throw new InputError(o.checkpoint, `lists ${checkpoint.genes.length} genes for a model of ${cfg.nGenes}`);
  const dataset = await openDataset(o.data);
  try {
    checkGenes(checkpoint.genes, dataset.manifest.genes, o.data, o.checkpoint);
    const modelBatches = checkpoint.batchCategories.length
      ? checkpoint.batchCategories
      : Array.from({ length: cfg.nBatch }, (_, i) => String(i));
    const batchMap = mapBatches(modelBatches, dataset.manifest.batchCategories, o.asBatch, o.data);
    let engine: InferenceEngine;
    let backend: string;
    if (o.fleet) {
      const f = o.fleet;
      if (f.port !== 0 || f.host !== '127.0.0.1') {
        if (!f.explicitToken)
          log.warn(
            'inference fleet: no --token (or ATLASVAE_TOKEN) given; remote workers cannot join without the generated one',
          );
      }
      try {
        engine = await FleetEngine.start({
          modelConfig: cfg,
          params: checkpoint.params,
          buffers: checkpoint.buffers,
          host: f.host,
          port: f.port,
          token: f.token,
          tls: f.tls,
          localWorkers: f.localWorkers,
          backend: o.backend,
          minWorkers: f.minWorkers,
          maxChunkCells: o.chunkCells ?? 1024,
          log: (level, msg) => (level === 'warn' ? log.warn(msg) : log.info(msg)),
        });
      } catch (e) {
        if (e instanceof RangeError)
          throw new InputError(o.checkpoint, `parameters do not fit the model configuration (${e.message})`);
        throw new CliError(`inference fleet: ${(e as Error).message}`);
      }
      backend = engine.describe();
    } else {
      backend = await initBackend(o.backend);
      const model = createModel(cfg);
      try {
        model.setParams(checkpoint.params);
        model.setBuffers(checkpoint.buffers);
      } catch (e) {
        throw new InputError(
          o.checkpoint,
          `parameters do not fit the model configuration (${(e as Error).message})`,
        );
      }
      engine = new LocalEngine(model, backend);
    }
    const source = dataset.source;
    const naming: CellNaming = {
      batchNames: dataset.manifest.batchCategories,
      labelNames: dataset.manifest.labelCategories,
      lookup: (cells) => source.getSourceRows(cells),
      obs: readObsFile(dataset.dir),
    };
    return {
      checkpoint,
      checkpointPath: o.checkpoint,
      dataset,
      engine,
      batchMap,
      naming,
      backend,
      close: async () => {
        await engine.close();
        await dataset.close();
      },
    };
  } catch (e) {
    await dataset.close();
    throw e;
  }
}
