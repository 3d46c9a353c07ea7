/**
 * Errors that say what was wrong, where, and what to do.
 * `where` names the file, config field, VM or disk; `hint` says what to do.
 */
export class StillpointError extends Error {
  readonly where?: string;
  readonly hint?: string;
  constructor(message: string, options: { where?: string; hint?: string; cause?: unknown } = {}) {
    super(
      [options.where ? `${options.where}: ${message}` : message, options.hint].filter(Boolean).join('. '),
      { cause: options.cause },
    );
    this.name = new.target.name;
    this.where = options.where;
    this.hint = options.hint;
  }
}

/** A key, file, VM or snapshot that does not exist. */
export class NotFoundError extends StillpointError {}

/** A fault that may go away when retried (connection dropped, timeout). */
export class TransientError extends StillpointError {}

/** Invalid configuration or plugin options; `problems` lists every problem found. */
export class ConfigError extends StillpointError {
  readonly problems: string[];
  constructor(problems: string[], options: { where?: string } = {}) {
    super(problems.length === 1 ? problems[0] : `${problems.length} problems:\n  ${problems.join('\n  ')}`, options);
    this.problems = problems;
  }
}

/** A disk image that is damaged or not what it claims to be. */
export class CorruptImageError extends StillpointError {}
