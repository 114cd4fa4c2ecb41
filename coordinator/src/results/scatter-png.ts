// A 2-D scatter plot of cells coloured by category, with a legend and a title, as a PNG.

import { Rng } from '@atlasvae/shared';
import { Raster, textHeight, textWidth, type Rgb } from './raster.js';
import { categoryColours, UNKNOWN_COLOUR } from './palette.js';

export interface ScatterInput {
  /** [n, 2] row-major */
  xy: Float32Array;
  /** category code per point; < 0 = unknown */
  codes: Int32Array;
  /** category names by code */
  names: string[];
  title?: string;
  width?: number;
  height?: number;
  /** seed of the drawing order (points are drawn in a shuffled order so no category hides another) */
  seed?: number;
}

export interface ScatterOutput {
  png: Buffer;
  /** colour of each category code as drawn */
  colours: Rgb[];
  width: number;
  height: number;
}

const TEXT: Rgb = [20, 20, 20];
const FRAME: Rgb = [200, 200, 200];
const DRAW_STREAM = 0x44524157; // "DRAW"

export function renderScatter(input: ScatterInput): ScatterOutput {
  const W = input.width ?? 1000;
  const H = input.height ?? 800;
  if (W < 200 || H < 150) throw new Error(`image ${W}×${H} is too small (minimum 200×150)`);
  const n = input.codes.length;
  if (input.xy.length !== 2 * n) throw new Error('scatter: xy and codes lengths disagree');
  const img = new Raster(W, H);
  const colours = categoryColours(input.names.length);
  const hasUnknown = input.codes.some((c) => c < 0);

  const scale = H >= 500 ? 2 : 1;
  const pad = 10;
  const titleH = input.title ? textHeight(scale) + 2 * pad : pad;
  if (input.title) img.text(pad, pad, input.title, TEXT, scale);

  // legend: one row per category (counts shown), as many rows as fit, then "+N more"
  const counts = new Array<number>(input.names.length).fill(0);
  let unknownCount = 0;
  for (let i = 0; i < n; i++) {
    const c = input.codes[i]!;
    if (c >= 0) counts[c]!++;
    else unknownCount++;
  }
  const entries = input.names.map((name, c) => ({ label: `${name} (${counts[c]})`, colour: colours[c]! }));
  if (hasUnknown) entries.push({ label: `unknown (${unknownCount})`, colour: UNKNOWN_COLOUR });
  const rowH = textHeight(scale) + 6;
  const sw = textHeight(scale);
  const maxRows = Math.max(1, Math.floor((H - titleH - pad) / rowH));
  const shown = entries.length > maxRows ? entries.slice(0, maxRows - 1) : entries;
  const more = entries.length - shown.length;
  const legendLabels = shown.map((e) => e.label).concat(more ? [`+${more} more`] : []);
  const maxLegendW = Math.floor(W * 0.45);
  const legendW = Math.min(
    maxLegendW,
    Math.max(...legendLabels.map((l) => textWidth(l, scale))) + sw + 4 * pad,
  );
  const legendX = W - legendW;
  shown.forEach((e, r) => {
    const y = titleH + r * rowH;
    img.fillRect(legendX + pad, y, sw, sw, e.colour);
    img.text(legendX + 2 * pad + sw, y, clip(e.label, legendW - sw - 3 * pad, scale), TEXT, scale);
  });
  if (more) img.text(legendX + pad, titleH + shown.length * rowH, `+${more} more`, TEXT, scale);

  // plot area, equal scale on both axes
  const px0 = pad;
  const py0 = titleH;
  const pw = legendX - 2 * pad;
  const ph = H - titleH - pad;
  img.strokeRect(px0, py0, pw, ph, FRAME);
  let minX = Infinity,
    maxX = -Infinity,
    minY = Infinity,
    maxY = -Infinity;
  for (let i = 0; i < n; i++) {
    const x = input.xy[2 * i]!,
      y = input.xy[2 * i + 1]!;
    if (!Number.isFinite(x) || !Number.isFinite(y)) continue;
    if (x < minX) minX = x;
    if (x > maxX) maxX = x;
    if (y < minY) minY = y;
    if (y > maxY) maxY = y;
  }
  const radius = n <= 2000 ? 2.5 : n <= 20000 ? 1.5 : n <= 100000 ? 1 : 0.5;
  const inner = Math.ceil(radius) + 4;
  const spanX = Math.max(maxX - minX, 1e-9),
    spanY = Math.max(maxY - minY, 1e-9);
  const s = Math.min((pw - 2 * inner) / spanX, (ph - 2 * inner) / spanY);
  const ox = px0 + (pw - s * spanX) / 2;
  const oy = py0 + (ph - s * spanY) / 2;
  const order = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  new Rng(DRAW_STREAM, input.seed ?? 0).shuffle(order);
  // unknown cells first, underneath the labelled ones
  for (const pass of [0, 1]) {
    for (const i of order) {
      const c = input.codes[i]!;
      if (c < 0 !== (pass === 0)) continue;
      const x = input.xy[2 * i]!,
        y = input.xy[2 * i + 1]!;
      if (!Number.isFinite(x) || !Number.isFinite(y)) continue;
      // image y grows downwards: flip so the plot reads like a usual scatter
      img.disc(ox + (x - minX) * s, oy + (maxY - y) * s, radius, c < 0 ? UNKNOWN_COLOUR : colours[c]!);
    }
  }
  return { png: img.toPng(), colours, width: W, height: H };
}

function clip(text: string, maxW: number, scale: number): string {
  if (textWidth(text, scale) <= maxW) return text;
  let t = text;
  while (t.length > 1 && textWidth(t + '...', scale) > maxW) t = t.slice(0, -1);
  return t + '...';
}
