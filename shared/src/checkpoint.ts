// Checkpoints: everything needed to continue training exactly where it stopped (parameters,
// BatchNorm buffers, Adam state, plan position, RNG state, configuration, genes, manifest hash).
//
// File layout: a fixed 56-byte header, then a msgpack body.
//   0  8  magic "AVAECKPT"
//   8  4  container version (uint32 LE) = 1
//  12  4  reserved (0)
//  16  8  body length in bytes (uint64 LE)
//  24 32  SHA-256 of the body
//  56  …  msgpack body; Float32Arrays are stored as raw little-endian bytes
// The header lets a wrong file, a truncated file and a corrupted file each get its own error.
// Writes are atomic: temporary file in the same directory, fsync, rename, fsync of the directory.

import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { Packr, Unpackr } from 'msgpackr';
import type { ModelConfig, TrainConfig } from './config.js';
import { InputError } from './errors.js';
import type { EarlyStopping } from './train/early-stopping.js';
import { historyFromCheckpoint, type EpochRecord } from './train/history.js';

export interface CheckpointPosition {
  /** epoch the next step belongs to */
  epoch: number;
  /** index (within `epoch`) of the next step to run */
  stepInEpoch: number;
  /** optimizer steps taken so far */
  globalStep: number;
}

export interface Checkpoint {
  format: 'atlasvae-checkpoint';
  version: 1;
  modelConfig: ModelConfig;
  trainConfig: TrainConfig;
  params: Float32Array;
  /** BatchNorm running statistics (buffer layout) */
  buffers: Float32Array;
  adam: { m: Float32Array; v: Float32Array; t: number };
  position: CheckpointPosition;
  /** state of any stateful RNG the trainer keeps (plans and noise are keyed, so usually absent) */
  rng?: number[];
  genes: string[];
  batchCategories: string[];
  labelCategories: string[];
  /** hash of the prepared dataset's manifest, so a resume on different data is refused */
  manifestHash: string | null;
  /** per-epoch training history (old single-process records are converted when read) */
  history: EpochRecord[];
  createdAt: string;
  /** set when early stopping ended training (config in trainConfig.earlyStopping) */
  earlyStopped?: { epoch: number; bestEpoch: number; bestValidationElbo: number };
}

/** What the training loop puts into a checkpoint. */
export type CheckpointParts = Omit<
  Checkpoint,
  'format' | 'version' | 'createdAt' | 'earlyStopped' | 'rng'
> & {
  /** the run's early stopping: recorded when it has stopped the run */
  earlyStopping?: EarlyStopping | null;
};

/** The one place a training checkpoint is assembled (the caller saves it with `saveCheckpoint`). */
export function assembleCheckpoint(p: CheckpointParts): Checkpoint {
  const ckpt: Checkpoint = {
    format: 'atlasvae-checkpoint',
    version: 1,
    modelConfig: p.modelConfig,
    trainConfig: p.trainConfig,
    params: p.params,
    buffers: p.buffers,
    adam: p.adam,
    position: { ...p.position },
    genes: p.genes,
    batchCategories: p.batchCategories,
    labelCategories: p.labelCategories,
    manifestHash: p.manifestHash,
    history: p.history,
    createdAt: new Date().toISOString(),
  };
  const es = p.earlyStopping;
  if (es && es.wait >= es.config.patience)
    ckpt.earlyStopped = {
      epoch: es.bestEpoch + es.wait,
      bestEpoch: es.bestEpoch,
      bestValidationElbo: es.best,
    };
  return ckpt;
}

const MAGIC = Buffer.from('AVAECKPT', 'latin1');
const CONTAINER_VERSION = 1;
const HEADER_BYTES = 56;

const FLOAT_FIELDS = ['params', 'buffers'] as const;

