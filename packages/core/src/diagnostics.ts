import diagnosticsChannel from 'node:diagnostics_channel';
import { debuglog } from 'node:util';

/**
 * Packages never print. They publish on `node:diagnostics_channel` channels named
 * `imgstream:<package>:<event>`; with `NODE_DEBUG=imgstream` a debug log subscribes to them.
 */
export function channel(name: string): diagnosticsChannel.Channel {
  return diagnosticsChannel.channel(`imgstream:${name}`);
}

const debug = debuglog('imgstream');
const debugEnabled = debuglog('imgstream').enabled;
const subscribed = new Set<string>();

/** Publishes `message` on the channel when anyone listens; cheap otherwise. */
export function publish(ch: diagnosticsChannel.Channel, message: object): void {
  if (debugEnabled && !subscribed.has(ch.name as string)) {
    subscribed.add(ch.name as string);
    ch.subscribe((msg, name) => debug('%s %s %j', new Date().toISOString(), String(name), msg));
    // the first message reaches the new subscriber below
  }
  if (ch.hasSubscribers) ch.publish(message);
}
