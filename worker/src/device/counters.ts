// Host↔device traffic and kernel launches of TensorFlow.js, counted at the engine (the one place every
// backend goes through): `runKernelFunc` for each registered kernel run, `makeTensor` for each tensor
// made from host values (an upload: explicit data and hidden constants alike), `read`/`readSync` for
// each readback. Counted process-wide; a DeviceModel keeps the deltas over its own synchronous spans.
import type * as tfNs from '@tensorflow/tfjs-core';

export interface DeviceCounters {
  /** registered kernels run that compute (forward and backward); view kernels not included */
  kernels: number;
  /** kernels that only relabel data on every backend (Identity, Reshape, a Cast to the same dtype):
   * tfjs runs one per tensor it saves for the backward pass */
  viewKernels?: number;
  /** tensors made from host values */
  uploads: number;
  uploadBytes: number;
  /** tensor values read back to the host (data() or dataSync()) */
  readbacks: number;
  readbackBytes: number;
}

export function zeroCounters(): DeviceCounters {
  return { kernels: 0, viewKernels: 0, uploads: 0, uploadBytes: 0, readbacks: 0, readbackBytes: 0 };
}

const HOOKED = Symbol.for('atlasvae.deviceCounters');

type Fn = (...args: unknown[]) => unknown;
type HookedEngine = Record<string | symbol, unknown> & { [HOOKED]?: DeviceCounters };

function byteLength(v: unknown): number {
  if (ArrayBuffer.isView(v)) return v.byteLength;
  if (Array.isArray(v)) return v.length * 4;
  return 0;
}

/** The live process-wide totals of `tf`'s engine, hooking it on first use. */
export function engineCounters(tf: typeof tfNs): DeviceCounters {
  const engine = tf.engine() as unknown as HookedEngine;
  const existing = engine[HOOKED];
  if (existing) return existing;
  const c = zeroCounters();
  const wrap = (name: string, before: (args: unknown[]) => void): void => {
    const orig = engine[name] as Fn;
    if (typeof orig !== 'function')
      throw new Error(`this @tensorflow/tfjs-core has no engine.${name}: cannot count device work`);
    engine[name] = function (this: unknown, ...args: unknown[]): unknown {
      before(args);
      return orig.apply(this, args);
    };
  };
  // a registered kernel carries its name; a customGrad's forward function does not (its ops are counted)
  wrap('runKernelFunc', (a) => {
    const k = a[0] as {
      kernelName?: string;
      inputs?: { x?: { dtype?: string } };
      attrs?: { dtype?: string };
    };
    if (k.kernelName == null) return;
    if (
      k.kernelName === 'Identity' ||
      k.kernelName === 'Reshape' ||
      (k.kernelName === 'Cast' && k.inputs?.x?.dtype === k.attrs?.dtype)
    )
      c.viewKernels! += 1;
    else c.kernels++;
  });
  wrap('makeTensor', (a) => {
    c.uploads++;
    c.uploadBytes += byteLength(a[0]);
  });
  // bytes from the engine's record of the tensor, known before an asynchronous read resolves
  const readback = (a: unknown[]): void => {
    const state = engine['state'] as { tensorInfo: { get(id: unknown): { bytes: number } | undefined } };
    c.readbacks++;
    c.readbackBytes += state.tensorInfo.get(a[0])?.bytes ?? 0;
  };
  wrap('readSync', readback);
  wrap('read', readback);
  engine[HOOKED] = c;
  return c;
}

/** a − b, field by field, added into `into` */
export function addDelta(into: DeviceCounters, a: DeviceCounters, b: DeviceCounters): void {
  into.kernels += a.kernels - b.kernels;
  into.viewKernels = (into.viewKernels ?? 0) + (a.viewKernels ?? 0) - (b.viewKernels ?? 0);
  into.uploads += a.uploads - b.uploads;
  into.uploadBytes += a.uploadBytes - b.uploadBytes;
  into.readbacks += a.readbacks - b.readbacks;
  into.readbackBytes += a.readbackBytes - b.readbackBytes;
}
