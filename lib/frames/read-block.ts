// ReadBlock: one read buffer of a FrameAssembler, and the frames handed out
// as views of it.
//
// A frame whose payload arrived whole in one socket read is not copied: its
// `data` is a view of the read buffer (like a 'data' chunk's subarray, but
// without a chunk allocated per read). While any such frame is unreleased,
// the buffer must not be read into again, so the assembler *retires* the block
// at the next read (the socket no longer reads into it: its loan is repaid)
// and reads into a fresh one. A retired block goes back to the pool when its
// last frame is released.
//
// A block whose frames were all released is read into again only when nothing
// else may still use its memory: a released frame's data can be in a pending
// write (lent to libuv, lib/lending.ts), which the pool's loan count tells for
// pooled memory; heap memory nobody lends cannot tell, and a strict pool must
// detach a released view before its memory is reused. Such a block goes back
// (detached, in a strict pool; at the loan's end, when lent) and a fresh one
// is read into.
//
// Accounting. A frame counts its payload bytes in stats().heldBytes, which
// drives backpressure (highWaterMark), whatever it is a view of. A retired
// block counts all its bytes in stats().keptReadBytes until its last frame is
// released; while those reach highWaterMark, no more views are made (small
// payloads are copied into buffers of their own). So a consumer holding a few
// small frames that each came in a read of their own never stops the reading
// (their bytes are few), and the read buffers they keep are bounded.
import type { Loan } from '../lending';
import type { SharedReturn } from '../pool/shared-buffer';

/** What a block tells its assembler. */
export interface ReadBlockOwner {
  /** A frame of `block` of `length` bytes was released (its last handle). */
  blockFrameReleased(block: ReadBlock, length: number): void;
}

export class ReadBlock implements SharedReturn {
  /** The buffer's ArrayBuffer and offset, read once: frame views are made from them (Buffer#buffer costs). */
  readonly arrayBuffer: ArrayBuffer;
  readonly byteOffset: number;
  /** Frames out as views of this buffer and not yet released, and their payload bytes. */
  frames = 0;
  frameBytes = 0;
  /** Not read into any more: the buffer goes back when the last frame is released. */
  retired = false;
  /** A frame went out as a view of it (released or not): see FrameAssembler's reusable(). */
  viewed = false;

  constructor(
    readonly buffer: Buffer,
    /** From the pool (else the heap, when the pool had none). */
    readonly pooled: boolean,
    /** The socket's loan of the buffer; repaid when the block is retired or the assembler closes. */
    readonly loan: Loan,
    private readonly owner: ReadBlockOwner,
  ) {
    this.arrayBuffer = buffer.buffer as ArrayBuffer;
    this.byteOffset = buffer.byteOffset;
  }

  /** SharedReturn: the last handle of one of this block's frames was released. */
  release(_data: Buffer, length = 0): void {
    this.frames--;
    this.frameBytes -= length;
    this.owner.blockFrameReleased(this, length);
  }
}
