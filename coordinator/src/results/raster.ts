// A minimal RGBA raster: rectangles, discs, bitmap text, PNG encoding (pngjs). Enough to draw a
// scatter plot with a legend without a graphics library.

import { PNG } from 'pngjs';
import { glyph, GLYPH_HEIGHT, GLYPH_WIDTH } from './font5x7.js';

export type Rgb = readonly [number, number, number];

export class Raster {
  readonly data: Uint8Array;

  constructor(
    readonly width: number,
    readonly height: number,
    background: Rgb = [255, 255, 255],
  ) {
    this.data = new Uint8Array(width * height * 4);
    for (let p = 0; p < width * height; p++) {
      this.data[p * 4] = background[0];
      this.data[p * 4 + 1] = background[1];
      this.data[p * 4 + 2] = background[2];
      this.data[p * 4 + 3] = 255;
    }
  }

  setPixel(x: number, y: number, c: Rgb): void {
    if (x < 0 || y < 0 || x >= this.width || y >= this.height) return;
    const o = (y * this.width + x) * 4;
    this.data[o] = c[0];
    this.data[o + 1] = c[1];
    this.data[o + 2] = c[2];
  }

  fillRect(x: number, y: number, w: number, h: number, c: Rgb): void {
    for (let yy = Math.max(0, y); yy < Math.min(this.height, y + h); yy++) {
      for (let xx = Math.max(0, x); xx < Math.min(this.width, x + w); xx++) this.setPixel(xx, yy, c);
    }
  }

  strokeRect(x: number, y: number, w: number, h: number, c: Rgb): void {
    this.fillRect(x, y, w, 1, c);
    this.fillRect(x, y + h - 1, w, 1, c);
    this.fillRect(x, y, 1, h, c);
    this.fillRect(x + w - 1, y, 1, h, c);
  }

  /** A filled disc centred at (cx, cy); radius < 0.75 draws a single pixel. */
  disc(cx: number, cy: number, r: number, c: Rgb): void {
    const x0 = Math.round(cx);
    const y0 = Math.round(cy);
    if (r < 0.75) return this.setPixel(x0, y0, c);
    const R = Math.ceil(r);
    const r2 = r * r;
    for (let dy = -R; dy <= R; dy++) {
      for (let dx = -R; dx <= R; dx++) if (dx * dx + dy * dy <= r2) this.setPixel(x0 + dx, y0 + dy, c);
    }
  }

  /** Draw `text` with its top-left corner at (x, y), glyphs magnified `scale` times. */
  text(x: number, y: number, text: string, c: Rgb, scale = 2): void {
    let cx = x;
    for (const ch of text) {
      const g = glyph(ch);
      for (let r = 0; r < GLYPH_HEIGHT; r++) {
        for (let col = 0; col < GLYPH_WIDTH; col++) {
          if (g[r * GLYPH_WIDTH + col]) this.fillRect(cx + col * scale, y + r * scale, scale, scale, c);
        }
      }
      cx += textAdvance(scale);
    }
  }

  toPng(): Buffer {
    const png = new PNG({ width: this.width, height: this.height });
    png.data = Buffer.from(this.data.buffer, this.data.byteOffset, this.data.byteLength);
    return PNG.sync.write(png);
  }
}

/** Horizontal distance between consecutive characters. */
export function textAdvance(scale: number): number {
  return (GLYPH_WIDTH + 1) * scale;
}

export function textWidth(text: string, scale: number): number {
  return [...text].length * textAdvance(scale) - scale;
}

export function textHeight(scale: number): number {
  return GLYPH_HEIGHT * scale;
}
