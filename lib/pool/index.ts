// The pool part: BufferPool and what comes with it, for lib/index.ts and the
// other parts (which import './pool').
export { BufferPool, classLayout } from './pool';
export type {
  AcquireOptions, BufferPoolHandle, BufferPoolOptions, CloseOptions, Lease, LeakDetection, LeakReport,
  PageGeometry, PoolStats, SizeClassStats,
} from './pool';
export { SharedBuffer } from './shared-buffer';
export type { SharedReturn } from './shared-buffer';
