import type { z } from 'zod';

/** `jobs[0].mode` from ['jobs', 0, 'mode']. */
export function formatPath(path: ReadonlyArray<PropertyKey>): string {
  let out = '';
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`;
    else if (typeof p === 'string' && /^[A-Za-z_$][A-Za-z0-9_$]*$/.test(p)) out += out ? `.${p}` : p;
    else out += `[${JSON.stringify(String(p))}]`;
  }
  return out || '(top level)';
}

/** What was found, for messages: `"offhost"`, `5`, `nothing`, `an object`. */
export function describeValue(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (Array.isArray(v)) return v.length === 0 ? 'an empty list' : 'a list';
  return 'an object';
}

const quote = (v: unknown) => (typeof v === 'string' ? JSON.stringify(v) : String(v));

function distance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1].toLowerCase() === b[j - 1].toLowerCase() ? 0 : 1));
    }
  }
  return d[a.length][b.length];
}

type Schema = z.core.$ZodType;

/** The object keys a schema accepts at `path` (through defaults, optionals, arrays and unions). */
function keysAt(schema: Schema, path: ReadonlyArray<PropertyKey>): string[] {
  const def = schema._zod.def as unknown as Record<string, unknown> & { type: string };
  switch (def.type) {
    case 'default': case 'optional': case 'nullable': case 'prefault': case 'readonly': case 'catch':
      return keysAt(def.innerType as Schema, path);
    case 'pipe': return keysAt(def.in as Schema, path);
    case 'union': return [...new Set((def.options as Schema[]).flatMap((o) => keysAt(o, path)))];
    case 'array': return path.length > 0 && typeof path[0] === 'number' ? keysAt(def.element as Schema, path.slice(1)) : [];
    case 'object': {
      const shape = def.shape as Record<string, Schema>;
      if (path.length === 0) return Object.keys(shape);
      const next = shape[String(path[0])];
      return next ? keysAt(next, path.slice(1)) : [];
    }
    default: return [];
  }
}

function typeName(expected: string): string {
  return expected === 'object' ? 'an object' : expected === 'array' ? 'a list' : expected === 'int' ? 'an integer' : expected;
}

/** One readable line per problem: `<path>: expected <what>, got <what was found>`. */
export function formatIssues(issues: readonly z.core.$ZodIssue[], schema: Schema, prefix: ReadonlyArray<PropertyKey> = [], rootLength = prefix.length): string[] {
  const out: string[] = [];
  for (const issue of issues) {
    const path = [...prefix, ...issue.path];
    const at = formatPath(path);
    const input = (issue as { input?: unknown }).input;
    switch (issue.code) {
      case 'invalid_value':
        out.push(`${at}: expected ${issue.values.map(quote).join(' | ')}, got ${describeValue(input)}`);
        break;
      case 'invalid_type':
        out.push(`${at}: expected ${typeName(issue.expected)}, got ${describeValue(input)}`);
        break;
      case 'unrecognized_keys': {
        const known = keysAt(schema, path.slice(rootLength));
        for (const key of issue.keys) {
          const best = known.map((k) => ({ k, d: distance(key, k) })).sort((a, b) => a.d - b.d)[0];
          const hint = best && best.d <= Math.max(2, Math.floor(key.length / 3)) ? ` (did you mean "${best.k}"?)` : known.length ? ` (known fields: ${known.join(', ')})` : '';
          out.push(`${formatPath([...path, key])}: unknown field${hint}`);
        }
        break;
      }
      case 'too_small': {
        const min = Number(issue.minimum);
        if (issue.origin === 'array') out.push(`${at}: expected at least ${min} item${min === 1 ? '' : 's'}, got ${Array.isArray(input) ? input.length : describeValue(input)}`);
        else if (issue.origin === 'string') out.push(`${at}: expected ${min === 1 ? 'a non-empty string' : `at least ${min} characters`}, got ${describeValue(input)}`);
        else out.push(`${at}: expected a number ${issue.inclusive ? '>=' : '>'} ${min}, got ${describeValue(input)}`);
        break;
      }
      case 'too_big': {
        const max = Number(issue.maximum);
        if (issue.origin === 'array') out.push(`${at}: expected at most ${max} items, got ${Array.isArray(input) ? input.length : describeValue(input)}`);
        else if (issue.origin === 'string') out.push(`${at}: expected at most ${max} characters, got ${describeValue(input)}`);
        else out.push(`${at}: expected a number ${issue.inclusive ? '<=' : '<'} ${max}, got ${describeValue(input)}`);
        break;
      }
      case 'invalid_format':
        out.push(`${at}: expected ${issue.message.startsWith('Invalid') ? `a string matching ${issue.pattern ?? issue.format}` : issue.message}, got ${describeValue(input)}`);
        break;
      case 'not_multiple_of':
        out.push(`${at}: expected a multiple of ${String(issue.divisor)}, got ${describeValue(input)}`);
        break;
      case 'invalid_union': {
        // the branch whose type matched went deeper: report its problems; else list the types expected
        const deep = issue.errors.filter((branch) => branch.some((i) => i.path.length > 0 || i.code !== 'invalid_type'));
        if (deep.length === 1) {
          out.push(...formatIssues(deep[0], schema, path, rootLength));
        } else {
          const expected = issue.errors.flatMap((b) => b.filter((i) => i.code === 'invalid_type' && i.path.length === 0).map((i) => typeName((i as { expected: string }).expected)));
          out.push(`${at}: expected ${[...new Set(expected)].join(' or ') || 'another value'}, got ${describeValue(input)}`);
        }
        break;
      }
      default:
        out.push(`${at}: ${issue.message}`);
    }
  }
  return out;
}
