// Category colours: a fixed set of 20 well-separated colours, then golden-angle hues for more.

import type { Rgb } from './raster.js';

const BASE: Rgb[] = [
  [31, 119, 180],
  [255, 127, 14],
  [44, 160, 44],
  [214, 39, 40],
  [148, 103, 189],
  [140, 86, 75],
  [227, 119, 194],
  [188, 189, 34],
  [23, 190, 207],
  [0, 0, 128],
  [174, 199, 232],
  [255, 187, 120],
  [152, 223, 138],
  [255, 152, 150],
  [197, 176, 213],
  [196, 156, 148],
  [247, 182, 210],
  [219, 219, 141],
  [158, 218, 229],
  [128, 128, 0],
];

/** Grey for cells whose category is unknown. */
export const UNKNOWN_COLOUR: Rgb = [170, 170, 170];

function hslToRgb(h: number, s: number, l: number): Rgb {
  const f = (n: number): number => {
    const k = (n + h / 30) % 12;
    const a = s * Math.min(l, 1 - l);
    return Math.round(255 * (l - a * Math.max(-1, Math.min(k - 3, 9 - k, 1))));
  };
  return [f(0), f(8), f(4)];
}

/** `n` distinct colours. */
export function categoryColours(n: number): Rgb[] {
  const out: Rgb[] = [];
  for (let i = 0; i < n; i++) {
    if (i < BASE.length) out.push(BASE[i]!);
    else out.push(hslToRgb((i * 137.508) % 360, 0.65 + 0.2 * ((i >> 1) % 2), 0.38 + (0.17 * (i % 3)) / 2));
  }
  return out;
}
