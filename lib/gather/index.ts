// The gather part: Gatherer (the scatter-gather writer) and SocketWriter (a
// socket's batching writer built on it).
export { Gatherer } from './gatherer';
export type { GathererOptions, NulStringEncoding } from './gatherer';
export { SocketWriter } from './socket-writer';
export type { Releasable, SocketWriterOptions, SocketWriterStats } from './socket-writer';
