import { formatPath } from './problems.ts';

const REF = /\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}/g;

/**
 * Replace `${env:NAME}` in every string of a parsed config with the environment variable NAME.
 * Returns the new value and one problem per variable that is not set.
 */
export function substituteEnv(value: unknown, env: NodeJS.ProcessEnv, path: PropertyKey[] = [], problems: string[] = []): { value: unknown; problems: string[] } {
  const walk = (v: unknown, p: PropertyKey[]): unknown => {
    if (typeof v === 'string') {
      return v.replace(REF, (ref, name: string) => {
        const found = env[name];
        if (found === undefined) {
          problems.push(`${formatPath(p)}: environment variable ${name} is not set (referenced as "${ref}")`);
          return ref;
        }
        return found;
      });
    }
    if (Array.isArray(v)) return v.map((x, i) => walk(x, [...p, i]));
    if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x, [...p, k])]));
    return v;
  };
  return { value: walk(value, path), problems };
}
