// @atlasvae/shared: light modules every role uses (no TensorFlow.js, no Arrow: those are
// ./backend, ./model and ./arrow).
export * from './config.js';
export * from './batch.js';
export * from './rng.js';
export * from './plan.js';
export * from './errors.js';
export * from './log.js';
export * from './manifest.js';
export * from './checkpoint.js';
