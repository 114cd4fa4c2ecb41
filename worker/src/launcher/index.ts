// @atlasvae/worker/launcher: child-process supervision and the per-GPU node launcher.
export * from './supervisor.js';
export * from './devices.js';
export * from './node-launcher.js';
