export * from './config.js';
export * from './batch.js';
export * from './rng.js';
export * from './plan.js';
export * from './errors.js';
export * from './log.js';
