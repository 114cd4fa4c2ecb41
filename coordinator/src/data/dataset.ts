// Reading a prepared dataset: the manifest, the train/validation split, and cells by global index
// served from the shards' record batches through a small LRU cache (memory flat in atlas size).
// The epoch plan's block shuffle touches a window of ~1,024-cell blocks at a time, so a cache of a
// few dozen record batches serves a whole window from memory.
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { RecordBatchReader, type RecordBatch } from 'apache-arrow';
import {
  type CellBatch,
  type CellSource,
  manifestProblems,
  MANIFEST_FILE,
  type DatasetManifest,
  type ShardInfo,
  trainValidationSplit,
  InputError,
} from '@atlasvae/shared';
import {
  recordBatchToCellBatch,
  recordBatchSourceRows,
  recordBatchBarcodes,
  encodeCellRows,
  shardSchema,
  streamSchemaFrame,
} from '@atlasvae/shared/arrow';

let shardSchemaFrame: Uint8Array | null = null;
const SHARD_LAYOUT = shardSchema.fields.map((f) => `${f.name}:${String(f.type)}`).join(',');

export interface OpenDatasetOptions {
  /** hash every shard and compare with the manifest (reads the whole dataset once) */
  verifyChecksums?: boolean;
  /** bytes of decoded record batches kept in memory (default 256 MiB) */
  cacheBytes?: number;
  /** shard files kept open at once (default 16) */
  maxOpenShards?: number;
}

/** One decoded record batch. */
interface Block {
  cells: CellBatch;
  rb: RecordBatch;
  bytes: number;
  /** the buffer its columns view (handed back to the pool once evicted and unused) */
  buffer: ArrayBuffer;
  /** requests copying from it right now: its buffer is not reused while any are */
  pins: number;
  evicted: boolean;
  /** its buffer went back to the pool: the block's data is no longer valid */
  recycled: boolean;
}

/**
 * Evicted record batches' buffers kept for the next reads (fresh pages cost page faults): up to
 * this many, and up to a quarter of the cache's bytes (at least one buffer). A window's worth, as
 * a new plan window's batches are all read at once.
 */
const POOL_BUFFERS = 16;
/** fresh read buffers are rounded up to this, so that the next record batch usually fits */
const POOL_GRAIN = 1 << 18;

interface ShardHandle {
  fh: fs.promises.FileHandle;
  /** byte ranges of the record batch messages, from the file's footer */
  blocks: { offset: number; length: number }[];
  /** reads in flight; an evicted handle is closed when the last one ends */
  reading: number;
  evicted: boolean;
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

/** Cells of a prepared dataset by global index. */
export class DatasetSource implements CellSource {
  readonly nCells: number;
  readonly nGenes: number;
  readonly nBatch: number;
  private readonly firstCells: Float64Array;
  private readonly cache = new Map<number, Block>();
  private cachedBytes = 0;
  private readonly loading = new Map<number, Promise<Block>>();
  private readonly handles = new Map<number, Promise<ShardHandle>>();
  private readonly rbCells: number;
  private readonly pool: ArrayBuffer[] = [];
  private pooledBytes = 0;
  /** record batches decoded from disk (for tests and metrics) */
  blocksRead = 0;
  /** record batch lookups served from the cache */
  cacheHits = 0;
  /** reads into an evicted record batch's buffer instead of a fresh one */
  buffersReused = 0;

  constructor(
    readonly dir: string,
    readonly manifest: DatasetManifest,
    private readonly o: Required<Pick<OpenDatasetOptions, 'cacheBytes' | 'maxOpenShards'>>,
  ) {
    this.nCells = manifest.nCells;
    this.nGenes = manifest.nGenes;
    this.nBatch = manifest.batchCategories.length;
    this.rbCells = manifest.recordBatchCells;
    this.firstCells = Float64Array.from(manifest.shards.map((s) => s.firstCell));
  }

  /** shard holding a global cell index */
  private shardOf(cell: number): number {
    let lo = 0,
      hi = this.firstCells.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.firstCells[mid]! <= cell) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  /** key of the record batch holding a cell: shard * 2^20 + batch number */
  private blockKey(cell: number): number {
    const s = this.shardOf(cell);
    return s * 1048576 + Math.floor((cell - this.firstCells[s]!) / this.rbCells);
  }

