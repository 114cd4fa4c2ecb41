// @atlasvae/shared/protocol: the wire protocol between coordinator and workers.
export * from './frame.js';
export * from './messages.js';
export * from './message-validation.js';
export * from './auth.js';
export * from './token-file.js';
