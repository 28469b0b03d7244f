/**
 * A batch server in its own process, for the kill-and-restart test: DATA_DIR is the data folder and
 * UNET_DELAY_MS slows every UNet call so a job is still running when the test kills the process.
 * Prints {"url": ...} on one line once listening.
 */
import { startServer } from './helpers.ts';

const delay = Number(process.env['UNET_DELAY_MS'] ?? 0);
const server = await startServer({
  dataDir: process.env['DATA_DIR']!,
  wrap: (ctx) => ({
    ...ctx,
    runners: (size, variant) => {
      const run = ctx.runners(size, variant);
      return async (rows) => {
        await new Promise((r) => setTimeout(r, delay));
        return run(rows);
      };
    },
  }),
});
process.stdout.write(`${JSON.stringify({ url: server.url })}\n`);
