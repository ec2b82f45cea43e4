// /healthz and /readyz for the kubelet's probes, shared by the operator and the agent. Each
// check returns undefined when fine, else why not: the reason is the 503 body, so `kubectl
// describe pod` shows it in the probe's failure event.
import http from 'node:http';

export type HealthCheck = () => string | undefined;

export interface HealthServer {
  port: number;
  close(): Promise<void>;
}

export function serveHealth(opts: {
  port: number;
  host?: string;
  live: HealthCheck;
  ready: HealthCheck;
  /** Also serves /metrics (Prometheus text) when given. */
  metrics?: { contentType: string; text: () => Promise<string> };
}): Promise<HealthServer> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0];
    if (path === '/metrics' && opts.metrics) {
      const m = opts.metrics;
      m.text().then(
        (text) => {
          res.setHeader('Content-Type', m.contentType);
          res.end(text);
        },
        (err) => {
          res.statusCode = 500;
          res.end(String(err));
        },
      );
      return;
    }
    const check = path === '/healthz' || path === '/livez' ? opts.live : path === '/readyz' ? opts.ready : undefined;
    if (!check) {
      res.statusCode = 404;
      res.end();
      return;
    }
    let reason: string | undefined;
    try {
      reason = check();
    } catch (err) {
      reason = `check failed: ${String(err)}`;
    }
    res.statusCode = reason === undefined ? 200 : 503;
    res.setHeader('Content-Type', 'text/plain; charset=utf-8');
    res.end(reason === undefined ? 'ok\n' : `${reason}\n`);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host ?? '0.0.0.0', () => {
      server.off('error', reject);
      const addr = server.address();
      resolve({
        port: typeof addr === 'object' && addr ? addr.port : opts.port,
        close: () => new Promise((r) => server.close(() => r())),
      });
    });
  });
}

/** A port from the environment: undefined when unset, a number, or an error naming the variable. */
export function portFromEnv(env: NodeJS.ProcessEnv, name: string): number | undefined {
  const raw = env[name]?.trim();
  if (!raw) return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new Error(`${name}=${raw} is not a port (0-65535)`);
  return n;
}
