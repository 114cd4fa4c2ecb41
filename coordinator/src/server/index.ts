// @atlasvae/coordinator/server: the coordinator server and its parts.
export * from './coordinator.js';
export * from './connections.js';
export * from './step-run.js';
export * from './optimizer.js';
export * from './events.js';
export * from './data.js';
export * from './prom-targets.js';
export { defaultBatchSizes, FLEET_GLOBAL_BATCH, FLEET_LR, SCVI_GLOBAL_BATCH, SCVI_LR } from './setup.js';
