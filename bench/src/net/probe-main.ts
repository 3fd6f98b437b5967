// Network probe, two roles (each started in its own namespace):
//   probe-main.ts serve HOST PORT         answers "ping\n" with "pong\n" and "get N\n" with N bytes
//   probe-main.ts measure HOST PORT BYTES  prints {"connectMs","firstExchangeMs","rttMs","downloadBytes","downloadMs"}
import { connect, createServer, type Socket } from 'node:net';

const [role, host, portText, bytesText] = process.argv.slice(2);
const port = Number(portText);

if (role === 'serve') {
  const block = Buffer.alloc(256 * 1024, 0x5a);
  const server = createServer({ noDelay: true }, (sock) => {
    let buf = '';
    sock.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line === 'ping') sock.write('pong\n');
        else if (line.startsWith('get ')) void send(sock, Number(line.slice(4)));
      }
    });
    sock.on('error', () => sock.destroy());
  });
  async function send(sock: Socket, total: number): Promise<void> {
    let left = total;
    while (left > 0 && !sock.destroyed) {
      const n = Math.min(left, block.length);
      left -= n;
      if (!sock.write(n === block.length ? block : block.subarray(0, n))) await new Promise((r) => sock.once('drain', r));
    }
  }
  server.listen(port, host, () => process.stdout.write('{"listening":true}\n'));
  process.stdin.resume();
  process.stdin.on('end', () => process.exit(0));
} else if (role === 'measure') {
  const total = Number(bytesText);
  // a throw-away connection first, so the measured one does not pay for JIT warm-up on either side
  await new Promise<void>((resolve, reject) => {
    const warm = connect({ host: host!, port, noDelay: true }, () => warm.write('ping\n'));
    warm.once('data', () => {
      warm.destroy();
      resolve();
    });
    warm.once('error', reject);
  });
  const t0 = performance.now();
  const sock = connect({ host: host!, port, noDelay: true });
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', reject);
  });
  const connectMs = performance.now() - t0;
  let pending: ((s: string) => void) | null = null;
  let text = '';
  let bulkLeft = 0;
  let bulkDone: (() => void) | null = null;
  sock.on('data', (d: Buffer) => {
    if (bulkLeft > 0) {
      bulkLeft -= d.length;
      if (bulkLeft <= 0 && bulkDone) bulkDone();
      return;
    }
    text += d.toString('latin1');
    const nl = text.indexOf('\n');
    if (nl >= 0 && pending) {
      const line = text.slice(0, nl);
      text = text.slice(nl + 1);
      const p = pending;
      pending = null;
      p(line);
    }
  });
  const ask = (line: string): Promise<string> =>
    new Promise((resolve) => {
      pending = resolve;
      sock.write(`${line}\n`);
    });
  await ask('ping');
  const firstExchangeMs = performance.now() - t0;
  const rtts: number[] = [];
  for (let i = 0; i < 15; i++) {
    const s = performance.now();
    await ask('ping');
    rtts.push(performance.now() - s);
  }
  rtts.sort((a, b) => a - b);
  const s = performance.now();
  bulkLeft = total;
  await new Promise<void>((resolve) => {
    bulkDone = resolve;
    sock.write(`get ${total}\n`);
  });
  const downloadMs = performance.now() - s;
  sock.destroy();
  process.stdout.write(`${JSON.stringify({ connectMs, firstExchangeMs, rttMs: rtts[Math.floor(rtts.length / 2)], downloadBytes: total, downloadMs })}\n`);
  process.exit(0);
} else {
  throw new Error('usage: probe-main.ts serve|measure HOST PORT [BYTES]');
}
