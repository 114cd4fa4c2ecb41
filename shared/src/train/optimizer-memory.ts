// The optimizer's arrays (parameters, Adam moments, the float64 gradient sum and a staging slot for
// an incoming gradient) laid out in one WebAssembly memory, so the SIMD kernels can run on them
// in place. The arrays are ordinary typed-array views: everything else (checkpoints, the model,
// the wire) reads and writes them as before. The memory never grows, so the views stay valid.
import type { AdamState, AdamStepConstants } from './adam.js';
import { CliError } from '../errors.js';
import {
  createWasmMemory,
  instantiateSimdKernels,
  type SimdKernels,
  type WasmMemory,
} from './simd-kernels.js';

export class OptimizerMemory {
  readonly params: Float32Array;
  readonly m: Float32Array;
  readonly v: Float32Array;
  /** the gradient sum (float64) the Adam kernel reads */
  readonly sum: Float64Array;
  /** where an incoming float32 gradient is copied for the add kernel */
  readonly staging: Float32Array;
  /** two float64: the squared-gradient sums of even and odd elements (Adam's scratch) */
  readonly sqLanes: Float64Array;

  private constructor(
    readonly size: number,
    private readonly kernels: SimdKernels,
    memory: WasmMemory,
  ) {
    const buf = memory.buffer;
    const f32Bytes = align16(4 * size);
    let at = 0;
    const f32 = (): Float32Array => {
      const a = new Float32Array(buf, at, size);
      at += f32Bytes;
      return a;
    };
    this.params = f32();
    this.m = f32();
    this.v = f32();
    this.staging = f32();
    this.sum = new Float64Array(buf, at, size);
    at += align16(8 * size);
    this.sqLanes = new Float64Array(buf, at, 2);
  }

  /** A memory for `size` parameters, or null without WebAssembly SIMD or when it cannot be had (callers keep plain arrays). */
  static create(size: number): OptimizerMemory | null {
    if (!simdEnabled()) return null;
    const bytes = 4 * align16(4 * size) + align16(8 * size) + 16;
    const memory = createWasmMemory(Math.max(1, Math.ceil(bytes / 65536))); // null beyond 4 GiB (wasm32)
    if (!memory) return null;
    const kernels = instantiateSimdKernels(memory);
    if (!kernels) return null;
    const mem = new OptimizerMemory(size, kernels, memory);
    owners.set(mem.params.buffer, mem);
    return mem;
  }

  /** whether these arrays are this memory's own (the kernels address nothing else) */
  holds(params: Float32Array, sum: ArrayLike<number>, adam: AdamState): boolean {
    return params === this.params && sum === this.sum && adam.m === this.m && adam.v === this.v;
  }

  /** sum[i] += grad[i] for all i (grad is copied into staging, where the kernel can read it) */
  addToSum(grad: Float32Array): void {
    const n = this.size;
    if (grad.length !== n) throw new RangeError(`gradient of ${grad.length} floats, the optimizer has ${n}`);
    this.staging.set(grad);
    const pairs = n >>> 1;
    this.kernels.add(this.sum.byteOffset, this.staging.byteOffset, pairs);
    if (n & 1) this.sum[n - 1]! += this.staging[n - 1]!;
  }

  /**
   * Adam on elements [start, end) (start even) with the kernels; the odd last element, if any, is
   * left to the caller's scalar loop. `sq` carries [even, odd] squared-gradient sums in and out.
   * Returns the first element not done.
   */
  adamPairs(start: number, end: number, sq: [number, number], k: AdamStepConstants): number {
    const pairs = (end - start) >>> 1;
    if (pairs === 0) return start;
    this.sqLanes[0] = sq[0];
    this.sqLanes[1] = sq[1];
    this.kernels.adam(
      this.sum.byteOffset + 8 * start,
      this.params.byteOffset + 4 * start,
      this.m.byteOffset + 4 * start,
      this.v.byteOffset + 4 * start,
      pairs,
      this.sqLanes.byteOffset,
      k.scale,
      k.wd,
      k.b1,
      k.c1,
      k.b2,
      k.c2,
      k.stepSize,
      k.invSqrtBc2,
      k.eps,
    );
    sq[0] = this.sqLanes[0]!;
    sq[1] = this.sqLanes[1]!;
    return start + 2 * pairs;
  }
}

/** `ATLASVAE_SIMD`: unset, empty or 1 = the kernels (where the engine has them), 0 = the JavaScript loops. */
export function simdEnabled(raw = process.env.ATLASVAE_SIMD): boolean {
  if (raw === undefined || raw === '' || raw === '1') return true;
  if (raw === '0') return false;
  throw new CliError(
    `ATLASVAE_SIMD must be 0 (JavaScript loops) or 1 (WebAssembly SIMD kernels), got "${raw}"`,
  );
}

const align16 = (n: number): number => (n + 15) & ~15;

const owners = new WeakMap<ArrayBufferLike, OptimizerMemory>();

/** The optimizer memory these parameters live in, if any. */
export function optimizerMemoryOf(params: Float32Array): OptimizerMemory | undefined {
  const mem = owners.get(params.buffer);
  return mem && mem.params === params ? mem : undefined;
}