function f32ToBytes(a: Float32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

function bytesToF32(b: unknown, file: string, field: string): Float32Array {
  if (!(b instanceof Uint8Array) || b.byteLength % 4 !== 0)
    throw new InputError(file, `checkpoint field ${field} is not a float32 array`);
  // copy: the source is a view into the file buffer and may be unaligned
  const out = new Float32Array(b.byteLength / 4);
  new Uint8Array(out.buffer).set(b);
  return out;
}

/** Serialise a checkpoint to bytes (header + body). */
export function encodeCheckpoint(ckpt: Checkpoint): Buffer {
  const body = new Packr({ useRecords: false }).pack({
    ...ckpt,
    params: f32ToBytes(ckpt.params),
    buffers: f32ToBytes(ckpt.buffers),
    adam: { m: f32ToBytes(ckpt.adam.m), v: f32ToBytes(ckpt.adam.v), t: ckpt.adam.t },
  });
  const header = Buffer.alloc(HEADER_BYTES);
  MAGIC.copy(header, 0);
  header.writeUInt32LE(CONTAINER_VERSION, 8);
  header.writeBigUInt64LE(BigInt(body.byteLength), 16);
  crypto.createHash('sha256').update(body).digest().copy(header, 24);
  return Buffer.concat([header, body]);
}

/** Parse checkpoint bytes; `file` names the source in errors. */
export function decodeCheckpoint(bytes: Uint8Array, file = 'checkpoint'): Checkpoint {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (buf.byteLength < HEADER_BYTES || !buf.subarray(0, 8).equals(MAGIC)) {
    throw new InputError(file, 'not an atlasvae checkpoint (missing the AVAECKPT header)');
  }
  const cv = buf.readUInt32LE(8);
  if (cv !== CONTAINER_VERSION)
    throw new InputError(
      file,
      `checkpoint container version ${cv} is not supported (expected ${CONTAINER_VERSION})`,
    );
  const len = Number(buf.readBigUInt64LE(16));
  const have = buf.byteLength - HEADER_BYTES;
  if (have < len) throw new InputError(file, `checkpoint is truncated: ${have} of ${len} body bytes present`);
  if (have > len) throw new InputError(file, `checkpoint has ${have - len} unexpected trailing bytes`);
  const body = buf.subarray(HEADER_BYTES);
  const digest = crypto.createHash('sha256').update(body).digest();
  if (!digest.equals(buf.subarray(24, 56)))
    throw new InputError(file, 'checkpoint is corrupted (checksum mismatch)');
  let raw: Record<string, unknown>;
  try {
    raw = new Unpackr({ useRecords: false }).unpack(body) as Record<string, unknown>;
  } catch (e) {
    throw new InputError(file, `checkpoint body cannot be decoded: ${(e as Error).message}`);
  }
  if (raw === null || typeof raw !== 'object') throw new InputError(file, 'checkpoint body is not an object');
  if (raw.format !== 'atlasvae-checkpoint')
    throw new InputError(file, `unexpected checkpoint format ${JSON.stringify(raw.format)}`);
  if (raw.version !== 1)
    throw new InputError(
      file,
      `checkpoint version ${JSON.stringify(raw.version)} is not supported (expected 1)`,
    );
  const adam = raw.adam as Record<string, unknown> | undefined;
  const pos = raw.position as Record<string, unknown> | undefined;
  if (!adam || typeof adam.t !== 'number') throw new InputError(file, 'checkpoint lacks the optimizer state');
  if (
    !pos ||
    typeof pos.epoch !== 'number' ||
    typeof pos.stepInEpoch !== 'number' ||
    typeof pos.globalStep !== 'number'
  ) {
    throw new InputError(file, 'checkpoint lacks the plan position');
  }
  if (!raw.modelConfig || !raw.trainConfig) throw new InputError(file, 'checkpoint lacks its configuration');
  for (const k of ['genes', 'batchCategories', 'labelCategories'] as const) {
    if (!Array.isArray(raw[k])) throw new InputError(file, `checkpoint field ${k} is not a list`);
  }
  const out = raw as unknown as Checkpoint;
  for (const f of FLOAT_FIELDS) out[f] = bytesToF32(raw[f], file, f);
  out.adam = { m: bytesToF32(adam.m, file, 'adam.m'), v: bytesToF32(adam.v, file, 'adam.v'), t: adam.t };
  if (out.adam.m.length !== out.params.length || out.adam.v.length !== out.params.length) {
    throw new InputError(
      file,
      `checkpoint optimizer state has ${out.adam.m.length}/${out.adam.v.length} entries for ${out.params.length} parameters`,
    );
  }
  out.history = historyFromCheckpoint(raw.history);
  if (out.manifestHash === undefined) out.manifestHash = null;
  return out;
}

/** Write `bytes` to `file` atomically: temp file beside it, fsync, rename, fsync the directory. */
export function writeFileAtomic(file: string, bytes: Uint8Array): void {
  const dir = path.dirname(path.resolve(file));
  fs.mkdirSync(dir, { recursive: true });
  const tmp = path.join(
    dir,
    `.${path.basename(file)}.${process.pid}.${crypto.randomBytes(4).toString('hex')}.tmp`,
  );
  const fd = fs.openSync(tmp, 'w');
  try {
    let off = 0;
    while (off < bytes.byteLength) off += fs.writeSync(fd, bytes, off, bytes.byteLength - off);
    fs.fsyncSync(fd);
  } catch (e) {
    fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  fs.closeSync(fd);
  fs.renameSync(tmp, file);
  try {
    const dfd = fs.openSync(dir, 'r');
    try {
      fs.fsyncSync(dfd);
    } finally {
      fs.closeSync(dfd);
    }
  } catch {
    // some filesystems refuse fsync on directories; the rename is still atomic
  }
}

export function saveCheckpoint(file: string, ckpt: Checkpoint): void {
  writeFileAtomic(file, encodeCheckpoint(ckpt));
}

export function loadCheckpoint(file: string): Checkpoint {
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new InputError(
      file,
      code === 'ENOENT'
        ? 'checkpoint file does not exist'
        : `cannot read checkpoint (${code ?? (e as Error).message})`,
    );
  }
  return decodeCheckpoint(bytes, file);
}
