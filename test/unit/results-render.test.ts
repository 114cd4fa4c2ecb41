import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PNG } from 'pngjs';
import {
  fontCharacters,
  glyphSource,
  renderScatter,
  categoryColours,
  computeUmap,
} from '@atlasvae/coordinator/results';
import { Rng } from '@atlasvae/shared';

test('every printable ASCII character has a well-formed 5×7 glyph', () => {
  const chars = fontCharacters();
  for (let c = 32; c < 127; c++)
    assert.ok(chars.includes(String.fromCharCode(c)), `missing ${String.fromCharCode(c)}`);
  for (const ch of chars) {
    const rows = glyphSource(ch)!.split('|');
    assert.equal(rows.length, 7, `glyph ${ch}`);
    for (const r of rows) assert.match(r, /^[.#]{5}$/, `glyph ${ch}`);
  }
  // glyphs differ from each other (no copy-paste slips), except the space
  const seen = new Map<string, string>();
  for (const ch of chars) {
    const g = glyphSource(ch)!;
    assert.ok(!seen.has(g), `${ch} draws the same as ${seen.get(g)}`);
    seen.set(g, ch);
  }
});

test('category colours are distinct', () => {
  const c = categoryColours(60).map((x) => x.join(','));
  assert.equal(new Set(c).size, 60);
});

test('scatter PNG decodes at the requested size with one colour per category and a legend', () => {
  const n = 600;
  const rng = new Rng(1);
  const xy = new Float32Array(2 * n);
  const codes = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    codes[i] = i % 3;
    xy[2 * i] = codes[i]! * 10 + rng.normal();
    xy[2 * i + 1] = rng.normal();
  }
  const out = renderScatter({
    xy,
    codes,
    names: ['alpha', 'beta cells', 'CD14+ Mono'],
    title: 'test',
    width: 640,
    height: 480,
  });
  const png = PNG.sync.read(out.png);
  assert.equal(png.width, 640);
  assert.equal(png.height, 480);
  const count = new Map<string, number>();
  for (let p = 0; p < png.width * png.height; p++) {
    const k = `${png.data[p * 4]},${png.data[p * 4 + 1]},${png.data[p * 4 + 2]}`;
    count.set(k, (count.get(k) ?? 0) + 1);
  }
  for (const c of out.colours) assert.ok((count.get(c.join(',')) ?? 0) > 100, `colour ${c.join()} drawn`);
  // text pixels (dark) exist: title and legend labels
  assert.ok((count.get('20,20,20') ?? 0) > 200);
});

test('UMAP is seeded and keeps well-separated clusters apart', () => {
  const n = 300,
    dim = 5;
  const rng = new Rng(2);
  const pts = new Float32Array(n * dim);
  const lab = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    lab[i] = i % 3;
    for (let d = 0; d < dim; d++) pts[i * dim + d] = (d === lab[i] ? 12 : 0) + rng.normal();
  }
  const a = computeUmap(pts, n, dim, { seed: 5, nEpochs: 100 });
  const b = computeUmap(pts, n, dim, { seed: 5, nEpochs: 100 });
  assert.deepEqual(a, b);
  // each point's nearest 2-D neighbour has its label
  let ok = 0;
  for (let i = 0; i < n; i++) {
    let best = -1,
      bd = Infinity;
    for (let j = 0; j < n; j++) {
      if (j === i) continue;
      const d = (a[2 * i]! - a[2 * j]!) ** 2 + (a[2 * i + 1]! - a[2 * j + 1]!) ** 2;
      if (d < bd) {
        bd = d;
        best = j;
      }
    }
    if (lab[best] === lab[i]) ok++;
  }
  assert.ok(ok / n > 0.98, `2-D neighbour agreement ${ok / n}`);
});
