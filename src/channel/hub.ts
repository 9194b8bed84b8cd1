/**
 * The broker side of the side channel, one per thread: which queues of this thread workers may
 * talk to, and which worker link each frame came from. The pool's dispatcher and Process hand it
 * every `{ t: 'chan' }` frame (channelFrame) and tell it when a worker is gone (channelLinkGone).
 */
import { shmNative } from '../native/index.js';
import { internalSegment, SharedMemory } from '../shm/shared-memory.js';
import type { Broker, Link, LinkState, WorkerInfo } from './broker.js';
import { BOARD_SLOTS, BOARD_WORDS, type ChanUp } from './wire.js';

const brokers = new Map<string, Broker<unknown>>();
const links = new Map<Link, LinkState>();

/** A queue handed to a worker: from now on its frames are routed here. */
export function registerBroker(broker: Broker<unknown>): void {
  brokers.set(broker.id, broker);
}

/** Closed, drained and no worker attached: forget it (frames naming it are answered as closed). */
export function retireBroker(broker: Broker<unknown>): void {
  if (brokers.get(broker.id) === broker) brokers.delete(broker.id);
}

export function channelFrame(link: Link, frame: ChanUp): void {
  let st = links.get(link);
  if (!st) {
    st = { link, board: undefined, segment: undefined, brokers: new Set(), boardTried: false };
    links.set(link, st);
  }
  // A consumer's first request: give its worker a board first, so it counts before its first item.
  if (frame.op === 'want' && !st.boardTried) makeBoard(st);
  if (frame.op === 'unmapped') {
    dropBoard(st);
    return;
  }
  const broker = brokers.get(frame.id);
  if (broker) {
    broker.onFrame(st, frame);
    return;
  }
  // A queue closed, drained and forgotten here: answer, so the worker does not wait forever.
  const id = frame.id;
  if (frame.op === 'want') {
    link.send({
      t: 'chan',
      op: 'items',
      id,
      epoch: -1,
      items: [],
      cancel: frame.n,
      end: true,
      tok: frame.tok,
    });
  } else if (frame.op === 'credit')
    link.send({ t: 'chan', op: 'credit', id, n: 0, tok: frame.tok, closed: true });
  else if (frame.op === 'join') link.send({ t: 'chan', op: 'joined', id, tok: frame.tok });
}

const BOARD_BYTES = BOARD_SLOTS * BOARD_WORDS * 4;

function makeBoard(st: LinkState): void {
  st.boardTried = true;
  try {
    if (st.link.pid === undefined) {
      const sab = new SharedArrayBuffer(BOARD_BYTES);
      st.board = new Int32Array(sab);
      st.link.send({ t: 'chan', op: 'board', id: '', sab });
    } else if (shmNative()) {
      const shm = internalSegment(() => SharedMemory.create({ size: BOARD_BYTES }));
      st.segment = shm;
      st.board = new Int32Array(shm.buffer);
      st.link.send({ t: 'chan', op: 'board', id: '', segment: shm.name });
    }
  } catch {
    dropBoard(st);
  }
}

/** No board (none could be made, or the worker could not map it): a dead consumer's unacknowledged items are then reported as uncertain. */
function dropBoard(st: LinkState): void {
  st.segment?.close();
  st.segment = undefined;
  st.board = undefined;
}

/** The worker behind `link` exited; every message it sent has been delivered. */
export function channelLinkGone(link: Link, who: WorkerInfo): void {
  const st = links.get(link);
  if (!st) return;
  links.delete(link);
  for (const broker of st.brokers) broker.detach(st, who);
  st.segment?.close();
}
