// Reading HDF5 through h5wasm's Node build, which reads the file on disk (NODERAWFS): loading the
// library, running its calls with errors reported as InputErrors naming the file, and turning
// what it returns (typed arrays of any width, string lists, attributes) into numbers and strings.
import h5wasm from 'h5wasm/node';
import { InputError } from '@atlasvae/shared';

export type H5File = InstanceType<typeof h5wasm.File>;
export type H5Group = InstanceType<typeof h5wasm.Group>;
export type H5Dataset = InstanceType<typeof h5wasm.Dataset>;

interface ErrorSwitch {
  activate_throwing_error_handler(): number;
  deactivate_throwing_error_handler(): number;
}
let ready: Promise<ErrorSwitch> | null = null;
let errors: ErrorSwitch | null = null;
/** Waits for h5wasm's module to load (once) and keeps its error-handler switch for guard. */
export async function h5wasmReady(): Promise<void> {
  ready ??= h5wasm.ready as unknown as Promise<ErrorSwitch>;
  errors = await ready;
}

/** The innermost message of an HDF5 error stack ("truncated file: eof = …"). */
function hdf5Problem(e: unknown): string {
  const text = e instanceof Error ? e.message : String(e);
  const lines = text
    .split('\n')
    .map((l) => /#\d+: .* in [\w]+\(\): (.*)$/.exec(l)?.[1])
    .filter((x): x is string => !!x);
  return lines.at(-1) ?? text.split('\n')[0]!;
}

/**
 * Runs h5wasm calls with HDF5's errors thrown (instead of printed to stderr and ignored) and
 * reported as an InputError naming the file. Only around our own calls: h5wasm's default
 * handler is restored afterwards for other users in the process.
 */
export function guard<T>(file: string, what: string, fn: () => T): T {
  errors?.activate_throwing_error_handler();
  try {
    return fn();
  } catch (e) {
    if (e instanceof InputError) throw e;
    throw new InputError(file, `cannot read ${what}: ${hdf5Problem(e)} (truncated or corrupt file?)`);
  } finally {
    errors?.deactivate_throwing_error_handler();
  }
}

export function isGroup(e: unknown): e is H5Group {
  return e instanceof h5wasm.Group;
}
export function isDataset(e: unknown): e is H5Dataset {
  return e instanceof h5wasm.Dataset;
}

export function attr(e: H5Group | H5Dataset, name: string): unknown {
  const a = e.attrs[name];
  if (!a) return undefined;
  const v = a.value as unknown;
  return v;
}

export function attrString(e: H5Group | H5Dataset, name: string): string | undefined {
  const v = attr(e, name);
  if (typeof v === 'string') return v;
  if (Array.isArray(v) && typeof v[0] === 'string') return v[0];
  return undefined;
}

/** numbers from any numeric typed array h5wasm returns (bigint ones converted) */
export function toNumbers(v: unknown, file: string, what: string): Float64Array | Float32Array | Int32Array {
  if (v instanceof Float32Array || v instanceof Float64Array || v instanceof Int32Array) return v;
  if (v instanceof BigInt64Array || v instanceof BigUint64Array) return int64ToNumbers(v);
  if (
    v instanceof Int8Array ||
    v instanceof Int16Array ||
    v instanceof Uint8Array ||
    v instanceof Uint16Array
  )
    return Int32Array.from(v);
  if (v instanceof Uint32Array) return Float64Array.from(v);
  throw new InputError(file, `${what} is not numeric`);
}

/**
 * 64-bit integers (10x stores indices and indptr as int64) as numbers: the low 32-bit words when
 * every value is in 0..2^31-1 (little-endian), which avoids a BigInt conversion per value.
 */
function int64ToNumbers(v: BigInt64Array | BigUint64Array): Int32Array | Float64Array {
  const words = new Int32Array(v.buffer, v.byteOffset, v.length * 2);
  const out = new Int32Array(v.length);
  for (let i = 0; i < v.length; i++) {
    const lo = words[2 * i]!;
    if (words[2 * i + 1] !== 0 || lo < 0) return Float64Array.from(v as ArrayLike<bigint>, (x) => Number(x));
    out[i] = lo;
  }
  return out;
}

/** int32 indices without a copy when they already are */
export function asInt32(a: Float64Array | Float32Array | Int32Array): Int32Array {
  return a instanceof Int32Array ? a : Int32Array.from(a);
}

export function toIndexArray(v: unknown, file: string, what: string): Float64Array | Int32Array {
  const a = toNumbers(v, file, what);
  return a instanceof Float32Array ? Float64Array.from(a) : a;
}

export function strings(v: unknown, file: string, what: string): string[] {
  if (Array.isArray(v)) return v.map((x) => (typeof x === 'string' ? x.replace(/\0+$/, '') : String(x)));
  if (ArrayBuffer.isView(v)) return Array.from(v as unknown as ArrayLike<number | bigint>, (x) => String(x));
  if (typeof v === 'string') return [v];
  throw new InputError(file, `${what} is not a list of strings`);
}

export function read(file: string, d: H5Dataset, what: string, start?: number, end?: number): unknown {
  return guard(file, what, () => (start === undefined ? d.value : d.slice([[start, end!]])));
}

export function need<T>(x: T | null | undefined, file: string, msg: string): T {
  if (x === null || x === undefined) throw new InputError(file, msg);
  return x;
}
