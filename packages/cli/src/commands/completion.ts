// `capsule completion bash|zsh|fish`: a small script for the shell that asks
// `capsule completion --candidates SHELL -- WORDS...` what may come next, so the
// candidates always follow the command tree of the installed capsule (see
// completion-candidates.ts). The script never runs anything but capsule.
import { Command, Option } from 'commander';
import { CliContext } from '../cli-context.js';
import { completionCandidates, type LiveNames } from '../completion-candidates.js';
import { addGlobalOptions, addProgramOptions } from './global-options.js';

const SHELLS = ['bash', 'zsh', 'fish'] as const;
type Shell = (typeof SHELLS)[number];

const SCRIPTS: Record<Shell, string> = {
  bash: `# capsule completion for bash: eval "$(capsule completion bash)" in ~/.bashrc
_capsule() {
  local IFS=$'\\n'
  COMPREPLY=($(capsule completion --candidates bash -- "\${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null))
}
complete -o default -F _capsule capsule
`,
  zsh: `#compdef capsule
# capsule completion for zsh: source <(capsule completion zsh) in ~/.zshrc, after compinit
_capsule() {
  local -a candidates
  candidates=("\${(@f)$(capsule completion --candidates zsh -- "\${(@)words[2,CURRENT]}" 2>/dev/null)}")
  if [[ -n "\${candidates[1]}" ]]; then compadd -a candidates; else _files; fi
}
compdef _capsule capsule
`,
  fish: `# capsule completion for fish: capsule completion fish > ~/.config/fish/completions/capsule.fish
function __capsule_complete
  set -l typed (commandline -opc)
  set -l current (commandline -ct)
  set -l candidates (capsule completion --candidates fish -- $typed[2..-1] "$current" 2>/dev/null)
  if test (count $candidates) -gt 0
    printf '%s\\n' $candidates
  else
    __fish_complete_path "$current"
  end
end
complete -c capsule -f -a '(__capsule_complete)'
`,
};

/** How long completion waits for the daemon before offering no live names. */
const LIVE_TIMEOUT_MS = 1500;

function liveNames(context: CliContext): LiveNames {
  const client = context.client();
  const options = { requestTimeoutMs: LIVE_TIMEOUT_MS };
  return {
    sandboxes: () =>
      client.listSandboxes({}, options).then(
        (sandboxes) => sandboxes.flatMap((sandbox) => (sandbox.name ? [sandbox.id, sandbox.name] : [sandbox.id])),
        () => [],
      ),
    templates: () =>
      client.listTemplates(options).then(
        (templates) => templates.map((template) => template.name),
        () => [],
      ),
  };
}

async function printCandidates(words: string[], command: Command): Promise<void> {
  // Loaded here: the table is program.ts's, which loads this module.
  const { loadCommand, topLevelCommands } = await import('../program.js');
  const before = words.slice(0, -1);
  const current = words.at(-1) ?? '';
  const candidates = await completionCandidates(
    before,
    current,
    {
      names: [...topLevelCommands.map((entry) => entry.name), 'help'],
      programOptions: addProgramOptions(new Command()).options,
      load: async (name) => {
        const entry = topLevelCommands.find((candidate) => candidate.name === name);
        return entry && (await loadCommand(entry));
      },
    },
    liveNames(CliContext.of(command)),
  );
  process.stdout.write(candidates.map((candidate) => `${candidate}\n`).join(''));
}

export function completionCommand(): Command {
  return addGlobalOptions(
    new Command('completion')
      .description('Print a shell completion script (bash, zsh or fish); sandbox ids, names and templates complete live')
      .addArgument(new Command().createArgument('<shell>', 'bash, zsh or fish').choices(SHELLS))
      .argument('[words...]')
      .addOption(new Option('--candidates', 'print what may follow WORDS (the script calls this)').hideHelp())
      .action(async (shell: Shell, words: string[], options: { candidates?: boolean }, command: Command) => {
        if (options.candidates) await printCandidates(words[0] === '--' ? words.slice(1) : words, command);
        else process.stdout.write(SCRIPTS[shell]);
      }),
  );
}
