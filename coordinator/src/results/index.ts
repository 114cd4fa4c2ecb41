// @atlasvae/coordinator/results: embed, normalize, evaluate and UMAP over a trained model.
export * from './inputs.js';
export * from './engine.js';
export * from './embed.js';
export * from './normalize.js';
export * from './evaluate.js';
export * from './table-writer.js';
export * from './h5ad-obsm.js';
export * from './embedding-file.js';
export * from './knn.js';
export * from './kdtree.js';
export * from './latent-metrics.js';
export * from './umap.js';
export * from './scatter-png.js';
export * from './palette.js';
export * from './font5x7.js';
