// What `capsule daemon config` shows: every capsuled setting as this daemon
// took it at its start, where it came from (environment, config file,
// default) and, where the text is not the whole story, what it resolved to.
// It reports only; config.ts alone parses and checks the values.
import { DAEMON_SETTINGS, type DaemonSettingsReport } from '@capsule/protocol';

/** Where each setting stood when the daemon started (main.ts takes this before and after reading the config file). */
export interface SettingOrigins {
  /** The config file read, if any. */
  configFile?: string;
  /** Settings the config file supplied (the environment did not have them). */
  fromFile: readonly string[];
  /** The environment after the config file was applied: every setting's text. */
  env: NodeJS.ProcessEnv;
}

/** The settings the config file supplied: unset in the environment `before` `applyConfigFile` ran, set `after` it. */
export function settingsAddedBy(before: NodeJS.ProcessEnv, after: NodeJS.ProcessEnv): string[] {
  return DAEMON_SETTINGS.map((s) => s.name).filter((name) => before[name] === undefined && after[name] !== undefined);
}

export function settingsReport(origins: SettingOrigins, effective: Readonly<Record<string, string | undefined>>): DaemonSettingsReport {
  return {
    ...(origins.configFile ? { configFile: origins.configFile } : {}),
    settings: DAEMON_SETTINGS.map(({ name, defaultValue }) => {
      const text = origins.env[name];
      const set = text !== undefined && text !== '';
      const value = set ? text : defaultValue;
      const resolved = effective[name];
      return {
        name,
        value,
        source: !set ? ('default' as const) : origins.fromFile.includes(name) ? ('config file' as const) : ('environment' as const),
        ...(resolved !== undefined && resolved !== value ? { effective: resolved } : {}),
      };
    }),
  };
}
