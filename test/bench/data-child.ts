// One measured data task in its own process (so its peak RSS is its own): prints one JSON line.
//   node data-child.js simulate <cells> <genes> <out> [h5ad]
//   node data-child.js prepare <input> <out>
//   node data-child.js serve <dataset> <cells to serve>
import fs from 'node:fs';
import type { CellSink } from '@atlasvae/coordinator/data';

// modules are loaded per task: h5wasm compiles its wasm in the background when imported, which
// would otherwise run during the serving measurement

/** peak resident set of this process, MiB */
function peakRssMiB(): number {
  return Math.round(process.resourceUsage().maxRSS / 1024);
}

async function main(): Promise<void> {
  const [task, ...args] = process.argv.slice(2);
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  const seconds = (): number => (performance.now() - t0) / 1000;
  // CPU time of this process: the machine is shared, so wall-clock rates understate one core's speed
  const cpuSeconds = (since = c0): number => {
    const u = process.cpuUsage(since);
    return (u.user + u.system) / 1e6;
  };
  if (task === 'simulate') {
    const { simulateToDataset, defaultSimulationOptions } = await import('@atlasvae/coordinator/data');
    const { H5adCellSink } = await import('@atlasvae/coordinator/data');
    const [cells, genes, out, h5ad] = [Number(args[0]), Number(args[1]), args[2]!, args[3]];
    fs.rmSync(out, { recursive: true, force: true });
    const o = { ...defaultSimulationOptions, cells, genes, batches: 4, cellTypes: 8, seed: 1 };
    const sinks: CellSink[] = h5ad ? [await H5adCellSink.create(h5ad, o)] : [];
    const m = await simulateToDataset({ ...o, out, shardCells: 65536, extraSinks: sinks });
    const s = seconds();
    const cpu = cpuSeconds();
    console.log(
      JSON.stringify({
        cells: m.nCells,
        nnzPerCell: Math.round(m.nnz / m.nCells),
        seconds: +s.toFixed(2),
        cellsPerSecond: Math.round(cells / s),
        cpuSeconds: +cpu.toFixed(2),
        cellsPerCpuSecond: Math.round(cells / cpu),
        peakRssMiB: peakRssMiB(),
      }),
    );
  } else if (task === 'prepare') {
    const { prepareDataset } = await import('@atlasvae/coordinator/data');
    const [input, out] = [args[0]!, args[1]!];
    fs.rmSync(out, { recursive: true, force: true });
    const { manifest } = await prepareDataset({
      input,
      out,
      batchKey: 'batch',
      labelKey: 'cell_type',
      shardCells: 65536,
      seed: 0,
      allowNonInteger: false,
    });
    const s = seconds();
    const cpu = cpuSeconds();
    console.log(
      JSON.stringify({
        cells: manifest.nCells,
        seconds: +s.toFixed(2),
        cellsPerSecond: Math.round(manifest.nCells / s),
        cpuSeconds: +cpu.toFixed(2),
        cellsPerCpuSecond: Math.round(manifest.nCells / cpu),
        peakRssMiB: peakRssMiB(),
      }),
    );
  } else if (task === 'serve') {
    const { openDataset } = await import('@atlasvae/coordinator/data');
    const { epochOrder, splitMicrobatches } = await import('@atlasvae/shared');
    const [dir, n] = [args[0]!, Number(args[1])];
    const ds = await openDataset(dir);
    const order = epochOrder(ds.train, { seed: 0, epoch: 0, planBlock: 1024, planWindow: 8 });
    const cells = order.subarray(0, Math.min(n, order.length));
    const t = performance.now();
    const c1 = process.cpuUsage();
    let bytes = 0;
    // as a coordinator would: the next global batch of 1,024 cells is prefetched while this one is served
    for (let s = 0; s < cells.length; s += 1024) {
      ds.source.prefetch(cells.subarray(s + 1024, s + 2048));
      for (const mb of splitMicrobatches(cells.subarray(s, s + 1024), 128))
        bytes += (await ds.source.getCellsArrow(mb)).byteLength;
    }
    const s = (performance.now() - t) / 1000;
    const cpu = cpuSeconds(c1);
    await ds.close();
    console.log(
      JSON.stringify({
        cells: cells.length,
        seconds: +s.toFixed(2),
        cellsPerSecond: Math.round(cells.length / s),
        cpuSeconds: +cpu.toFixed(2),
        cellsPerCpuSecond: Math.round(cells.length / cpu),
        megabytesPerSecond: Math.round(bytes / 1e6 / s),
        recordBatchesRead: ds.source.blocksRead,
        readBuffersReused: ds.source.buffersReused,
        peakRssMiB: peakRssMiB(),
      }),
    );
  } else {
    throw new Error(`unknown task ${task}`);
  }
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : String(e));
  process.exit(1);
});
