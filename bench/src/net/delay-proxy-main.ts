// The delay proxy as a process, started inside the client network namespace.
//   delay-proxy-main.ts --rtt-ms 20 --forward 127.0.0.1:0=169.254.7.2:5000 [--forward ...]
// Prints {"ports":[...]} once listening. Commands on stdin, one per line, each answered with one
// JSON line: "stats", "reset". Exits when stdin closes (so it never outlives the benchmark).
import { createInterface } from 'node:readline';
import { DelayProxy, type Forward } from './delay-proxy.ts';

function parseArgs(argv: string[]): { rttMs: number; forwards: Forward[] } {
  let rttMs = 0;
  const forwards: Forward[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = argv[i + 1];
    if (a === '--rtt-ms' && v !== undefined) {
      rttMs = Number(v);
      i++;
    } else if (a === '--forward' && v !== undefined) {
      const m = /^([\d.]+):(\d+)=([\d.]+):(\d+)$/.exec(v);
      if (m === null) throw new Error(`bad --forward ${v}`);
      forwards.push({ listenHost: m[1]!, listenPort: Number(m[2]), targetHost: m[3]!, targetPort: Number(m[4]) });
      i++;
    } else {
      throw new Error(`unknown argument ${a}`);
    }
  }
  return { rttMs, forwards };
}

const { rttMs, forwards } = parseArgs(process.argv.slice(2));
const proxy = new DelayProxy({ rttMs });
const ports = await proxy.listen(forwards);
process.stdout.write(`${JSON.stringify({ ports })}\n`);
const rl = createInterface({ input: process.stdin });
rl.on('line', (line) => {
  const cmd = line.trim();
  if (cmd === 'stats') process.stdout.write(`${JSON.stringify(proxy.snapshot())}\n`);
  else if (cmd === 'reset') {
    proxy.reset();
    process.stdout.write('{"ok":true}\n');
  } else process.stdout.write(`${JSON.stringify({ error: `unknown command ${cmd}` })}\n`);
});
rl.on('close', () => {
  void proxy.close().then(() => process.exit(0));
});
