// Lending: who may touch memory when.
//
// Memory handed to the kernel or to libuv — a pending promise readv/writev, a
// socket's read buffer, a socket write that libuv has queued — is *lent*.
// Until the borrower repays the loan:
// - release() of a lent pooled Buffer ends the caller's ownership at once
//   (its counts drop) but the slot is reused only after the loan is repaid;
// - free() of a lent allocation takes effect when the loan is repaid;
// - a pool's close (forced or not), trim or oversize return keeps a slab with
//   lent memory mapped (and its views attached) until the last loan is repaid;
// - the native side pins the allocation too (native/memory.cc, Pins): its
//   pages stay mapped whatever JS does meanwhile (a transfer of the
//   ArrayBuffer, a terminated worker), so the kernel never touches memory
//   that was unmapped or handed to someone else.
// A lender that closes tells its borrowers to stop (stopBorrowing): a frame
// receiver stops reading into pooled memory, a socket write not yet handed to
// libuv fails with ERR_IOBUF_POOL_CLOSED. It then waits for what the kernel
// still holds.
//
// This module is the meeting point and imports nothing of the parts: the
// lenders (lib/pooled.ts for the pool, memory.ts) register how to find the lender of a view,
// the borrowers (lib/iovec/, lib/uring/, lib/gather/, lib/frames/) call lend().

/** Something that borrows memory and can be told to stop because its lender is closing. */
export interface Borrower {
  stopBorrowing(reason: Error): void;
}

/** One loan of one view's memory. Repaid exactly once, by the borrower. */
export interface Loan {
  repay(): void;
}

/** Finds the lender of `view` and lends; null when `view` is not that lender's memory. */
export type LenderLookup = (view: ArrayBufferView, borrower: Borrower | null) => Loan | null;

const lookups: LenderLookup[] = [];

/** For lenders, at module load. */
export function registerLender(lookup: LenderLookup): void {
  lookups.push(lookup);
}

/** The loan of memory nobody in iobuf lends (V8 heap memory: Node keeps it alive). */
export const UNLENT: Loan = { repay() {} };

/**
 * Lends the memory behind `view` to a borrower until the returned loan is
 * repaid. `borrower` (when given) is told to stop if the lender closes first.
 */
export function lend(view: ArrayBufferView, borrower: Borrower | null = null): Loan {
  for (let i = 0; i < lookups.length; i++) {
    const loan = lookups[i](view, borrower);
    if (loan !== null) return loan;
  }
  return UNLENT;
}

/** Repays every loan in `loans` and empties the array. */
export function repayAll(loans: Loan[]): void {
  while (loans.length > 0) loans.pop()!.repay();
}
