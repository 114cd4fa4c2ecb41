// Validation of the coordinator ⇄ worker messages declared in ./messages.ts: each header is checked
// against its type's schema, then against the payload size and the model's sizes, before anything
// reads it. A message that fails throws ProtocolError with a short reason safe to log and send.

import {
  MAX_GROUP,
  MAX_RESULT_FILES,
  inferArrowOffset,
  type BuffersMsg,
  type CoordinatorMessage,
  type FailureMsg,
  type HelloMsg,
  type InferMsg,
  type InferResultMsg,
  type ParamsMsg,
  type ResultFilesMsg,
  type ResultMsg,
  type WelcomeMsg,
  type WorkMsg,
  type WorkerMessage,
} from './messages.js';

/** A message that failed validation; `reason` is short and safe to log and to send as a close reason. */
export class ProtocolError extends Error {
  constructor(readonly reason: string) {
    super(reason);
    this.name = 'ProtocolError';
  }
}

type Kind = 'int' | 'num' | 'str' | 'obj';
type Schema = Record<string, Kind>;

const SCHEMAS: Record<string, Schema> = {
  hello: { protocol: 'int', backend: 'str', name: 'str', pid: 'int' },
  result: {
    version: 'int',
    step: 'int',
    microbatch: 'int',
    nCells: 'int',
    reconstructionSum: 'num',
    klSum: 'num',
    lossSum: 'num',
    computeMs: 'num',
    gradLength: 'int',
    bnLength: 'int',
  },
  failure: { version: 'int', step: 'int', microbatch: 'int', message: 'str' },
  welcome: {
    protocol: 'int',
    workerId: 'int',
    modelConfig: 'obj',
    seed: 'int',
    paramLength: 'int',
    bnLength: 'int',
    maxWorkBytes: 'int',
  },
  params: { version: 'int' },
  work: { version: 'int', step: 'int', epoch: 'int', microbatch: 'int', nCells: 'int', klWeight: 'num' },
  done: { reason: 'str' },
  buffers: { version: 'int' },
  infer: {
    id: 'int',
    op: 'str',
    nCells: 'int',
    seed: 'int',
    chunk: 'int',
    noiseEpoch: 'num',
    samples: 'int',
    transformBatch: 'num',
    genesLength: 'int',
  },
  inferResult: { id: 'int', nCells: 'int', f64Length: 'int', f32Length: 'int', computeMs: 'num' },
  inferFailure: { id: 'int', message: 'str' },
  paramsFilesReady: {},
  resultFiles: { runId: 'str' },
};

const WORKER_TYPES = new Set([
  'hello',
  'result',
  'failure',
  'inferResult',
  'inferFailure',
  'paramsFilesReady',
]);
const COORDINATOR_TYPES = new Set(['welcome', 'params', 'work', 'done', 'buffers', 'infer', 'resultFiles']);
const MAX_STRING = 1024;
/** the result fields a `nonFinite` result may carry as NaN or ±Infinity */
const LOSS_SUMS = new Set(['reconstructionSum', 'klSum', 'lossSum']);

function checkFields(h: Header, schema: Schema): void {
  for (const [k, kind] of Object.entries(schema)) {
    const v = h[k];
    switch (kind) {
      case 'int':
        if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0)
          throw new ProtocolError(`${h.type}.${k} must be a non-negative integer`);
        break;
      case 'num':
        if (typeof v !== 'number' || !Number.isFinite(v)) {
          // a result flagged nonFinite reports a diverged loss: its sums may be NaN or ±Infinity
          if (!(
            typeof v === 'number' &&
            (h.type === 'result' || h.type === 'result.microbatches') &&
            h.nonFinite === true &&
            LOSS_SUMS.has(k)
          ))
            throw new ProtocolError(`${h.type}.${k} must be a finite number`);
        }
        break;
      case 'str':
        if (typeof v !== 'string' || v.length > MAX_STRING)
          throw new ProtocolError(`${h.type}.${k} must be a string of at most ${MAX_STRING} characters`);
        break;
      case 'obj':
        if (v === null || typeof v !== 'object' || Array.isArray(v))
          throw new ProtocolError(`${h.type}.${k} must be an object`);
        break;
    }
  }
}

/** A header whose type was checked: the one field every message has. */
type Header = Record<string, unknown> & { type: string };

function checkShape(header: unknown, allowed: Set<string>): Header {
  if (header === null || typeof header !== 'object' || Array.isArray(header))
    throw new ProtocolError('header is not a map');
  const h = header as Record<string, unknown>;
  const schema = typeof h.type === 'string' && allowed.has(h.type) ? SCHEMAS[h.type] : undefined;
  if (!schema) throw new ProtocolError(`unknown message type ${JSON.stringify(String(h.type)).slice(0, 40)}`);
  checkFields(h as Header, schema);
  return h as Header;
}