  private openShard(s: number): Promise<ShardHandle> {
    let h = this.handles.get(s);
    if (h) {
      // keep recently used handles at the end of the map (LRU order)
      this.handles.delete(s);
      this.handles.set(s, h);
      return h;
    }
    const info = this.manifest.shards[s]!;
    const file = path.join(this.dir, info.file);
    h = (async () => {
      let fh: fs.promises.FileHandle;
      try {
        fh = await fs.promises.open(file, 'r');
      } catch (e) {
        throw new InputError(file, `cannot open shard (${(e as Error).message})`);
      }
      try {
        const reader = await RecordBatchReader.from(fh);
        await reader.open();
        if (!reader.isFile() || reader.numRecordBatches !== info.recordBatches)
          throw new Error(`expected an Arrow file with ${info.recordBatches} record batches`);
        const names = reader.schema.fields.map((f) => `${f.name}:${String(f.type)}`).join(',');
        if (names !== SHARD_LAYOUT) throw new Error(`unexpected columns ${names}`);
        // the footer (read by Arrow's reader) gives each record batch's byte range; the batches
        // themselves are read directly (readBlock), one read each
        const blocks: ShardHandle['blocks'] = [];
        for (let i = 0; i < info.recordBatches; i++) {
          const b = reader.footer!.getRecordBatch(i)!;
          blocks.push({ offset: Number(b.offset), length: Number(b.metaDataLength) + Number(b.bodyLength) });
        }
        return { fh, blocks, reading: 0, evicted: false };
      } catch (e) {
        await fh.close().catch(() => undefined);
        throw new InputError(file, `corrupt shard (${(e as Error).message})`);
      }
    })();
    this.handles.set(s, h);
    while (this.handles.size > this.o.maxOpenShards) {
      const [oldest, oh] = this.handles.entries().next().value as [number, Promise<ShardHandle>];
      this.handles.delete(oldest);
      void oh
        .then((x) => {
          x.evicted = true;
          if (x.reading === 0) return x.fh.close();
        })
        .catch(() => undefined);
    }
    return h;
  }

  private async readBlock(key: number): Promise<Block> {
    const s = Math.floor(key / 1048576);
    const r = key - s * 1048576;
    const info: ShardInfo = this.manifest.shards[s]!;
    const h = await this.openShard(s);
    const blk = h.blocks[r]!;
    let rb: RecordBatch | null;
    let bytes = 0;
    let buffer: ArrayBuffer | null = null;
    try {
      // one buffer: the shard schema message (Arrow JS files carry the schema only in the footer),
      // then the record batch message read right after it, decoded as a two-message stream
      // (8-byte aligned, so Arrow views the columns without copying)
      const schema = (shardSchemaFrame ??= streamSchemaFrame(shardSchema));
      const buf = this.readBuffer(schema.length + blk.length);
      buffer = buf.buffer as ArrayBuffer;
      bytes = buffer.byteLength; // what the cached batch keeps alive (its columns view this buffer)
      buf.set(schema, 0);
      h.reading++;
      let bytesRead: number;
      try {
        ({ bytesRead } = await h.fh.read(buf, schema.length, blk.length, blk.offset));
      } finally {
        if (--h.reading === 0 && h.evicted) void h.fh.close().catch(() => undefined);
      }
      if (bytesRead !== blk.length) throw new Error('short read');
      const batches = [...RecordBatchReader.from(buf)];
      rb = batches.length === 1 ? batches[0]! : null;
    } catch (e) {
      throw new InputError(
        path.join(this.dir, info.file),
        `corrupt record batch ${r} (${(e as Error).message})`,
      );
    }
    const expected = Math.min(this.rbCells, info.cells - r * this.rbCells);
    if (!rb || rb.numRows !== expected)
      throw new InputError(
        path.join(this.dir, info.file),
        `record batch ${r} is missing or has the wrong number of cells`,
      );
    // rows in shards are sorted by gene: checking their ends suffices here (workers check every
    // index of the messages they receive)
    const cells = recordBatchToCellBatch(rb, this.nGenes, false);
    if (cells.cellIndex[0] !== info.firstCell + r * this.rbCells)
      throw new InputError(path.join(this.dir, info.file), `record batch ${r} starts at the wrong cell`);
    this.blocksRead++;
    return { cells, rb, bytes, buffer, pins: 0, evicted: false, recycled: false };
  }

  /**
   * A buffer for reading a record batch into: an evicted batch's when one is big enough, else a
   * fresh uninitialised one (the read fills it) with room to spare for the next batches.
   */
  private readBuffer(n: number): Uint8Array {
    for (let i = 0; i < this.pool.length; i++) {
      const ab = this.pool[i]!;
      if (ab.byteLength >= n && ab.byteLength <= 2 * n + POOL_GRAIN) {
        this.pool.splice(i, 1);
        this.pooledBytes -= ab.byteLength;
        this.buffersReused++;
        return new Uint8Array(ab, 0, n);
      }
    }
    const size = Math.ceil(n / POOL_GRAIN) * POOL_GRAIN;
    const b = Buffer.allocUnsafeSlow(size);
    return new Uint8Array(b.buffer, b.byteOffset, n);
  }

