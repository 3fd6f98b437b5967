import type { FileEntry, LayerIndex } from './model.js';

/** Where a path of the merged image comes from. */
export interface MergedEntry {
  /** Index into the layer list (0 = bottom). */
  readonly layer: number;
  readonly entry: FileEntry;
}

function parentOf(path: string): string {
  const i = path.lastIndexOf('/');
  return i === -1 ? '' : path.slice(0, i);
}

function ancestors(path: string): string[] {
  const out: string[] = [];
  for (let p = parentOf(path); p !== ''; p = parentOf(p)) out.push(p);
  return out;
}

/**
 * The overlay merge of an image's layers (bottom first), read-only and lazy: a path resolves to
 * the topmost layer that has it, unless a higher layer hides it with a whiteout, an opaque
 * directory, or a non-directory at one of its ancestors.
 */
export class MergedTree {
  readonly #layers: readonly LayerIndex[];

  constructor(layers: readonly LayerIndex[]) {
    this.#layers = layers;
  }

  /** True when layer `i` hides lower layers' `path` through one of its ancestors. */
  #hiddenBelow(i: number, path: string): boolean {
    const layer = this.#layers[i] as LayerIndex;
    for (const a of ancestors(path)) {
      const e = layer.entries.get(a);
      if (e === undefined) continue;
      if (e.type !== 'dir' || e.opaque === true) return true;
    }
    return false;
  }

  /** The entry a path resolves to, or undefined when the merged image has no such path. */
  lookup(path: string): MergedEntry | undefined {
    for (let i = this.#layers.length - 1; i >= 0; i--) {
      const layer = this.#layers[i] as LayerIndex;
      const e = layer.entries.get(path);
      if (e !== undefined) {
        if (e.type === 'whiteout') return undefined;
        // a directory of a higher layer that is opaque ends the search for its own entry too: it is the entry
        return { layer: i, entry: e };
      }
      if (path !== '' && this.#hiddenBelow(i, path)) return undefined;
    }
    return undefined;
  }

  /** Sorted names of a merged directory, or undefined when `dirPath` is not a directory. */
  children(dirPath: string): string[] | undefined {
    const top = this.lookup(dirPath);
    if (top === undefined || top.entry.type !== 'dir') return undefined;
    const names = new Map<string, boolean>(); // name -> visible
    for (let i = this.#layers.length - 1; i >= 0; i--) {
      const layer = this.#layers[i] as LayerIndex;
      const e = layer.entries.get(dirPath);
      if (e !== undefined && e.type !== 'dir') break; // a non-directory here hides everything below
      for (const name of layer.children(dirPath) ?? []) {
        if (names.has(name)) continue;
        const child = layer.entries.get(dirPath === '' ? name : `${dirPath}/${name}`);
        names.set(name, child !== undefined && child.type !== 'whiteout');
      }
      if (e?.opaque === true) break;
      if (dirPath !== '' && this.#hiddenBelow(i, dirPath)) break;
    }
    return [...names].filter(([, visible]) => visible).map(([n]) => n).sort();
  }
}
