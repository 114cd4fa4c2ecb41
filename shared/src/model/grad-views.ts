// The gradient of one pass as a flat vector with a named view per parameter (the backward steps
// of vae-layers.ts and vae.ts write into these views).
import type { ParamLayout } from './types.js';

/** A zeroed flat gradient with named views (in `into`, zeroed first, when given). */
export class GradViews {
  readonly flat: Float32Array;
  private readonly views = new Map<string, Float32Array>();
  constructor(layout: ParamLayout, into?: Float32Array) {
    this.flat = into ? into.fill(0) : new Float32Array(layout.size);
    for (const e of layout.entries) this.views.set(e.name, this.flat.subarray(e.offset, e.offset + e.size));
  }
  get(name: string): Float32Array {
    const v = this.views.get(name);
    if (!v) throw new Error(`no parameter ${name}`);
    return v;
  }
}
