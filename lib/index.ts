export { isNative as native, portableReason } from './binding';
export {
  allocAligned,
  allocHuge,
  addressOf,
  isAligned,
  pageKind,
  free,
  pageSize,
  hugePageSize,
  cacheLineSize,
  maxAllocationSize,
} from './memory';
export type { AllocAlignedOptions, AllocHugeOptions, HugePageFallback, PageKind } from './memory';
export { IobufError } from './errors';
export type { IobufErrorCode } from './errors';
export { BufferPool } from './pool';
export { SharedBuffer } from './pool';
export type {
  BufferPoolOptions,
  BufferPoolHandle,
  AcquireOptions,
  CloseOptions,
  Lease,
  LeakDetection,
  LeakReport,
  PoolStats,
  SizeClassStats,
} from './pool';
export { IoVecArray } from './iovec/array';
export { IOVEC_ENTRY_BYTES, MAX_IOVEC_CAPACITY } from './iovec/entries';
export {
  IOV_MAX,
  readvSync,
  writevSync,
  preadvSync,
  pwritevSync,
  writevAllSync,
  pwritevAllSync,
  readv,
  writev,
  preadv,
  pwritev,
  writevAll,
  pwritevAll,
} from './iovec/calls';
export type { IoVecWriteError } from './iovec/array';
export { IoRing } from './uring/ring';
export type {
  IoRingCloseOptions,
  IoRingFsyncOptions,
  IoRingOperationOptions,
  IoRingOptions,
  IoRingStats,
  IoRingSupport,
} from './uring/ring';
export { Gatherer } from './gather';
export type { GathererOptions, NulStringEncoding } from './gather';
export { SocketWriter } from './gather';
export type { SocketWriterOptions, SocketWriterStats, Releasable } from './gather';
export { FrameAssembler } from './frames/assembler';
export { Frame } from './frames/frame';
export { MAX_HEADER_LENGTH } from './frames/parser';
export { encodeFrame, beginFrame, endFrame } from './frames/encode';
export type { FrameAssemblerStats } from './frames/assembler';
export type { FrameAssemblerOptions, FrameHeader, LengthDecoder } from './frames/parser';
export type { EncodeFrameOptions } from './frames/encode';
export type { LengthPrefix } from './length-prefixes';
