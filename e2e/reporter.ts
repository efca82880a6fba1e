// Says, at the end of a run, where the run's screenshots, traces and HTML report are.

import * as path from 'node:path';
import type { FullResult, Reporter } from '@playwright/test/reporter';

type Options = { outputDir: string; reportDir: string };

export default class WhereReporter implements Reporter {
  constructor(private readonly options: Options) {}

  printsToStdio(): boolean {
    return true;
  }

  onEnd(result: FullResult): void {
    const outputDir = path.resolve(__dirname, this.options.outputDir);
    const reportDir = path.resolve(__dirname, this.options.reportDir);
    console.log(`\nTest outputs (screenshots, traces, per-test files): ${outputDir}`);
    console.log(`HTML report: ${reportDir} (npx playwright show-report ${this.options.reportDir})`);
    if (result.status !== 'passed') {
      console.log(`A failed test's trace: npx playwright show-trace ${this.options.outputDir}/<test>/trace.zip`);
    }
  }
}
