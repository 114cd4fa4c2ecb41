// Wire framing: one WebSocket binary message = a msgpack header plus an optional raw payload.
//
//   0      4          4+H        P (= 4+H rounded up to a multiple of 8)
//   | u32 H | msgpack  | zero pad | payload bytes (Float32 values or Arrow IPC) … end |
//
// The payload starts at an 8-byte aligned offset so the receiver can view it as a Float32Array
// without copying whenever the message buffer itself is aligned (it is for fresh allocations).

import { Packr, Unpackr } from 'msgpackr';

/** Headers are small; anything larger is refused before decoding. */
export const MAX_HEADER_BYTES = 64 * 1024;

const packr = new Packr({ useRecords: false, moreTypes: false });
const unpackr = new Unpackr({ useRecords: false, moreTypes: false, mapsAsObjects: true });

export class FrameError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FrameError';
  }
}

function payloadOffset(headerBytes: number): number {
  return (4 + headerBytes + 7) & ~7;
}

/** Bytes a frame with this packed header and payload needs. */
function frameLength(head: Uint8Array, payload: ArrayBufferView[]): number {
  let total = payloadOffset(head.byteLength);
  for (const p of payload) total += p.byteLength;
  return total;
}

/** Write the header length, header and zero padding; returns where the payload starts. */
function writeHead(out: Buffer, head: Buffer): number {
  const start = payloadOffset(head.byteLength);
  out.writeUInt32LE(head.byteLength, 0);
  head.copy(out, 4);
  out.fill(0, 4 + head.byteLength, start);
  return start;
}

/** Write header, padding, then each payload part in order into `out` (exactly frameLength bytes). */
function writeFrame(out: Buffer, head: Buffer, payload: ArrayBufferView[]): Buffer {
  const start = writeHead(out, head);
  let pos = start;
  for (const p of payload) {
    out.set(new Uint8Array(p.buffer, p.byteOffset, p.byteLength), pos);
    pos += p.byteLength;
  }
  return out;
}

/** Build one frame: header, padding, then each payload part in order (a single copy of each). */
export function encodeFrame(header: object, ...payload: ArrayBufferView[]): Buffer {
  const head = packr.pack(header);
  return writeFrame(Buffer.allocUnsafeSlow(frameLength(head, payload)), head, payload);
}

/**
 * Encodes frames of about the same size into one retained buffer instead of a fresh allocation
 * per message (a 2 MB parameter or gradient frame per step otherwise costs the sender a large
 * external allocation each time, which drives V8 into frequent full GCs). ws sends a buffer by
 * reference, so the caller must say when the previous frame is no longer queued on any socket
 * (`bufferedAmount === 0` everywhere it was sent); otherwise a fresh buffer is used and kept.
 */
export class ReusableFrame {
  private buf: Buffer | null = null;

  encode(reusable: boolean, header: object, ...payload: ArrayBufferView[]): Buffer {
    const head = packr.pack(header);
    const total = frameLength(head, payload);
    return writeFrame(this.take(reusable, total), head, payload);
  }

  /**
   * A frame with `payloadBytes` of payload that the caller fills in place, e.g. range by range
   * while sending the frame as the fragments of one message. `payloadStart` is 8-byte aligned in
   * an aligned buffer, so the payload can be viewed as Float32 values.
   */
  begin(reusable: boolean, header: object, payloadBytes: number): { frame: Buffer; payloadStart: number } {
    const head = packr.pack(header);
    const frame = this.take(reusable, payloadOffset(head.byteLength) + payloadBytes);
    return { frame, payloadStart: writeHead(frame, head) };
  }

  private take(reusable: boolean, total: number): Buffer {
    if (!reusable || !this.buf || this.buf.byteLength < total) this.buf = Buffer.allocUnsafeSlow(total + 64);
    return this.buf.subarray(0, total);
  }
}

