import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode, ImgstreamError } from '../errors.js';
import type { RegistryMirror } from './client.js';

/** What a containerd `hosts.toml` says about one registry. */
export interface HostsConfig {
  /** `server = "…"`: the upstream's URL, if set. */
  server: string | undefined;
  /** `[host."…"]` entries, in file order: the mirrors to try before the upstream. */
  mirrors: RegistryMirror[];
}

type TomlValue = string | boolean | string[];

function invalid(file: string, line: number, why: string): ImgstreamError {
  return new ImgstreamError(ErrorCode.INVALID_OPTION, `${file}:${line}: ${why}`, { option: 'hosts.toml', path: file });
}

function parseValue(text: string, file: string, line: number): TomlValue {
  const t = text.trim();
  if (t === 'true' || t === 'false') return t === 'true';
  const str = /^"((?:[^"\\]|\\.)*)"$/.exec(t) ?? /^'([^']*)'$/.exec(t);
  if (str) return (str[1] as string).replace(/\\(.)/g, '$1');
  if (t.startsWith('[') && t.endsWith(']')) {
    const inner = t.slice(1, -1).trim();
    if (inner === '') return [];
    return inner.split(',').map((s) => s.trim()).filter((s) => s !== '').map((s) => {
      const v = parseValue(s, file, line);
      if (typeof v !== 'string') throw invalid(file, line, 'arrays must hold strings');
      return v;
    });
  }
  throw invalid(file, line, `unsupported value ${JSON.stringify(t.slice(0, 60))}`);
}

function stripComment(line: string): string {
  let quote: string | undefined;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i];
    if (quote !== undefined) {
      if (ch === '\\' && quote === '"') i++;
      else if (ch === quote) quote = undefined;
    } else if (ch === '"' || ch === "'") quote = ch;
    else if (ch === '#') return line.slice(0, i);
  }
  return line;
}

/**
 * Parses the subset of containerd's `hosts.toml` imgstream uses: `server`, and `[host."URL"]`
 * tables with `capabilities` and `override_path` (other keys, e.g. `ca`, `skip_verify`,
 * `[host."URL".header]`, are accepted and ignored). Throws IMGSTREAM_INVALID_OPTION naming the line.
 */
export function parseHostsToml(text: string, file = 'hosts.toml'): HostsConfig {
  const config: HostsConfig = { server: undefined, mirrors: [] };
  let current: RegistryMirror | undefined;
  let ignoredTable = false;
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = stripComment(lines[i] as string).trim();
    if (line === '') continue;
    const table = /^\[\s*host\.(?:"([^"]+)"|'([^']+)')\s*(\.\s*[A-Za-z_]+\s*)?\]$/.exec(line);
    if (table) {
      const url = (table[1] ?? table[2]) as string;
      if (table[3] !== undefined) {
        ignoredTable = true;
        continue;
      }
      try {
        const u = new URL(url);
        if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('scheme');
      } catch {
        throw invalid(file, i + 1, `host ${JSON.stringify(url)} is not an http(s) URL`);
      }
      current = { url };
      config.mirrors.push(current);
      ignoredTable = false;
      continue;
    }
    if (line.startsWith('[')) throw invalid(file, i + 1, `unsupported table ${line}`);
    const eq = line.indexOf('=');
    if (eq <= 0) throw invalid(file, i + 1, 'expected key = value');
    const key = line.slice(0, eq).trim().replace(/^"(.*)"$/, '$1');
    const value = parseValue(line.slice(eq + 1), file, i + 1);
    if (ignoredTable) continue;
    if (current === undefined) {
      if (key === 'server') {
        if (typeof value !== 'string') throw invalid(file, i + 1, 'server must be a string');
        config.server = value;
      }
      continue;
    }
    if (key === 'capabilities') {
      if (!Array.isArray(value) || value.some((v) => v !== 'pull' && v !== 'resolve' && v !== 'push')) {
        throw invalid(file, i + 1, 'capabilities must be an array of "pull", "resolve", "push"');
      }
      current.capabilities = value as ('pull' | 'resolve' | 'push')[];
    } else if (key === 'override_path') {
      if (typeof value !== 'boolean') throw invalid(file, i + 1, 'override_path must be true or false');
      current.overridePath = value;
    }
  }
  return config;
}

/**
 * Reads a containerd `certs.d`-style directory (`<dir>/<registry host>/hosts.toml`) into the
 * `mirrors` option of RegistryClient. Directories without a hosts.toml are skipped.
 */
export async function loadHostsDir(dir: string): Promise<Record<string, RegistryMirror[]>> {
  const out: Record<string, RegistryMirror[]> = {};
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    if (!entry.isDirectory()) continue;
    const file = join(dir, entry.name, 'hosts.toml');
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw err;
    }
    // containerd names directories host_port where the host has a port on some platforms; accept both
    const registry = entry.name.replace(/_(\d+)$/, ':$1');
    const mirrors = parseHostsToml(text, file).mirrors;
    if (mirrors.length > 0) out[registry] = mirrors;
  }
  return out;
}
