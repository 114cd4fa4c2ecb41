// @atlasvae/shared/model: the scVI model, its math and inference as pure functions.
export * from './types.js';
export * from './layout.js';
export * from './vae.js';
export * from './likelihood.js';
export * from './special.js';
export * from './lgamma.js';
export * from './linalg.js';
export * from './batchnorm.js';
export * from './noise.js';
export * from './inference.js';