/**
 * A frame whose Float32 payload is written before its header is known: a worker computes its
 * gradient straight into the outgoing message, then packs the header (which holds the loss sums
 * and the compute time). The payload sits at a fixed 8-aligned offset `RESERVED` of one retained
 * buffer; the frame then starts wherever the packed header needs it to (RESERVED − its padded
 * length, a multiple of 8), so nothing is moved and the bytes equal encodeFrame's.
 */
export class PayloadFirstFrame {
  /** header room: result headers are ~200 bytes; a larger header falls back to one copy */
  static readonly RESERVED = 1024;
  private buf: Buffer | null = null;
  private floats = 0;

  /** The payload to fill: `floats` Float32 values. Reuses the buffer only when told the last
   * frame is no longer queued on the socket (ws sends by reference). */
  payload(reusable: boolean, floats: number): Float32Array {
    const bytes = PayloadFirstFrame.RESERVED + 4 * floats;
    if (!reusable || !this.buf || this.buf.byteLength < bytes) this.buf = Buffer.allocUnsafeSlow(bytes);
    this.floats = floats;
    return new Float32Array(this.buf.buffer, this.buf.byteOffset + PayloadFirstFrame.RESERVED, floats);
  }

  /** The finished frame: `header` packed in front of the payload filled since `payload()`. */
  finish(header: object): Buffer {
    const buf = this.buf;
    if (!buf) throw new Error('PayloadFirstFrame.finish before payload()');
    const head = packr.pack(header);
    const start = payloadOffset(head.byteLength);
    const end = PayloadFirstFrame.RESERVED + 4 * this.floats;
    if (start > PayloadFirstFrame.RESERVED) {
      return encodeFrame(header, buf.subarray(PayloadFirstFrame.RESERVED, end));
    }
    const frame = buf.subarray(PayloadFirstFrame.RESERVED - start, end);
    writeHead(frame, head);
    return frame;
  }
}

/** The same frame as a list of parts (header with padding, then the payload views, uncopied), to
 * be sent as the fragments of one WebSocket message. The payload arrays must not change until sent. */
export function encodeFrameParts(header: object, ...payload: ArrayBufferView[]): Uint8Array[] {
  const head = packr.pack(header);
  const start = payloadOffset(head.byteLength);
  const first = Buffer.alloc(start);
  first.writeUInt32LE(head.byteLength, 0);
  head.copy(first, 4);
  return [first, ...payload.map((p) => new Uint8Array(p.buffer, p.byteOffset, p.byteLength))];
}

export interface DecodedFrame {
  /** the decoded msgpack header, not yet validated */
  header: unknown;
  /** the payload bytes (a view into the message, no copy) */
  payload: Uint8Array;
}

/** Split a frame into header and payload; throws FrameError on anything malformed. */
export function decodeFrame(data: Uint8Array): DecodedFrame {
  if (data.byteLength < 5) throw new FrameError(`frame of ${data.byteLength} bytes is too short`);
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const h = view.getUint32(0, true);
  if (h === 0 || h > MAX_HEADER_BYTES) throw new FrameError(`header length ${h} is out of range`);
  const start = payloadOffset(h);
  if (4 + h > data.byteLength || start > data.byteLength)
    throw new FrameError(`header length ${h} exceeds the ${data.byteLength}-byte frame`);
  let header: unknown;
  try {
    header = unpackr.unpack(data.subarray(4, 4 + h));
  } catch (e) {
    throw new FrameError(`header is not valid msgpack (${(e as Error).message})`);
  }
  return { header, payload: data.subarray(start) };
}

/** The payload as Float32 values: a view when aligned, otherwise one copy. */
export function payloadAsFloat32(payload: Uint8Array): Float32Array {
  if (payload.byteLength % 4 !== 0)
    throw new FrameError(`payload of ${payload.byteLength} bytes is not a whole number of float32 values`);
  if (payload.byteOffset % 4 === 0)
    return new Float32Array(payload.buffer, payload.byteOffset, payload.byteLength / 4);
  const out = new Float32Array(payload.byteLength / 4);
  new Uint8Array(out.buffer).set(payload);
  return out;
}
