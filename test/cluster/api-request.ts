// One raw HTTPS request to the test control plane's API server, for suites that assert exact
// status codes (authentication, admission, validation) rather than what kubectl makes of them.
import { readFileSync } from 'node:fs';
import { request } from 'node:https';
import { ensureCluster, type ControlPlane } from '../../stack/controlplane.js';

export interface ApiRequestOptions {
  /** Authenticate with this bearer token. */
  token?: string;
  /** Authenticate as the cluster admin (the kubeconfig's client certificate). */
  admin?: boolean;
  method?: string;
  /** Sent as JSON unless it is already a string. */
  body?: unknown;
  /** Defaults to application/json, or application/merge-patch+json for PATCH. */
  contentType?: string;
  /** Resolve as soon as the status line arrives and drop the connection (for watches). */
  headersOnly?: boolean;
}

let adminCredentials: { cert: Buffer; key: Buffer } | undefined;

function adminClientCredentials(cp: ControlPlane): { cert: Buffer; key: Buffer } {
  if (!adminCredentials) {
    const text = readFileSync(cp.kubeconfig, 'utf8');
    const field = (name: string): Buffer => {
      const m = new RegExp(`${name}:\\s*(\\S+)`).exec(text);
      if (!m) throw new Error(`${cp.kubeconfig} has no ${name}`);
      return Buffer.from(m[1]!, 'base64');
    };
    adminCredentials = { cert: field('client-certificate-data'), key: field('client-key-data') };
  }
  return adminCredentials;
}

/**
 * One raw HTTPS request to the API server, for asserting exact status codes. Anonymous unless
 * `token` or `admin` is given.
 */
export async function apiRequest(urlPath: string, opts: ApiRequestOptions = {}): Promise<{ status: number; body: string }> {
  // 429 is "try again" (a new CRD's watch cache still initialising, or flow control), as every
  // client treats it; the answer asserted is the one after it.
  for (let attempt = 1; ; attempt++) {
    const r = await apiRequestOnce(urlPath, opts);
    if (r.status !== 429 || attempt >= 10) return r;
    await new Promise((done) => setTimeout(done, Math.min(5, Number(r.retryAfter) || 1) * 1000));
  }
}

async function apiRequestOnce(urlPath: string, opts: ApiRequestOptions): Promise<{ status: number; body: string; retryAfter?: string }> {
  const cp = await ensureCluster();
  const url = new URL(urlPath, cp.server);
  const ca = readFileSync(cp.caFile);
  const method = opts.method ?? 'GET';
  const payload = opts.body === undefined ? undefined : typeof opts.body === 'string' ? opts.body : JSON.stringify(opts.body);
  const headers: Record<string, string> = { Accept: 'application/json' };
  if (opts.token) headers.Authorization = `Bearer ${opts.token}`;
  if (payload !== undefined) {
    headers['Content-Type'] = opts.contentType ?? (method === 'PATCH' ? 'application/merge-patch+json' : 'application/json');
    headers['Content-Length'] = String(Buffer.byteLength(payload));
  }
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      { method, ca, headers, timeout: 10_000, ...(opts.admin ? adminClientCredentials(cp) : {}) },
      (res) => {
        if (opts.headersOnly) {
          resolve({ status: res.statusCode ?? 0, body: '', retryAfter: res.headers['retry-after'] });
          res.destroy();
          return;
        }
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8'), retryAfter: res.headers['retry-after'] }));
      },
    );
    req.on('timeout', () => req.destroy(new Error(`timeout: ${method} ${url.href}`)));
    req.on('error', reject);
    req.end(payload);
  });
}
