import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {
  simulateToDataset,
  simulationModel,
  simulateCells,
  defaultSimulationOptions,
  openDataset,
} from '@atlasvae/coordinator/data';
import { decodeCellBatch } from '@atlasvae/shared/arrow';
import { trainValidationSplit, epochOrder } from '@atlasvae/shared';
import { tempDir } from '../helpers/paths.js';

test('simulated dataset: shards read back exactly, in any order, with split and source rows', async () => {
  const dir = tempDir();
  const out = path.join(dir, 'sim');
  const o = { ...defaultSimulationOptions, cells: 3000, genes: 120, batches: 3, cellTypes: 4, seed: 7 };
  const m = await simulateToDataset({ ...o, out, shardCells: 1500 });
  // the expected cells, generated again from the same seed
  const expected: {
    genes: number[];
    counts: number[];
    batch: number;
    type: number;
    barcode: string;
    index: number;
  }[] = [];
  await simulateCells(simulationModel(o), (c) => {
    if (c.nnz > 0)
      expected.push({
        genes: [...c.genes],
        counts: [...c.counts],
        batch: c.batch,
        type: c.type,
        barcode: c.barcode,
        index: c.index,
      });
  });
  assert.equal(m.nCells, expected.length);
  assert.equal(m.droppedZeroCountCells, 3000 - expected.length);
  assert.equal(m.shards.length, 2);
  assert.deepEqual(
    m.shards.map((s) => s.recordBatches),
    [2, 2],
  );
  assert.equal(m.batchCategories.length, 3);
  assert.equal(m.labelCategories.length, 4);
  assert.ok(!fs.readdirSync(dir).some((f) => f.includes('partial')), 'no temporary folder left');

  const ds = await openDataset(out, { verifyChecksums: true, cacheBytes: 1 });
  const split = trainValidationSplit(m.nCells, 7, 0.9);
  assert.deepEqual([...ds.train], [...split.train]);
  assert.deepEqual([...ds.validation], [...split.validation]);
  const order = epochOrder(ds.train, { seed: 3, epoch: 1, planBlock: 1024, planWindow: 8 });
  for (let s = 0; s < order.length; s += 500) {
    const idx = order.subarray(s, s + 500);
    const b = decodeCellBatch(await ds.source.getCellsArrow(idx), m.nGenes);
    for (let i = 0; i < idx.length; i++) {
      const e = expected[idx[i]!]!;
      assert.equal(b.cellIndex[i], idx[i]);
      assert.deepEqual([...b.indices.subarray(b.indptr[i], b.indptr[i + 1])], e.genes);
      assert.deepEqual([...b.counts.subarray(b.indptr[i], b.indptr[i + 1])], e.counts);
      assert.equal(
        b.library[i],
        e.counts.reduce((x, y) => x + y, 0),
      );
      assert.equal(b.batch[i], e.batch);
      assert.equal(b.label[i], e.type);
    }
  }
  const src = await ds.source.getSourceRows([m.nCells - 1, 0]);
  assert.deepEqual([...src.sourceRow], [expected[m.nCells - 1]!.index, expected[0]!.index]);
  assert.deepEqual(src.barcodes, [expected[m.nCells - 1]!.barcode, expected[0]!.barcode]);
  await assert.rejects(ds.source.getCells([m.nCells]), RangeError);
  await ds.close();

  // one open shard at a time, no cache, concurrent requests and prefetches across both shards
  const tight = await openDataset(out, { maxOpenShards: 1, cacheBytes: 1 });
  const picks = [0, 1600, 5, 2999 - m.droppedZeroCountCells, 1024, 2100].map((c) =>
    Math.min(c, m.nCells - 1),
  );
  tight.source.prefetch(picks);
  const got = await Promise.all(picks.map((c, i) => tight.source.getCells(i % 2 ? [c, picks[0]!] : [c])));
  got.forEach((b, i) => {
    assert.equal(b.cellIndex[0], picks[i]);
    assert.deepEqual([...b.indices.subarray(0, b.indptr[1])], expected[picks[i]!]!.genes);
  });
  assert.equal(
    tight.source.stats().cachedRecordBatches <= 1,
    true,
    'a 1-byte cache keeps at most one record batch',
  );
  assert.ok(tight.source.stats().openShards <= 1);
  await tight.close();

  // evicted record batches' buffers are read into again: many concurrent requests of every kind
  // over a one-batch cache, each checked cell by cell (a buffer reused while copied would show)
  const reuse = await openDataset(out, { cacheBytes: 1 });
  const cellsOf = (k: number): number[] =>
    Array.from({ length: 40 }, (_, j) => (k * 977 + j * 131) % m.nCells);
  const check = (
    cells: number[],
    b: { cellIndex: Uint32Array; indptr: Int32Array; indices: Int32Array; counts: Float32Array },
  ): void => {
    cells.forEach((c, i) => {
      assert.equal(b.cellIndex[i], c);
      assert.deepEqual([...b.indices.subarray(b.indptr[i], b.indptr[i + 1])], expected[c]!.genes);
      assert.deepEqual([...b.counts.subarray(b.indptr[i], b.indptr[i + 1])], expected[c]!.counts);
    });
  };
  const pending: Promise<void>[] = [];
  for (let k = 0; k < 100; k++) {
    const cells = cellsOf(k);
    if (k % 4 === 0) reuse.source.prefetch(cellsOf(k + 1));
    pending.push(
      (async () => {
        if (k % 3 === 0) check(cells, decodeCellBatch(await reuse.source.getCellsArrow(cells), m.nGenes));
        else if (k % 3 === 1) check(cells, await reuse.source.getCells(cells));
        else
          assert.deepEqual(
            (await reuse.source.getSourceRows(cells)).barcodes,
            cells.map((c) => expected[c]!.barcode),
          );
      })(),
    );
    // requests start while earlier ones still wait for their reads
    await new Promise((r) => setImmediate(r));
  }
  await Promise.all(pending);
  // then one after another across the dataset: each read finds the buffer the previous one evicted
  // (concurrent requests may all be reading before the first eviction, on a loaded machine)
  for (let k = 0; k < 6; k++) {
    const cells = [Math.floor((k * m.nCells) / 6)];
    check(cells, await reuse.source.getCells(cells));
  }
  assert.ok(reuse.source.stats().buffersReused > 0, 'evicted buffers are reused');
  await reuse.close();

  // a corrupted shard is caught by the checksum; a truncated one by its size
  const shard = path.join(out, m.shards[1]!.file);
  const bytes = fs.readFileSync(shard);
  bytes[Math.floor(bytes.length / 2)]! ^= 0xff;
  fs.writeFileSync(shard, bytes);
  await assert.rejects(
    openDataset(out, { verifyChecksums: true }),
    /shard-00001\.arrow: sha256 does not match/,
  );
  fs.writeFileSync(shard, bytes.subarray(0, 1000));
  await assert.rejects(openDataset(out), /shard-00001\.arrow: shard has 1000 bytes/);
  fs.rmSync(dir, { recursive: true });
});
