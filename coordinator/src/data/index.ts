// @atlasvae/coordinator/data: preparing, simulating and reading atlas datasets (the .h5 and
// MatrixMarket readers load on demand through openSource).
export * from './source.js';
export * from './prepare.js';
export * from './dataset.js';
export * from './simulate.js';
// (not its ObsColumn: the obs column type is obsStore's)
export { writeH5ad, H5adCellSink, type WholeH5adOptions } from './h5ad-writer.js';
export * from './mtx.js';
export * from './obs.js';
export * from './obs-store.js';
export * from './hvg.js';
export * from './loess.js';
