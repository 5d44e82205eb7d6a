// The pool part: BufferPool and what comes with it, for lib/index.ts and the
// other parts (which import './pool').
export { BufferPool } from './pool';
export type { Lease } from './pool';
export type { CloseOptions } from './closing';
export type { PoolStats, SizeClassStats } from './shared';
export { SharedBuffer } from './shared-buffer';
export type { SharedReturn } from './shared-buffer';
export { classLayout } from './size-classes';
export type { BufferPoolHandle, BufferPoolOptions, LeakDetection, LeakReport, PageGeometry } from './size-classes';
export type { AcquireOptions } from './waiting';
