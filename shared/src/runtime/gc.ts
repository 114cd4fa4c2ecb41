// Garbage-collector tuning for the long-running processes (coordinator and workers).
//
// Why: both processes have a small JavaScript heap (~10 MB: the big arrays are typed arrays
// outside it) but move megabytes of short-lived ArrayBuffers per step (gradients, parameters,
// Arrow microbatches). V8 sizes the old-generation limit from the live heap with a growth factor
// of 1.1–1.3 when collection is fast; for a 10 MB heap that leaves less headroom than the young
// generation, so V8 starts a new incremental mark-compact as soon as the previous one ends
// (measured: a major GC every ~2 training steps, ~7 ms of the coordinator's main thread per step
// plus its helper threads). A larger growth factor lets the heap grow to a few times its live size
// before a major GC, which removes that loop (< 1 ms of GC per step) at a cost of tens of MB.

import v8 from 'node:v8';

/** old-generation growth factor: limit = live size × (1 + percent / 100) */
export const DEFAULT_HEAP_GROWING_PERCENT = 400;

let applied: number | null = null;

/**
 * Apply the heap growth setting to this process (once; later calls with the same value are no-ops).
 * `ATLASVAE_HEAP_GROWING_PERCENT` overrides the default; 0 keeps V8's own heuristics.
 * Returns the percentage in force (0: V8's default).
 */
export function tuneGarbageCollector(percent: number = envPercent()): number {
  if (!Number.isInteger(percent) || percent < 0 || percent > 10_000) {
    throw new RangeError(`ATLASVAE_HEAP_GROWING_PERCENT must be an integer 0–10000, got ${percent}`);
  }
  if (applied === percent) return percent;
  // read by V8 each time it recomputes the heap limit after a GC, so it can be set at run time
  if (percent > 0) v8.setFlagsFromString(`--heap-growing-percent=${percent}`);
  else if (applied !== null) v8.setFlagsFromString('--heap-growing-percent=0');
  applied = percent;
  return percent;
}

function envPercent(): number {
  const raw = process.env.ATLASVAE_HEAP_GROWING_PERCENT;
  if (raw === undefined || raw === '') return DEFAULT_HEAP_GROWING_PERCENT;
  const n = Number(raw);
  if (!Number.isInteger(n))
    throw new RangeError(`ATLASVAE_HEAP_GROWING_PERCENT must be an integer 0–10000, got "${raw}"`);
  return n;
}
