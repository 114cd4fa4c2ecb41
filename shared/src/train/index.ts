// @atlasvae/shared/train: the training step, the optimizer and the single-process loop.
export * from './step.js';
export * from './adam.js';
export * from './optimizerMemory.js';
export * from './simdKernels.js';
export * from './divergence.js';
export * from './earlyStopping.js';
export * from './memory-source.js';
export * from './trainer.js';
