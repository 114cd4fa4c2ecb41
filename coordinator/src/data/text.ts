// Line-oriented reading of plain or gzipped text files (MTX, TSV), as raw byte chunks.
import fs from 'node:fs';
import zlib from 'node:zlib';
import { InputError } from '@atlasvae/shared';

/** The bytes of a file, gunzipped when its name ends in .gz, as a stream of chunks. */
export async function* fileChunks(file: string): AsyncGenerator<Buffer> {
  const raw = fs.createReadStream(file, { highWaterMark: 1 << 20 });
  const stream = file.endsWith('.gz') ? raw.pipe(zlib.createGunzip({ chunkSize: 1 << 20 })) : raw;
  if (stream !== raw) raw.on('error', (e) => stream.destroy(e));
  try {
    for await (const chunk of stream) yield chunk as Buffer;
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ENOENT') throw new InputError(file, 'file not found');
    if (
      err.code === 'Z_BUF_ERROR' ||
      err.code === 'Z_DATA_ERROR' ||
      /unexpected end|incorrect header/i.test(err.message)
    ) {
      throw new InputError(file, `corrupt or truncated gzip data (${err.message})`);
    }
    throw new InputError(file, `cannot read: ${err.message}`);
  } finally {
    stream.destroy();
  }
}

/**
 * Complete lines as [buffer, start, end) slices (end excludes '\n' and a trailing '\r').
 * The callback gets the shared chunk buffer: copy out anything kept.
 */
export async function forEachLine(
  file: string,
  onLine: (buf: Buffer, start: number, end: number) => void,
): Promise<void> {
  let rest: Buffer | null = null;
  for await (const chunk of fileChunks(file)) {
    const buf: Buffer = rest ? Buffer.concat([rest, chunk]) : chunk;
    let start = 0;
    for (;;) {
      const nl = buf.indexOf(10, start);
      if (nl < 0) break;
      const end = nl > start && buf[nl - 1] === 13 ? nl - 1 : nl;
      onLine(buf, start, end);
      start = nl + 1;
    }
    rest = start < buf.length ? buf.subarray(start) : null;
    if (rest) rest = Buffer.from(rest); // detach from the stream's chunk
  }
  if (rest && rest.length > 0) {
    const end = rest[rest.length - 1] === 13 ? rest.length - 1 : rest.length;
    onLine(rest, 0, end);
  }
}

/** One line split on tabs: never empty (an empty line is one empty field). */
export type TsvRow = [string, ...string[]];

/** All lines of a (small) text file, split on tabs. Empty trailing lines are dropped. */
export async function readTsvRows(file: string): Promise<TsvRow[]> {
  const rows: TsvRow[] = [];
  await forEachLine(file, (buf, s, e) => {
    rows.push(buf.toString('utf8', s, e).split('\t') as TsvRow);
  });
  while (rows.at(-1)?.join('\t') === '') rows.pop();
  return rows;
}

/** The first existing path among candidates, or null. */
export function firstExisting(paths: string[]): string | null {
  for (const p of paths) if (fs.existsSync(p)) return p;
  return null;
}
