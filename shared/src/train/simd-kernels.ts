// The optimizer's two hot loops as a WebAssembly SIMD module, assembled here from opcodes (no
// toolchain, nothing downloaded): `add` (float64 sum += float32 gradient) and `adam` (one Adam
// update). Both work two elements at a time in f64x2 lanes with exactly the float64 arithmetic
// of the JavaScript loops in adam.ts and step.ts: the same operations in the same order, each
// lane IEEE-rounded as a JS number is, float32 loads widened exactly and stores rounded to
// nearest like a Float32Array store. So the results are the same bits, about twice as fast
// (Adam is bound by the float64 divide and square root, which f64x2 does two at a time).

/** unsigned LEB128 */
function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n !== 0) b |= 0x80;
    out.push(b);
  } while (n !== 0);
  return out;
}

/** signed LEB128 (small constants only) */
function sleb(n: number): number[] {
  const out: number[] = [];
  for (;;) {
    const b = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (b & 0x40) === 0) || (n === -1 && (b & 0x40) !== 0)) return [...out, b];
    out.push(b | 0x80);
  }
}

const name = (s: string): number[] => [...uleb(s.length), ...Buffer.from(s, 'utf8')];
const vec = (items: number[][]): number[] => [...uleb(items.length), ...items.flat()];
const section = (id: number, body: number[]): number[] => [id, ...uleb(body.length), ...body];

const I32 = 0x7f,
  F64 = 0x7c,
  V128 = 0x7b;

// instructions
const get = (i: number): number[] => [0x20, ...uleb(i)];
const set = (i: number): number[] => [0x21, ...uleb(i)];
const tee = (i: number): number[] => [0x22, ...uleb(i)];
const i32const = (n: number): number[] => [0x41, ...sleb(n)];
const I32_ADD = [0x6a],
  I32_SUB = [0x6b],
  I32_EQZ = [0x45];
const BLOCK = [0x02, 0x40],
  LOOP = [0x03, 0x40],
  END = [0x0b];
const brIf = (depth: number): number[] => [0x0d, ...uleb(depth)];
const simd = (op: number, ...imm: number[]): number[] => [0xfd, ...uleb(op), ...imm];
/** memarg: log2 alignment hint, offset 0 */
const V128_LOAD = simd(0x00, 3, 0);
const V128_STORE = simd(0x0b, 3, 0);
/** two float32 into the low half, high half zero */
const LOAD64_ZERO = simd(0x5d, 3, 0);
/** the low 64 bits (two float32) to memory */
const STORE64_LANE0 = simd(0x5b, 3, 0, 0);
const F64X2_SPLAT = simd(0x14);
const F64X2_SQRT = simd(0xef),
  F64X2_ADD = simd(0xf0),
  F64X2_SUB = simd(0xf1),
  F64X2_MUL = simd(0xf2),
  F64X2_DIV = simd(0xf3);
/** f32x4 → f64x2 of the low two lanes (exact) */
const PROMOTE = simd(0x5f);
/** f64x2 → f32x4 low two lanes, rounded to nearest even; high lanes zero */
const DEMOTE = simd(0x5e);

/** `loop body; ptrs += step; --pairs != 0 → again`, skipped when pairs is 0 */
function pairLoop(pairs: number, body: number[], bumps: [local: number, bytes: number][]): number[] {
  return [
    ...BLOCK,
    ...get(pairs),
    ...I32_EQZ,
    ...brIf(0),
    ...LOOP,
    ...body,
    ...bumps.flatMap(([l, b]) => [...get(l), ...i32const(b), ...I32_ADD, ...set(l)]),
    ...get(pairs),
    ...i32const(1),
    ...I32_SUB,
    ...tee(pairs),
    ...brIf(0),
    ...END,
    ...END,
  ];
}