function checkGroupCount(type: string, v: unknown): number {
  if (v === undefined) return 1;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > MAX_GROUP)
    throw new ProtocolError(`${type}.count must be an integer 1–${MAX_GROUP}`);
  return v;
}

function checkIntList(type: string, name: string, v: unknown, length: number, min: number): number[] {
  if (
    !Array.isArray(v) ||
    v.length !== length ||
    !v.every((x) => typeof x === 'number' && Number.isSafeInteger(x) && x >= min)
  ) {
    throw new ProtocolError(`${type}.${name} must be ${length} integers ≥ ${min}`);
  }
  return v as number[];
}

/** The group of a result message: `microbatches` must list `count` terms summing to the totals' cell count. */
function checkResultGroup(r: ResultMsg): number {
  const count = checkGroupCount('result', r.count);
  if (r.count === undefined && r.microbatches === undefined) return 1;
  const m = r.microbatches;
  if (!Array.isArray(m) || m.length !== count)
    throw new ProtocolError(`result.microbatches must list ${count} microbatches`);
  let cells = 0;
  for (const t of m) {
    if (t === null || typeof t !== 'object')
      throw new ProtocolError('result.microbatches entries must be maps');
    checkFields(
      { ...(t as unknown as Record<string, unknown>), type: 'result.microbatches', nonFinite: r.nonFinite },
      { nCells: 'int', reconstructionSum: 'num', klSum: 'num', lossSum: 'num' },
    );
    if (t.nCells === 0) throw new ProtocolError('result.microbatches nCells must be positive');
    cells += t.nCells;
  }
  if (cells !== r.nCells)
    throw new ProtocolError(`result.microbatches hold ${cells} cells, result.nCells says ${r.nCells}`);
  return count;
}

/** Sizes a worker's messages must match: derived from the model being trained. */
export interface ExpectedSizes {
  paramLength: number;
  bnLength: number;
}

/** Validate a worker → coordinator message (header and payload size). */
export function parseWorkerMessage(
  header: unknown,
  payloadBytes: number,
  sizes: ExpectedSizes,
): WorkerMessage {
  const h = checkShape(header, WORKER_TYPES);
  switch (h.type) {
    case 'result': {
      const r = h as unknown as ResultMsg;
      if (r.gradLength !== sizes.paramLength)
        throw new ProtocolError(
          `result.gradLength ${r.gradLength} != model parameter count ${sizes.paramLength}`,
        );
      if (r.bnLength !== sizes.bnLength)
        throw new ProtocolError(
          `result.bnLength ${r.bnLength} != model BatchNorm statistics count ${sizes.bnLength}`,
        );
      if (r.nCells === 0) throw new ProtocolError('result.nCells must be positive');
      if (r.nonFinite !== undefined && r.nonFinite !== true)
        throw new ProtocolError('result.nonFinite must be true when present');
      const count = checkResultGroup(r);
      if (r.file !== undefined || r.seq !== undefined) {
        if (count > 1) throw new ProtocolError('a group result cannot name a result file');
        if (!Number.isInteger(r.file) || r.file! < 0 || r.file! >= MAX_RESULT_FILES)
          throw new ProtocolError(`result.file must be an integer 0–${MAX_RESULT_FILES - 1}`);
        if (!Number.isSafeInteger(r.seq) || r.seq! < 1)
          throw new ProtocolError('result.seq must be a positive integer');
        if (payloadBytes !== 0) throw new ProtocolError('result from a file carries an unexpected payload');
        return r;
      }
      const want = 4 * (r.gradLength + count * r.bnLength);
      if (payloadBytes !== want)
        throw new ProtocolError(`result payload is ${payloadBytes} bytes, expected ${want}`);
      return r;
    }
    case 'hello': {
      const m = h as unknown as HelloMsg;
      checkGroupCount('hello', m.group);
      if (h.metrics !== undefined && (typeof h.metrics !== 'string' || !METRICS_ADDRESS.test(h.metrics)))
        throw new ProtocolError('hello.metrics must be "HOST:PORT"');
      for (const k of ['engine', 'device'] as const) {
        if (m[k] !== undefined && (typeof m[k] !== 'string' || m[k].length > MAX_STRING))
          throw new ProtocolError(`hello.${k} must be a string of at most ${MAX_STRING} characters`);
      }
      if (payloadBytes !== 0) throw new ProtocolError('hello carries an unexpected payload');
      return m;
    }
    case 'failure':
      checkGroupCount('failure', h.count);
      if (payloadBytes !== 0) throw new ProtocolError('failure carries an unexpected payload');
      return h as unknown as FailureMsg;
    case 'inferResult': {
      const r = h as unknown as InferResultMsg;
      const want = 8 * r.f64Length + 4 * r.f32Length;
      if (payloadBytes !== want)
        throw new ProtocolError(`inferResult payload is ${payloadBytes} bytes, expected ${want}`);
      return r;
    }
    default:
      if (payloadBytes !== 0)
        throw new ProtocolError(`${h.type} carries an unexpected ${payloadBytes}-byte payload`);
      return h as unknown as WorkerMessage;
  }
}

