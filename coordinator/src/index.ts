// @atlasvae/coordinator: the coordinator's metrics and progress reporting.
export * from './metrics.js';
export * from './progress.js';