  /** An evicted block's buffer goes back to the pool once no request is copying from it. */
  private release(b: Block): void {
    if (b.pins > 0 || !b.evicted || b.recycled) return;
    b.recycled = true;
    const fits =
      this.pool.length === 0 ||
      (this.pool.length < POOL_BUFFERS && this.pooledBytes + b.buffer.byteLength <= this.o.cacheBytes / 4);
    if (fits && b.buffer.byteLength >= POOL_GRAIN) {
      this.pool.push(b.buffer);
      this.pooledBytes += b.buffer.byteLength;
    }
  }

  private async block(key: number): Promise<Block> {
    const hit = this.cache.get(key);
    if (hit) {
      this.cacheHits++;
      this.cache.delete(key);
      this.cache.set(key, hit);
      return hit;
    }
    let p = this.loading.get(key);
    if (!p) {
      p = this.readBlock(key).then(
        (b) => {
          this.loading.delete(key);
          this.cache.set(key, b);
          this.cachedBytes += b.bytes;
          while (this.cachedBytes > this.o.cacheBytes && this.cache.size > 1) {
            const [k, old] = this.cache.entries().next().value as [number, Block];
            this.cache.delete(k);
            this.cachedBytes -= old.bytes;
            old.evicted = true;
            this.release(old);
          }
          return b;
        },
        (e: unknown) => {
          this.loading.delete(key);
          throw e;
        },
      );
      this.loading.set(key, p);
    }
    return p;
  }

  /**
   * The record batch of a key, pinned (its buffer is not reused until `unpin`). Pinned at once
   * when the load resolves: a block evicted and recycled in between is loaded again.
   */
  private async pinned(k: number): Promise<Block> {
    for (;;) {
      const b = await this.block(k);
      if (!b.recycled) {
        b.pins++;
        return b;
      }
    }
  }

  private unpin(blocks: Iterable<Block>): void {
    for (const b of blocks) {
      b.pins--;
      this.release(b);
    }
  }

  /**
   * Runs `use` on the record batches holding the given cells (keyed as blockKey does), pinned
   * while it runs; `use` must copy what it needs before returning.
   */
  private async withBlocks<T>(
    indices: ArrayLike<number>,
    use: (keys: Float64Array, blocks: Map<number, Block>) => T,
  ): Promise<T> {
    const { keys, blocks } = await this.blocksFor(indices);
    try {
      return use(keys, blocks);
    } finally {
      this.unpin(blocks.values());
    }
  }

  /** Record batches holding the given cells, keyed as blockKey does, pinned (see withBlocks). */
  private async blocksFor(
    indices: ArrayLike<number>,
  ): Promise<{ keys: Float64Array; blocks: Map<number, Block> }> {
    const keys = new Float64Array(indices.length);
    const wanted = new Set<number>();
    for (let i = 0; i < indices.length; i++) {
      const c = indices[i]!;
      if (!(c >= 0 && c < this.nCells) || !Number.isInteger(c))
        throw new RangeError(`cell index ${c} outside 0..${this.nCells - 1}`);
      const k = this.blockKey(c);
      keys[i] = k;
      wanted.add(k);
    }
    const blocks = new Map<number, Block>();
    try {
      await Promise.all([...wanted].map(async (k) => blocks.set(k, await this.pinned(k))));
    } catch (e) {
      this.unpin(blocks.values());
      throw e;
    }
    return { keys, blocks };
  }

  /**
   * Starts loading the record batches holding these cells (e.g. the next step's) without waiting;
   * a later getCells finds them cached or in flight. Errors surface in that later call.
   */
  prefetch(indices: ArrayLike<number>): void {
    const seen = new Set<number>();
    for (let i = 0; i < indices.length; i++) {
      const c = indices[i]!;
      if (!(c >= 0 && c < this.nCells)) continue;
      const k = this.blockKey(c);
      if (seen.has(k) || this.cache.has(k)) continue;
      seen.add(k);
      this.block(k).catch(() => undefined);
    }
  }

  /** Cells in the order asked. */
  async getCells(indices: ArrayLike<number>): Promise<CellBatch> {
    return this.withBlocks(indices, (keys, blocks) => this.copyCells(indices, keys, blocks));
  }

