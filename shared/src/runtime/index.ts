// @atlasvae/shared/runtime: process-wide settings every long-running command applies.
export * from './gc.js';
export * from './signals.js';
