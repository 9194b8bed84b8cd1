/**
 * The reply list of one producer pool: hosts RPUSH each job's outcome onto it, and this reader pops
 * them on a connection of its own (a blocking BLPOP, then up to REPLY_BATCH more without blocking).
 * A list, unlike pub/sub or QueueEvents, keeps what arrives while this process is busy or briefly
 * away, for as long as it takes.
 */
import { decodeReply, type Reply } from './codec.js';
import type { Redis } from './load.js';

const REPLY_BATCH = 256;
/** Seconds a BLPOP waits before it looks again whether the reader was stopped. */
const BLOCK_S = 1;

export class ReplyReader {
  private stopped = false;
  private loop: Promise<void> | undefined;

  constructor(
    private readonly redis: Redis,
    private readonly key: string,
    private readonly onReply: (reply: Reply) => void,
  ) {
    redis.on('error', () => {});
  }

  async start(connectTimeout: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.redis.connect(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${connectTimeout} ms`)), connectTimeout);
      }),
    ]).finally(() => clearTimeout(timer));
    this.loop = this.run();
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      try {
        const first = await this.redis.blpopBuffer(this.key, BLOCK_S);
        if (!first || this.stopped) continue;
        this.deliver(first[1]);
        const more = (await this.redis.lpopBuffer(this.key, REPLY_BATCH)) as unknown as Buffer[] | null;
        if (more) for (const bytes of more) this.deliver(bytes);
      } catch {
        if (this.stopped) break;
        // The connection dropped; ioredis reconnects and the loop goes on.
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  private deliver(bytes: Buffer): void {
    let reply: Reply;
    try {
      reply = decodeReply(bytes);
    } catch {
      return; // not ours: a reply list holds only what hosts pushed
    }
    this.onReply(reply);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.redis.disconnect();
    await this.loop?.catch(() => {});
  }
}
