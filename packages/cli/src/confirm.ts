// Asks the person at the terminal before something destructive (`rm --all`,
// `system prune`). Never asks anything else: without a terminal on stdin the
// answer is no, and the command says to add -f.

/** A yes from the terminal; false without one (stdin not a terminal). */
export async function confirm(question: string): Promise<boolean> {
  if (!process.stdin.isTTY) return false;
  const { createInterface } = await import('node:readline/promises');
  const prompt = createInterface({ input: process.stdin, output: process.stderr });
  try {
    return /^y(es)?$/i.test((await prompt.question(question)).trim());
  } finally {
    prompt.close();
  }
}
