// Frame: what a FrameAssembler hands out (a handle on a pooled Buffer of
// exactly one payload), and the errors the receive path reports.
import { IobufError } from '../errors';
import { SharedBuffer } from '../pool/shared-buffer';
import type { SharedReturn } from '../pool/shared-buffer';

/**
 * A completed frame: a handle on a pooled Buffer of exactly the payload
 * (`data`), with the `tag` its decoder gave (0 for the built-in prefixes).
 * release() (or the end of a `using` scope) gives this handle up, and a second
 * call does nothing; retain() makes another handle (a Frame with the same data
 * and tag) to be released on its own. The memory goes back to the pool when
 * every handle has been released. A zero-length frame's data is an empty
 * Buffer that is not pooled.
 */
export class Frame extends SharedBuffer {
  /** What the decoder returned as `tag` for this frame's header; 0 for the built-in prefixes. */
  readonly tag: number;

  /** @internal Frames are made by a FrameAssembler. */
  constructor(data: Buffer, tag: number, returnTo: SharedReturn | null, size = data.length) {
    super(data, returnTo, size);
    this.tag = tag;
  }

  protected newHandle(): Frame {
    return new Frame(this.data, this.tag, this.returnTo, this.size);
  }
}

export function frameError(code: string, message: string, details: Record<string, unknown> = {}): IobufError {
  return Object.assign(new IobufError(message, code), details);
}

/** What a decoder threw, for a message (whatever it threw: reading it must not throw again). */
export function messageOf(thrown: unknown): string {
  try {
    return String((thrown as Error | null | undefined)?.message ?? thrown);
  } catch {
    return 'a value that cannot be shown';
  }
}
