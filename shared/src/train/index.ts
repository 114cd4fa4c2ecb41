// @atlasvae/shared/train: the training step, the optimizer, the one training loop and its
// in-process executor (the fleet is the coordinator's executor).
export * from './step.js';
export * from './adam.js';
export * from './optimizerMemory.js';
export * from './simdKernels.js';
export * from './divergence.js';
export * from './earlyStopping.js';
export * from './memory-source.js';
export * from './history.js';
export * from './loop.js';
export * from './inProcessExecutor.js';
export * from './trainer.js';