  private copyCells(indices: ArrayLike<number>, keys: Float64Array, blocks: Map<number, Block>): CellBatch {
    const { from, rows } = this.locate(indices, keys, blocks);
    const n = indices.length;
    const indptr = new Int32Array(n + 1);
    for (let i = 0; i < n; i++)
      indptr[i + 1] = indptr[i]! + from[i]!.indptr[rows[i]! + 1]! - from[i]!.indptr[rows[i]!]!;
    const nnz = indptr[n]!;
    const indicesOut = new Int32Array(nnz),
      countsOut = new Float32Array(nnz);
    const library = new Float32Array(n),
      batch = new Int32Array(n),
      label = new Int32Array(n),
      cellIndex = new Uint32Array(n);
    for (let i = 0; i < n; i++) {
      const c = from[i]!,
        r = rows[i]!;
      const s = c.indptr[r]!,
        e = c.indptr[r + 1]!;
      indicesOut.set(c.indices.subarray(s, e), indptr[i]);
      countsOut.set(c.counts.subarray(s, e), indptr[i]);
      library[i] = c.library[r]!;
      batch[i] = c.batch[r]!;
      label[i] = c.label[r]!;
      cellIndex[i] = c.cellIndex[r]!;
    }
    return {
      nCells: n,
      nGenes: this.nGenes,
      indptr,
      indices: indicesOut,
      counts: countsOut,
      library,
      batch,
      label,
      cellIndex,
    };
  }

  /**
   * The wire form of a microbatch: Arrow IPC stream bytes of `getCells(indices)`, with each cell's
   * row copied once, from the cached record batch straight into the message.
   */
  async getCellsArrow(indices: ArrayLike<number>): Promise<Uint8Array> {
    return this.withBlocks(indices, (keys, blocks) => {
      const { from, rows } = this.locate(indices, keys, blocks);
      return encodeCellRows(from, rows);
    });
  }

  /** For each asked cell, the decoded record batch holding it and its row there. */
  private locate(
    indices: ArrayLike<number>,
    keys: Float64Array,
    blocks: Map<number, Block>,
  ): { from: CellBatch[]; rows: Int32Array } {
    const n = indices.length;
    const rows = new Int32Array(n);
    const from = new Array<CellBatch>(n);
    let lastKey = -1;
    let b: CellBatch | null = null;
    for (let i = 0; i < n; i++) {
      if (keys[i] !== lastKey) {
        lastKey = keys[i]!;
        b = blocks.get(lastKey)!.cells;
      }
      from[i] = b!;
      rows[i] = indices[i]! - b!.cellIndex[0]!;
    }
    return { from, rows };
  }

  /** Source-file row and barcode of each cell, in the order asked (for writing results back). */
  async getSourceRows(indices: ArrayLike<number>): Promise<{ sourceRow: Uint32Array; barcodes: string[] }> {
    return this.withBlocks(indices, (keys, blocks) => this.copySourceRows(indices, keys, blocks));
  }

  private copySourceRows(
    indices: ArrayLike<number>,
    keys: Float64Array,
    blocks: Map<number, Block>,
  ): { sourceRow: Uint32Array; barcodes: string[] } {
    const sourceRow = new Uint32Array(indices.length);
    const barcodes = new Array<string>(indices.length);
    const decoded = new Map<number, { rows: Uint32Array; codes: string[] }>();
    for (let i = 0; i < indices.length; i++) {
      const k = keys[i]!;
      let d = decoded.get(k);
      const blk = blocks.get(k)!;
      if (!d) {
        d = { rows: recordBatchSourceRows(blk.rb), codes: recordBatchBarcodes(blk.rb) };
        decoded.set(k, d);
      }
      const r = indices[i]! - blk.cells.cellIndex[0]!;
      sourceRow[i] = d.rows[r]!;
      barcodes[i] = d.codes[r]!;
    }
    return { sourceRow, barcodes };
  }

  /** Counters for monitoring (e.g. exported as Prometheus gauges/counters by the coordinator). */
  stats(): {
    recordBatchesRead: number;
    cacheHits: number;
    buffersReused: number;
    cachedBytes: number;
    cachedRecordBatches: number;
    openShards: number;
  } {
    return {
      recordBatchesRead: this.blocksRead,
      cacheHits: this.cacheHits,
      buffersReused: this.buffersReused,
      cachedBytes: this.cachedBytes,
      cachedRecordBatches: this.cache.size,
      openShards: this.handles.size,
    };
  }

  async close(): Promise<void> {
    const hs = [...this.handles.values()];
    this.handles.clear();
    this.cache.clear();
    this.pool.length = 0;
    this.pooledBytes = 0;
    this.cachedBytes = 0;
    for (const h of hs) {
      try {
        await (await h).fh.close();
      } catch {
        /* failed opens have nothing to close */
      }
    }
  }
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
