// @atlasvae/shared/metrics: Prometheus pieces both roles use.
export * from './families.js';
export * from './throughput.js';
export * from './server.js';
