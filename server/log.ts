/** Structured logs: one JSON object per line on stdout (stderr for errors), quiet under tests unless LOG_LEVEL is set. */
export type Level = 'debug' | 'info' | 'warn' | 'error';
const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(fields: Record<string, unknown>): Logger;
}

function defaultLevel(): Level {
  const env = process.env['LOG_LEVEL'];
  if (env === 'debug' || env === 'info' || env === 'warn' || env === 'error') return env;
  return process.env['NODE_TEST_CONTEXT'] ? 'error' : 'info';
}

export function createLogger(base: Record<string, unknown> = {}, level: Level = defaultLevel()): Logger {
  const write = (l: Level, msg: string, fields?: Record<string, unknown>) => {
    if (ORDER[l] < ORDER[level]) return;
    const line = JSON.stringify({ time: new Date().toISOString(), level: l, msg, ...base, ...fields });
    (l === 'error' ? process.stderr : process.stdout).write(`${line}\n`);
  };
  return {
    debug: (m, f) => write('debug', m, f),
    info: (m, f) => write('info', m, f),
    warn: (m, f) => write('warn', m, f),
    error: (m, f) => write('error', m, f),
    child: (fields) => createLogger({ ...base, ...fields }, level),
  };
}
