// @atlasvae/worker/commands: the worker role's command, registered by the `atlasvae` binary.
export * from './worker.js';
