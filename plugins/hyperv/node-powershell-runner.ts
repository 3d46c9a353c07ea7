import { accessSync, constants } from 'node:fs';
import { delimiter, isAbsolute, join } from 'node:path';
import createDebug from 'debug';
import { PowerShell } from 'node-powershell';
import { NotFoundError, StillpointError, TransientError } from '../../core/errors.ts';
import { type PowerShellEdition, type PowerShellRunner, unwrapOutput, wrapScript } from './runner.ts';

const debug = createDebug('stillpoint:hyperv:powershell');

export interface NodePowerShellRunnerOptions {
  /** `auto` (powershell.exe on Windows, else pwsh), `powershell` (5.1), `pwsh` (7), or a path. */
  executable: string;
  /** Per-script time limit (ms); 0 = none. */
  invocationTimeoutMs: number;
  /** Where this runner is used, for error messages (e.g. `drivers[0] (hyperv "hv01")`). */
  where: string;
  /** PATH to search (tests); default process.env.PATH. */
  path?: string;
}

/** Find an executable on PATH (with Windows extensions); undefined when absent. */
export function findExecutable(name: string, pathEnv = process.env.PATH ?? ''): string | undefined {
  const exts = process.platform === 'win32' ? ['', '.exe', '.cmd'] : [''];
  const candidates = isAbsolute(name) ? [name] : pathEnv.split(delimiter).filter(Boolean).map((d) => join(d, name));
  for (const c of candidates) {
    for (const ext of exts) {
      try {
        accessSync(c + ext, constants.X_OK);
        return c + ext;
      } catch { /* not here */ }
    }
  }
  return undefined;
}

/**
 * The real runner: one long-lived PowerShell process through node-powershell, scripts run one at a
 * time. Windows PowerShell 5.1 (`powershell`) or PowerShell 7 (`pwsh`). node-powershell is not
 * maintained upstream any more; everything it does for Stillpoint is behind `PowerShellRunner`.
 */
export class NodePowerShellRunner implements PowerShellRunner {
  readonly edition: PowerShellEdition;
  readonly executable: string;
  readonly #options: NodePowerShellRunnerOptions;
  #shell: PowerShell | undefined;

  constructor(options: NodePowerShellRunnerOptions) {
    this.#options = options;
    const wanted = options.executable === 'auto'
      ? (process.platform === 'win32' ? 'powershell' : 'pwsh')
      : options.executable;
    const found = findExecutable(wanted, options.path);
    if (!found) {
      throw new NotFoundError(`no PowerShell found: "${wanted}" is not on PATH`, {
        where: options.where,
        hint: 'Run Stillpoint on the Hyper-V host (or a cluster node) where Windows PowerShell 5.1 or PowerShell 7 ' +
          'is installed, or set the driver option powershell.executable to the full path of powershell.exe or pwsh',
      });
    }
    this.executable = found;
    this.edition = /pwsh/i.test(found) ? '7' : '5.1';
  }

  #open(): PowerShell {
    if (!this.#shell) {
      debug('starting %s (edition %s)', this.executable, this.edition);
      const shell = new PowerShell({
        executable: this.executable,
        invocationTimeout: this.#options.invocationTimeoutMs,
        throwOnInvocationError: true,
        executableOptions: { '-NoProfile': true, '-NonInteractive': true, '-ExecutionPolicy': 'Bypass' },
      });
      // A shell whose process dies must not become an unhandled rejection; the next run() reports it.
      shell.streams.stdin.on('error', (err) => debug('powershell stdin: %s', err.message));
      this.#shell = shell;
    }
    return this.#shell;
  }

  async run(script: string): Promise<unknown> {
    const shell = this.#open();
    debug('run:\n%s', script);
    let raw: string;
    try {
      const result = await shell.invoke(wrapScript(script, this.edition));
      raw = result.raw;
    } catch (cause) {
      this.#shell = undefined;
      const message = cause instanceof Error ? cause.message : String(cause);
      if (/timed out|timeout/i.test(message)) {
        throw new TransientError(`PowerShell did not answer within ${this.#options.invocationTimeoutMs} ms`, { where: this.#options.where, cause });
      }
      throw new StillpointError(`PowerShell failed: ${message}`, {
        where: this.#options.where,
        hint: `Check that ${this.executable} starts and that the Hyper-V module is installed (Install-WindowsFeature Hyper-V-PowerShell)`,
        cause,
      });
    }
    return unwrapOutput(raw, this.#options.where);
  }

  async close(): Promise<void> {
    const shell = this.#shell;
    this.#shell = undefined;
    if (shell) await shell.dispose().catch((err: unknown) => debug('dispose: %s', err));
  }
}