/** a host name, IPv4 or [IPv6] address (or nothing), a colon, a port */
const METRICS_ADDRESS = /^(?:[A-Za-z0-9._-]{0,253}|\[[0-9A-Fa-f:.]{2,45}\]):(?:[1-9]\d{0,4})$/;

/** Validate a coordinator → worker message. `sizes` is null before the welcome. */
export function parseCoordinatorMessage(
  header: unknown,
  payloadBytes: number,
  sizes: ExpectedSizes | null,
): CoordinatorMessage {
  const h = checkShape(header, COORDINATOR_TYPES);
  switch (h.type) {
    case 'welcome': {
      if (payloadBytes !== 0) throw new ProtocolError('welcome carries an unexpected payload');
      const f = h.paramsFiles as { paths?: unknown; runId?: unknown } | undefined;
      if (f !== undefined) {
        const okPaths =
          Array.isArray(f?.paths) &&
          f.paths.length === 2 &&
          f.paths.every((p) => typeof p === 'string' && p.length > 0 && p.length <= MAX_STRING);
        if (!okPaths || typeof f.runId !== 'string' || !/^[0-9a-f]{32}$/.test(f.runId))
          throw new ProtocolError('welcome.paramsFiles must be {paths: [2 strings], runId: 32 hex digits}');
      }
      return h as unknown as WelcomeMsg;
    }
    case 'params':
      if (!sizes) throw new ProtocolError('params before welcome');
      if (h.file !== undefined) {
        if (h.file !== 0 && h.file !== 1) throw new ProtocolError('params.file must be 0 or 1');
        if (payloadBytes !== 0) throw new ProtocolError('params from a file carries an unexpected payload');
        return h as unknown as ParamsMsg;
      }
      if (payloadBytes !== 4 * sizes.paramLength)
        throw new ProtocolError(`params payload is ${payloadBytes} bytes, expected ${4 * sizes.paramLength}`);
      return h as unknown as ParamsMsg;
    case 'work':
      if (!sizes) throw new ProtocolError('work before welcome');
      if (payloadBytes === 0) throw new ProtocolError('work without a microbatch payload');
      if (h.count !== undefined) {
        const m = h as unknown as WorkMsg;
        const count = checkGroupCount('work', m.count);
        const cells = checkIntList('work', 'cellCounts', m.cellCounts, count, 1);
        const bytes = checkIntList('work', 'arrowBytes', m.arrowBytes, count, 1);
        if (cells.reduce((a, b) => a + b, 0) !== m.nCells)
          throw new ProtocolError('work.cellCounts do not sum to work.nCells');
        if (bytes.reduce((a, b) => a + b, 0) !== payloadBytes)
          throw new ProtocolError(`work.arrowBytes do not sum to the ${payloadBytes}-byte payload`);
      }
      return h as unknown as WorkMsg;
    case 'resultFiles': {
      if (!sizes) throw new ProtocolError('resultFiles before welcome');
      const m = h as unknown as ResultFilesMsg;
      const ok =
        Array.isArray(m.paths) &&
        m.paths.length >= 1 &&
        m.paths.length <= MAX_RESULT_FILES &&
        m.paths.every((p) => typeof p === 'string' && p.length > 0 && p.length <= MAX_STRING);
      if (!ok || !/^[0-9a-f]{32}$/.test(m.runId))
        throw new ProtocolError(
          `resultFiles must be {paths: 1–${MAX_RESULT_FILES} strings, runId: 32 hex digits}`,
        );
      if (payloadBytes !== 0) throw new ProtocolError('resultFiles carries an unexpected payload');
      return m;
    }
    case 'buffers':
      if (!sizes) throw new ProtocolError('buffers before welcome');
      if (payloadBytes !== 4 * sizes.bnLength)
        throw new ProtocolError(`buffers payload is ${payloadBytes} bytes, expected ${4 * sizes.bnLength}`);
      return h as unknown as BuffersMsg;
    case 'infer': {
      if (!sizes) throw new ProtocolError('infer before welcome');
      const m = h as unknown as InferMsg;
      if (!Number.isInteger(m.noiseEpoch) || m.noiseEpoch < -1)
        throw new ProtocolError('infer.noiseEpoch must be an integer ≥ −1');
      if (!Number.isInteger(m.transformBatch) || m.transformBatch < -1)
        throw new ProtocolError('infer.transformBatch must be an integer ≥ −1');
      if (m.nCells === 0) throw new ProtocolError('infer.nCells must be positive');
      if (payloadBytes <= inferArrowOffset(m.genesLength))
        throw new ProtocolError('infer payload holds no cells');
      return m;
    }
    default:
      if (payloadBytes !== 0) throw new ProtocolError(`${h.type} carries an unexpected payload`);
      return h as unknown as CoordinatorMessage;
  }
}
