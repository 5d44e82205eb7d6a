// Stand-ins for frame features the library is gaining: the decoder's `tag`
// carried on each frame (frame.tag), frame.retain() (another handle on the
// same pooled bytes, each released once) and gatherer.putShared(handle) (the
// gatherer takes a handle over and releases it after the write). The broker
// calls only the functions here (tagOf, retain, release, putShared); once the
// library has them, each becomes the one-line call it names and this file
// goes away.
import type { Frame, Gatherer, LengthDecoder, SocketWriter } from '../../lib/index';
import type { FixedHeader } from './protocol';

/**
 * A length decoder that remembers the tag of the header it decoded last.
 * `tagOf(frame)` relies on onFrame running for a frame before the decoder is
 * called for the next header (true of FrameAssembler's onFrame mode); the
 * library's frame.tag does not.
 */
export function taggingDecoder(decode: (bytes: Buffer) => FixedHeader | null): { decoder: LengthDecoder; tagOf(frame: Frame): number } {
  let lastTag = 0;
  return {
    decoder: (bytes) => {
      const header = decode(bytes);
      if (header !== null) lastTag = header.tag;
      return header;
    },
    tagOf: () => lastTag,
  };
}

/** A handle on a frame's bytes: what frame.retain() returns. */
export interface SharedFrame {
  readonly data: Buffer;
  release(): void;
}

interface Count {
  frame: Frame;
  handles: number;
}

// A plain Frame has no count of its own: the handles of a frame share one here
// (the frame object itself counts as one handle), dropped when the last goes.
const counts = new WeakMap<Frame, Count>();

class Handle implements SharedFrame {
  private released = false;
  constructor(private readonly count: Count, readonly data: Buffer) {}

  release(): void {
    if (this.released) return;
    this.released = true;
    drop(this.count);
  }
}

function drop(count: Count): void {
  if (--count.handles > 0) return;
  counts.delete(count.frame);
  count.frame.release();
}

/** frame.retain(): one more handle on the frame's bytes. */
export function retain(frame: Frame): SharedFrame {
  let count = counts.get(frame);
  if (count === undefined) counts.set(frame, count = { frame, handles: 1 });
  count.handles++;
  return new Handle(count, frame.data);
}

/** frame.release() of the frame's own handle: the memory goes back when no other handle is left. */
export function release(frame: Frame): void {
  const count = counts.get(frame);
  if (count === undefined) frame.release();
  else drop(count);
}

/** gatherer.putShared(handle): the handle's bytes by reference, the handle released after the batch's write. */
export function putShared(writer: SocketWriter, out: Gatherer, handle: SharedFrame): void {
  out.putBytes(handle.data);
  writer.releaseAfterWrite(handle);
}
