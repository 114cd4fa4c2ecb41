// @atlasvae/worker/device: the device engine (TensorFlow.js ops on the backend's device).
export * from './engine.js';
export * from './device-model.js';
export * from './packing.js';
export * from './ops.js';
export * from './likelihood.js';
export * from './counters.js';
