// The record batches of a prepared dataset's shards, read on demand into a small LRU cache
// (memory flat in atlas size): shard files kept open up to a limit, each batch read with one
// read into a pooled buffer and decoded without copying, and pinned while a request copies
// from it. The epoch plan's block shuffle touches a window of ~1,024-cell blocks at a time, so a
// cache of a few dozen record batches serves a whole window from memory.
import fs from 'node:fs';
import path from 'node:path';
import { RecordBatchReader, type RecordBatch } from 'apache-arrow';
import { type CellBatch, type DatasetManifest, type ShardInfo, InputError } from '@atlasvae/shared';
import { recordBatchToCellBatch, shardSchema, streamSchemaFrame } from '@atlasvae/shared/arrow';

let shardSchemaFrame: Uint8Array | null = null;
const SHARD_LAYOUT = shardSchema.fields.map((f) => `${f.name}:${String(f.type)}`).join(',');

export interface RecordBatchCacheOptions {
  /** bytes of decoded record batches kept in memory */
  cacheBytes: number;
  /** shard files kept open at once */
  maxOpenShards: number;
}

/** One decoded record batch. */
export interface Block {
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

export interface RecordBatchCacheStats {
  recordBatchesRead: number;
  cacheHits: number;
  buffersReused: number;
  cachedBytes: number;
  cachedRecordBatches: number;
  openShards: number;
}

/** Record batches of a dataset's shards by cell, cached (keys: shard * 2^20 + batch number). */
export class RecordBatchCache {
  private readonly nCells: number;
  private readonly nGenes: number;
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
    private readonly dir: string,
    private readonly manifest: DatasetManifest,
    private readonly o: RecordBatchCacheOptions,
  ) {
    this.nCells = manifest.nCells;
    this.nGenes = manifest.nGenes;
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
  async withBlocks<T>(
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

  /** Counters for monitoring (e.g. exported as Prometheus gauges/counters by the coordinator). */
  stats(): RecordBatchCacheStats {
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
