/**
 * Bundles TypeScript entry points with esbuild into one directory, together with the repository's
 * chunk worker (core/repository/workers.ts starts `chunk-worker.js` from next to a bundle), so
 * that a process starts without tsx: about 90 ms instead of 300 ms before the first line runs,
 * and each chunk worker in a few milliseconds. Native modules and ssh2 stay external (resolved
 * from node_modules), so the output directory must lie inside the project.
 *
 *   node --import tsx scripts/bundle.ts <outdir> <entry.ts>...
 */
import { build, type Plugin } from 'esbuild';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));

/**
 * zod ships every locale's messages behind its `z.locales` namespace, which a bundler cannot drop:
 * a third of the bundle, parsed at every start. Stillpoint speaks English (zod's default, which
 * its schemas import directly), so the namespace is left empty.
 */
const zodLocalesLeftOut: Plugin = {
  name: 'zod-locales-left-out',
  setup(b) {
    b.onResolve({ filter: /\/locales\/index\.js$/ }, (args) => (args.importer.includes('/node_modules/zod/') ? { path: 'zod-locales', namespace: 'left-out' } : undefined));
    b.onLoad({ filter: /.*/, namespace: 'left-out' }, () => ({ contents: 'export {};', loader: 'js' }));
  },
};

/** Bundle `entries` into `outdir` (as `<name>.js`); returns the path of each entry's bundle. */
export async function bundle(outdir: string, entries: string[]): Promise<string[]> {
  await build({
    entryPoints: [...entries, join(root, 'core/repository/chunk-worker.ts')],
    outdir,
    entryNames: '[name]',
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    external: ['zstd-napi', 'ffi-rs', 'ssh2', 'cpu-features', 'tsx'],
    plugins: [zodLocalesLeftOut],
    // Bundled CommonJS dependencies call require().
    banner: { js: "import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);" },
    logLevel: 'warning',
  });
  return entries.map((e) => join(outdir, basename(e).replace(/\.ts$/, '.js')));
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const [outdir, ...entries] = process.argv.slice(2);
  if (!outdir || entries.length === 0) {
    console.error('usage: scripts/bundle.ts <outdir> <entry.ts>...');
    process.exit(2);
  }
  for (const out of await bundle(outdir, entries)) console.log(out);
}
