// @atlasvae/worker: the worker's connection, engines and metrics (the device engine is
// ./device, loaded only when chosen; the command is ./commands).
export * from './client.js';
export * from './engine.js';
export * from './engine-choice.js';
export * from './model-engine.js';
export * from './metrics.js';
