/** What the worker entry (worker/main.ts) needs of channels: the link up, frames down, handles, flush. */
export { decodeChannels } from './handles.js';
export { bindChannels, channelDown, channelsPending, flushChannels } from './remote.js';