function func(locals: [count: number, type: number][], body: number[]): number[] {
  const b = [...vec(locals.map(([c, t]) => [...uleb(c), t])), ...body, ...END];
  return [...uleb(b.length), ...b];
}

/** add(sum, grad, pairs): sum[i] += grad[i] for 2·pairs elements (byte addresses; sum float64, grad float32) */
function addFunction(): number[] {
  const SUM = 0,
    GRAD = 1,
    PAIRS = 2;
  const body = [
    ...get(SUM),
    ...get(SUM),
    ...V128_LOAD,
    ...get(GRAD),
    ...LOAD64_ZERO,
    ...PROMOTE,
    ...F64X2_ADD,
    ...V128_STORE,
  ];
  return func(
    [],
    pairLoop(PAIRS, body, [
      [SUM, 16],
      [GRAD, 8],
    ]),
  );
}

/**
 * adam(sum, params, m, v, pairs, sqLanes, scale, wd, b1, c1, b2, c2, stepSize, invSqrtBc2, eps):
 * for 2·pairs elements, exactly adam.ts's adamRange. sqLanes addresses two float64 that carry the
 * squared-gradient sum of even and odd elements across calls.
 */
function adamFunction(): number[] {
  const SUM = 0,
    P = 1,
    M = 2,
    V = 3,
    PAIRS = 4,
    SQ_PTR = 5;
  const SCALAR0 = 6; // scale … eps as f64 params 6..14
  const K = 15; // v128 splats of those nine constants: locals 15..23
  const [SCALE, WD, B1, C1, B2, C2, STEP, ISB, EPS] = [0, 1, 2, 3, 4, 5, 6, 7, 8].map((i) => K + i) as [
    number,
    number,
    number,
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  const SQ = 24,
    MEAN = 25,
    PV = 26,
    G = 27,
    MI = 28,
    VI = 29;
  const splats = [0, 1, 2, 3, 4, 5, 6, 7, 8].flatMap((i) => [
    ...get(SCALAR0 + i),
    ...F64X2_SPLAT,
    ...set(K + i),
  ]);
  const body = [
    // mean = sum·scale; sq += mean·mean
    ...get(SUM),
    ...V128_LOAD,
    ...get(SCALE),
    ...F64X2_MUL,
    ...tee(MEAN),
    ...get(MEAN),
    ...F64X2_MUL,
    ...get(SQ),
    ...F64X2_ADD,
    ...set(SQ),
    // g = mean + wd·p
    ...get(P),
    ...LOAD64_ZERO,
    ...PROMOTE,
    ...set(PV),
    ...get(MEAN),
    ...get(WD),
    ...get(PV),
    ...F64X2_MUL,
    ...F64X2_ADD,
    ...set(G),
    // mi = b1·m + c1·g; vi = b2·v + (c2·g)·g
    ...get(B1),
    ...get(M),
    ...LOAD64_ZERO,
    ...PROMOTE,
    ...F64X2_MUL,
    ...get(C1),
    ...get(G),
    ...F64X2_MUL,
    ...F64X2_ADD,
    ...set(MI),
    ...get(B2),
    ...get(V),
    ...LOAD64_ZERO,
    ...PROMOTE,
    ...F64X2_MUL,
    ...get(C2),
    ...get(G),
    ...F64X2_MUL,
    ...get(G),
    ...F64X2_MUL,
    ...F64X2_ADD,
    ...set(VI),
    ...get(M),
    ...get(MI),
    ...DEMOTE,
    ...STORE64_LANE0,
    ...get(V),
    ...get(VI),
    ...DEMOTE,
    ...STORE64_LANE0,
    // p − (stepSize·mi) / (sqrt(vi)·invSqrtBc2 + eps)
    ...get(P),
    ...get(PV),
    ...get(STEP),
    ...get(MI),
    ...F64X2_MUL,
    ...get(VI),
    ...F64X2_SQRT,
    ...get(ISB),
    ...F64X2_MUL,
    ...get(EPS),
    ...F64X2_ADD,
    ...F64X2_DIV,
    ...F64X2_SUB,
    ...DEMOTE,
    ...STORE64_LANE0,
  ];
  return func(
    [
      [9, V128],
      [6, V128],
    ],
    [
      ...splats,
      ...get(SQ_PTR),
      ...V128_LOAD,
      ...set(SQ),
      ...pairLoop(PAIRS, body, [
        [SUM, 16],
        [P, 8],
        [M, 8],
        [V, 8],
      ]),
      ...get(SQ_PTR),
      ...get(SQ),
      ...V128_STORE,
    ],
  );
}

function moduleBytes(): Uint8Array {
  const types = vec([
    [0x60, ...vec([[I32], [I32], [I32]]), ...vec([])],
    [
      0x60,
      ...vec([[I32], [I32], [I32], [I32], [I32], [I32], ...Array.from({ length: 9 }, () => [F64])]),
      ...vec([]),
    ],
  ]);
  const imports = vec([[...name('env'), ...name('memory'), 0x02, 0x00, ...uleb(1)]]);
  const functions = vec([uleb(0), uleb(1)]);
  const exports = vec([
    [...name('add'), 0x00, ...uleb(0)],
    [...name('adam'), 0x00, ...uleb(1)],
  ]);
  const code = [...uleb(2), ...addFunction(), ...adamFunction()];
  return Uint8Array.from([
    0x00,
    0x61,
    0x73,
    0x6d,
    0x01,
    0x00,
    0x00,
    0x00,
    ...section(1, types),
    ...section(2, imports),
    ...section(3, functions),
    ...section(7, exports),
    ...section(10, code),
  ]);
}

export interface SimdKernels {
  add(sum: number, grad: number, pairs: number): void;
  adam(
    sum: number,
    params: number,
    m: number,
    v: number,
    pairs: number,
    sqLanes: number,
    scale: number,
    wd: number,
    b1: number,
    c1: number,
    b2: number,
    c2: number,
    stepSize: number,
    invSqrtBc2: number,
    eps: number,
  ): void;
}

// The few WebAssembly APIs used here (the project's lib is ES2022 without the DOM's WebAssembly types).
/** a WebAssembly.Memory */
export interface WasmMemory {
  readonly buffer: ArrayBuffer;
}
interface WasmModule {
  readonly wasmModule: true;
}
interface WasmApi {
  validate(bytes: Uint8Array): boolean;
  Module: new (bytes: Uint8Array) => WasmModule;
  Instance: new (module: WasmModule, imports: { env: { memory: WasmMemory } }) => { exports: unknown };
  Memory: new (descriptor: { initial: number; maximum: number }) => WasmMemory;
}
const wasm = (globalThis as { WebAssembly?: WasmApi }).WebAssembly;

let compiled: WasmModule | null | undefined;

/** The compiled module, or null where this engine has no WebAssembly SIMD (callers use the JS loops). */
export function simdKernelModule(): WasmModule | null {
  if (compiled !== undefined) return compiled;
  try {
    const bytes = moduleBytes();
    compiled = wasm && wasm.validate(bytes) ? new wasm.Module(bytes) : null;
  } catch {
    compiled = null;
  }
  return compiled;
}

/** A fixed-size memory of `pages` × 64 KiB, or null where it cannot be had. */
export function createWasmMemory(pages: number): WasmMemory | null {
  if (!wasm || pages < 1 || pages > 65536) return null;
  try {
    return new wasm.Memory({ initial: pages, maximum: pages });
  } catch {
    return null;
  }
}

/** The kernels bound to `memory` (all addresses are byte offsets into it). */
export function instantiateSimdKernels(memory: WasmMemory): SimdKernels | null {
  const mod = simdKernelModule();
  if (!mod || !wasm) return null;
  return new wasm.Instance(mod, { env: { memory } }).exports as SimdKernels;
}
