// Prints one closing line, "N passed, N failed, N skipped", after vitest's own
// report, so that CI logs state the count in a plain, tool-independent form.
// Counted when the run ends, printed from onFinished, which vitest calls after
// the default reporter has printed its summary.
import type { Reporter, SerializedError, TestModule } from 'vitest/node';

export default class SummaryReporter implements Reporter {
  private line = '';

  onTestRunEnd(testModules: ReadonlyArray<TestModule>, unhandledErrors: ReadonlyArray<SerializedError>): void {
    let passed = 0;
    let failed = 0;
    let skipped = 0;
    for (const module of testModules) {
      const tests = [...module.children.allTests()];
      for (const test of tests) {
        const state = test.result().state;
        if (state === 'passed') passed += 1;
        else if (state === 'failed') failed += 1;
        else skipped += 1;
      }
      // A file that failed before any test ran (an import error) counts as a failure.
      if (module.state() === 'failed' && tests.length === 0) failed += 1;
    }
    // An error thrown outside any test fails the run (vitest exits 1), so the line says so too.
    failed += unhandledErrors.length;
    this.line = `${passed} passed, ${failed} failed, ${skipped} skipped`;
  }

  onFinished(): void {
    if (this.line !== '') process.stdout.write(`\n${this.line}\n`);
  }
}
