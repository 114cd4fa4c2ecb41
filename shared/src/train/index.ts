// @atlasvae/shared/train: the training step, the optimizer, the one training loop and its
// in-process executor (the fleet is the coordinator's executor).
export * from './step.js';
export * from './adam.js';
export * from './optimizer-memory.js';
export * from './simd-kernels.js';
export * from './divergence.js';
export * from './early-stopping.js';
export * from './memory-source.js';
export * from './history.js';
export * from './loop.js';
export * from './in-process-executor.js';
export * from './trainer.js';
