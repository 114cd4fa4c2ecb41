// @atlasvae/shared/transport: ways parameters and results travel besides the socket.
export * from './shared-memory.js';
