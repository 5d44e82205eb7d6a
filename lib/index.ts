export {
  allocAligned, allocHuge, addressOf, isAligned, pageKind, free,
  pageSize, hugePageSize, cacheLineSize, maxAllocationSize,
} from './memory';
export type { AllocAlignedOptions, AllocHugeOptions, HugePageFallback, PageKind } from './memory';
export { IobufError } from './errors';
export type { IobufErrorCode } from './errors';
export { BufferPool } from './pool';
export type {
  BufferPoolOptions, BufferPoolHandle, AcquireOptions, CloseOptions, Lease, LeakDetection,
  LeakReport, PoolStats, SizeClassStats,
} from './pool';
