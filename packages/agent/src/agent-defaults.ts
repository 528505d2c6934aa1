// What every later operation inherits unless its request says otherwise:
// the default user, the default working directory, the environment merged
// into every process, and the access token. POST /init changes them (once per
// restore); the services only read them. Must never do I/O.

/** The agent's defaults, shared by the process, filesystem and files routes. */
export class AgentDefaults {
  /** Who runs a command or owns a file when the request names no user. */
  user: string;
  /** cwd / path used when a request leaves it empty (envd's defaultWorkdir); unset: the user's home. */
  workdir: string | undefined;
  /**
   * The token the host handed over in /init. Kept so a later change can
   * require it on requests as envd does (X-Access-Token); nothing checks it yet.
   */
  accessToken: string | undefined;
  private readonly envVars = new Map<string, string>();

  constructor(user: string) {
    this.user = user;
  }

  /** Adds or replaces variables; like envd, /init never removes one. */
  mergeEnvVars(vars: Record<string, string>): void {
    for (const [key, value] of Object.entries(vars)) this.envVars.set(key, value);
  }

  get envVarCount(): number {
    return this.envVars.size;
  }

  /** A copy, so a caller can never change the defaults by accident. */
  envs(): Record<string, string> {
    return Object.fromEntries(this.envVars);
  }
}
