import { homedir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import {
  DockerConfigCredentials,
  RegistryClient,
  formatPlatform,
  formatReference,
  hostPlatform,
  parsePlatform,
  parseReference,
  type ResolvedImage,
} from '@imgstream/core';

interface InspectFlags {
  plainHttp?: boolean;
  json?: boolean;
  platform?: string;
}

/** The Docker config the CLI reads credentials from (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`). */
export function dockerConfigPath(): string {
  return join(process.env.DOCKER_CONFIG ?? join(homedir(), '.docker'), 'config.json');
}

function human(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = bytes;
  let i = -1;
  do {
    v /= 1024;
    i++;
  } while (v >= 1024 && i < units.length - 1);
  return `${v.toFixed(1)} ${units[i]}`;
}

/** The JSON document `imgstream inspect --json` prints. */
export function inspectJson(img: ResolvedImage): Record<string, unknown> {
  return {
    reference: formatReference(img.reference),
    indexDigest: img.indexDigest ?? null,
    digest: img.digest,
    mediaType: img.mediaType,
    platform: formatPlatform(img.platform),
    config: img.manifest.config,
    layers: img.manifest.layers.map((l) => ({ digest: l.digest, mediaType: l.mediaType, size: l.size, ...(l.annotations ? { annotations: l.annotations } : {}) })),
  };
}

function inspectText(img: ResolvedImage): string {
  const lines = [
    `Reference:  ${formatReference(img.reference)}`,
    ...(img.indexDigest ? [`Index:      ${img.indexDigest}`] : []),
    `Digest:     ${img.digest}`,
    `Media type: ${img.mediaType}`,
    `Platform:   ${formatPlatform(img.platform)}`,
    `Config:     ${img.manifest.config.digest} (${img.manifest.config.size} bytes)`,
    `Layers:     ${img.manifest.layers.length}, ${human(img.manifest.layers.reduce((n, l) => n + l.size, 0))} compressed`,
  ];
  const rows = img.manifest.layers.map((l, i) => [String(i), l.digest, l.mediaType, String(l.size), human(l.size)]);
  const header = ['#', 'DIGEST', 'MEDIA TYPE', 'SIZE', ''];
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => (r[c] as string).length)));
  const fmt = (r: string[]) => '  ' + r.map((cell, c) => (c === 3 ? cell.padStart(widths[c] as number) : cell.padEnd(widths[c] as number))).join('  ').trimEnd();
  lines.push(fmt(header), ...rows.map(fmt));
  return lines.join('\n');
}

export function inspectCommand(): Command {
  return new Command('inspect')
    .description('resolve an image and print its manifest digest, platform and layers')
    .argument('<ref>', 'image reference, e.g. ubuntu:22.04 or localhost:5000/app@sha256:...')
    .option('--plain-http', 'talk plain HTTP to this registry (insecure)')
    .option('--json', 'print JSON')
    .option('--platform <os/arch[/variant]>', 'platform to select from an index (default: this host)')
    .action(async (refText: string, flags: InspectFlags) => {
      const ref = parseReference(refText);
      const platform = flags.platform !== undefined ? parsePlatform(flags.platform) : hostPlatform();
      const client = new RegistryClient({
        credentials: new DockerConfigCredentials({ path: dockerConfigPath() }),
        ...(flags.plainHttp ? { insecureRegistries: [ref.registry] } : {}),
      });
      try {
        const img = await client.resolveImage(ref, { platform });
        process.stdout.write((flags.json ? JSON.stringify(inspectJson(img), null, 2) : inspectText(img)) + '\n');
      } finally {
        await client.close();
      }
    });
}
