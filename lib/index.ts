export { isNative as native, portableReason } from './binding';
export {
  allocAligned, allocHuge, addressOf, isAligned, pageKind, free,
  pageSize, hugePageSize, cacheLineSize, maxAllocationSize,
} from './memory';
export type { AllocAlignedOptions, AllocHugeOptions, HugePageFallback, PageKind } from './memory';
export { IobufError } from './errors';
export type { IobufErrorCode } from './errors';
export { BufferPool } from './pool';
export { SharedBuffer } from './shared-buffer';
export type {
  BufferPoolOptions, BufferPoolHandle, AcquireOptions, CloseOptions, Lease, LeakDetection,
  LeakReport, PoolStats, SizeClassStats,
} from './pool';
export {
  IoVecArray, IOV_MAX, IOVEC_ENTRY_BYTES, MAX_IOVEC_CAPACITY,
  readvSync, writevSync, preadvSync, pwritevSync, writevAllSync, pwritevAllSync,
  readv, writev, preadv, pwritev, writevAll, pwritevAll,
} from './iovec';
export type { IoVecWriteError } from './iovec';
export { IoRing } from './uring';
export type {
  IoRingCloseOptions, IoRingFsyncOptions, IoRingOperationOptions, IoRingOptions, IoRingStats, IoRingSupport,
} from './uring';
export { Gatherer } from './gather';
export type { GathererOptions, NulStringEncoding } from './gather';
export { SocketWriter } from './socket-writer';
export type { SocketWriterOptions, SocketWriterStats, Releasable } from './socket-writer';
export {
  FrameAssembler, Frame, MAX_HEADER_LENGTH, encodeFrame, beginFrame, endFrame,
} from './frames';
export type {
  FrameAssemblerOptions, FrameAssemblerStats, FrameHeader, LengthDecoder, LengthPrefix, EncodeFrameOptions,
} from './frames';
