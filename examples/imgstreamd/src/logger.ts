import { pino, type Logger } from 'pino';

export type { Logger };

/**
 * The daemon's logger: pino, JSON lines (`--log_formatter json`) or one readable line per record
 * (`text`: time, level, component, message, then key=value pairs), on stderr.
 */
export function createLogger(options: { level: string; formatter: 'text' | 'json'; name: string }): Logger {
  if (options.formatter === 'json') return pino({ level: options.level, base: { component: options.name } }, pino.destination({ fd: 2, sync: true }));
  const out = {
    write(line: string): void {
      const rec = JSON.parse(line) as Record<string, unknown>;
      const { time, level, msg, component, pid: _pid, hostname: _h, ...rest } = rec;
      const fields = Object.entries(rest)
        .map(([k, v]) => `${k}=${typeof v === 'string' && !/\s/.test(v) ? v : JSON.stringify(v)}`)
        .join(' ');
      const label = pino.levels.labels[Number(level)] ?? String(level);
      process.stderr.write(`${new Date(Number(time)).toISOString()} ${label.toUpperCase().padEnd(5)} [${String(component)}] ${String(msg ?? '')}${fields ? ` ${fields}` : ''}\n`);
    },
  };
  return pino({ level: options.level, base: { component: options.name } }, out);
}
