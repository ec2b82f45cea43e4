// An object-storage repository: where snapshots of a VMSnapshotClass are uploaded after the save,
// and where a restore on another node fetches them from. It is a field set of the class (see
// docs/reference.md, "Repositories", for why): classes are cluster-scoped and admin-owned, and a
// snapshot names its class, so one lookup answers both "upload?" and "where?".
import { z } from 'zod';
import { dns1123Subdomain } from './common.js';

export const CompressionSchema = z.enum(['None', 'Zstd']);
export const Compression = CompressionSchema.enum;
export type Compression = z.infer<typeof CompressionSchema>;

export const S3_BUCKET_PATTERN = '^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$';
export const MIN_UPLOAD_PARALLELISM = 1;
export const MAX_UPLOAD_PARALLELISM = 32;
export const DEFAULT_UPLOAD_PARALLELISM = 4;
export const DEFAULT_REGION = 'us-east-1';

export const RepositorySchema = z
  .object({
    endpoint: z
      .string({ error: 'repository.endpoint is required: the S3 endpoint URL, such as "https://s3.example.com"' })
      .max(2048)
      .regex(/^https?:\/\/[^\s/?#]+(:[0-9]+)?\/?$/, {
        error: 'repository.endpoint must be an http(s) URL of a host (and port), with no path, such as "https://s3.example.com:9000"',
      })
      .describe('S3 endpoint URL (http or https, host and optional port). Buckets are addressed path-style.'),
    bucket: z
      .string({ error: 'repository.bucket is required' })
      .regex(new RegExp(S3_BUCKET_PATTERN), {
        error: "repository.bucket must be an S3 bucket name: 3-63 lower-case letters, digits, '.' and '-'",
      })
      .describe('The bucket snapshots are uploaded to. It must exist.'),
    region: z.string().min(1).max(64).describe(`Signing region (default ${DEFAULT_REGION}).`).optional(),
    prefix: z
      .string()
      .max(256)
      .regex(/^([A-Za-z0-9._-]+\/)*$/, { error: "repository.prefix must be path segments of letters, digits, '.', '_' and '-', each ending in '/'" })
      .describe('Key prefix inside the bucket, ending in "/" (default: none).')
      .optional(),
    credentialsSecret: dns1123Subdomain('repository.credentialsSecret').describe(
      "Name of a Secret in the vmsnap chart's namespace with keys accessKeyId and secretAccessKey. The agents may read only the Secrets the chart's values name.",
    ),
    encryptionKeySecret: dns1123Subdomain('repository.encryptionKeySecret')
      .describe("Name of a Secret in the chart's namespace whose key `key` holds exactly 32 bytes: parts are encrypted with AES-256-GCM. Unset: stored in the clear.")
      .optional(),
    compression: CompressionSchema.describe('Zstd compresses each part before encryption (default None).').optional(),
    parallelism: z
      .number()
      .int()
      .min(MIN_UPLOAD_PARALLELISM, { error: `repository.parallelism must be between ${MIN_UPLOAD_PARALLELISM} and ${MAX_UPLOAD_PARALLELISM}` })
      .max(MAX_UPLOAD_PARALLELISM, { error: `repository.parallelism must be between ${MIN_UPLOAD_PARALLELISM} and ${MAX_UPLOAD_PARALLELISM}` })
      .describe(`Parts uploaded or downloaded at once (default ${DEFAULT_UPLOAD_PARALLELISM}).`)
      .optional(),
  })
  .describe('Object storage the snapshots of this class are uploaded to after the save.');
export type Repository = z.infer<typeof RepositorySchema>;

/** Where the agents look for repository Secrets when POD_NAMESPACE is unset (the chart's usual namespace). */
export const DEFAULT_RELEASE_NAMESPACE = 'vmsnap-system';

/** Secret keys a repository's Secrets must carry. */
export const CREDENTIALS_KEYS = { accessKeyId: 'accessKeyId', secretAccessKey: 'secretAccessKey' } as const;
export const ENCRYPTION_KEY_KEY = 'key';

/** Where one snapshot lives in the bucket: its namespace, name and uid, so a re-created name never collides. */
export function snapshotObjectPrefix(repo: Pick<Repository, 'prefix'>, snap: { namespace: string; name: string; uid: string }): string {
  return `${repo.prefix ?? ''}${snap.namespace}/${snap.name}-${snap.uid}/`;
}

export const UploadPhaseSchema = z.enum(['Pending', 'Uploading', 'Uploaded', 'Failed']);
export const UploadPhase = UploadPhaseSchema.enum;
export type UploadPhase = z.infer<typeof UploadPhaseSchema>;

/** A snapshot's copy in its class's repository, written by the agent that saved it. */
export const UploadStatusSchema = z
  .object({
    phase: UploadPhaseSchema.describe('Pending, Uploading, Uploaded or Failed.'),
    bucket: z.string().max(63).optional().describe('The bucket the snapshot was uploaded to.'),
    prefix: z.string().max(1024).optional().describe('Key prefix of the snapshot in the bucket (manifest.json, data, digests).'),
    bytesDone: z.number().int().min(0).optional().describe('Data bytes (present pages) uploaded so far.').meta({ format: 'int64' }),
    bytesTotal: z.number().int().min(0).optional().describe('Data bytes (present pages) to upload.').meta({ format: 'int64' }),
    storedBytes: z.number().int().min(0).optional().describe('Bytes the object occupies in the bucket (after compression).').meta({ format: 'int64' }),
    encrypted: z.boolean().optional().describe('Whether the parts are encrypted (AES-256-GCM).'),
    compression: CompressionSchema.optional(),
    completionTime: z.string().max(64).optional().describe('When the upload finished (successfully or not).'),
    durationMs: z.number().int().min(0).optional().describe('Upload duration in milliseconds.').meta({ format: 'int64' }),
    message: z.string().max(4096).optional().describe('Why the upload failed.'),
  })
  .describe("The snapshot's copy in its class's repository (absent when the class has none).");
export type UploadStatus = z.infer<typeof UploadStatusSchema>;

/** The "Repositories" section of docs/reference.md (generated with the field tables). */
export const REPOSITORY_REFERENCE = `## Repositories

A repository is a field set of \`VMSnapshotClass\` (\`repository\`), not a resource of its own.
A class is already cluster-scoped and owned by the platform team, and every snapshot names its
class: one lookup answers both "is this snapshot uploaded?" and "where to?", and the settings in
force are recorded in the snapshot's \`status.effective.repository\` when it is accepted, so a later
restore reads them from the snapshot even if the class changes. Classes that share a bucket repeat
four lines (endpoint, bucket, credentialsSecret, prefix).

**Secrets.** \`credentialsSecret\` (keys \`accessKeyId\`, \`secretAccessKey\`) and
\`encryptionKeySecret\` (key \`key\`, exactly 32 bytes) are read from the chart's namespace. The
chart gives the agents \`get\` on exactly the names listed in \`agent.repositorySecrets\`, in that
namespace, and on no other Secret.

**Upload.** After a save succeeds, the agent of the snapshot's node uploads it in the
background; the VM was already resumed (or stopped) by the save and never waits for it. Only the
file's data extents travel (found with \`SEEK_DATA\`/\`SEEK_HOLE\`: untouched guest RAM is a hole), cut
into parts of 16 MiB of data (more when a file would need over 9,000 parts). Each part is
compressed (\`compression: Zstd\`), then encrypted (AES-256-GCM with a fresh nonce, bound to its
object and part number), and sent as one part of an S3 multipart upload, \`parallelism\` at a
time; each part's body is signed with its SHA-256 (SigV4's payload hash: for a part stored as
read, the one the manifest records), so the server refuses a part changed in transit. Parts
shorter than S3's 5 MiB minimum are padded (so zstd saves at most 16:5 per part). In
the bucket, under \`<prefix><namespace>/<name>-<uid>/\`: \`data\` (the parts), \`digests\` (the RAM
digests sidecar, when the snapshot has one) and \`manifest.json\` (each part's file extents, sizes,
SHA-256 of its plaintext and nonce), written last: an upload without a manifest never counts.
Progress and the result are in \`status.upload\` (\`phase\` Pending, Uploading, Uploaded or Failed;
\`bytesDone\`/\`bytesTotal\` of present pages, \`storedBytes\`, \`message\`), the \`Uploaded\`
condition, and the events \`UploadStarted\`, \`Uploaded\`, \`UploadFailed\`. A failed upload stays
\`Failed\` with the reason (refused credentials, a missing bucket, an unreachable server); an upload
cut short by an agent restart starts over.

**Restore on another node.** A \`VMRestore\` runs on \`spec.nodeName\` when it is set. Without it,
it runs where its target VM is: the node its live VM pods are bound to, or, for a VM without pods,
the node whose \`VMInventory\` has its QEMU up; a VM that runs nowhere is restored on the snapshot's
node. Live pods of the VM on several nodes (or its QEMU up on several nodes) fail the restore, which
names them: the VM has no one place, so delete the extra pods or set \`spec.nodeName\`. A pod not
yet scheduled makes the restore wait (\`WaitingForPod\`). On a node other than the snapshot's, the
restore runs once the snapshot is \`Uploaded\` (before that it waits; without a repository, or after
a failed upload, it fails naming \`spec.nodeName\`; when the restore followed its VM there, the
message says so, and that stopping the VM, or restoring a copy under another name, restores on the
snapshot's node instead). The \`Assigned\` event (and the \`Progressing\` condition, reason
\`Assigned\`) says which node and why ("on node b, where VM "web" runs; fetching VMSnapshot "web-1"
from its repository"). That node's agent reads the manifest, refuses a wrong or missing key before
reading any part, fetches the parts with parallel ranged reads into a sparse local file, and checks
each part (GCM authentication, then SHA-256) before writing it (each part is synced as it lands, so
the disk writes overlap the fetches). A changed byte fails the restore naming the part and the file
bytes it covers; the partial file is removed, so a file that failed or was cut short is never
restored. The file is then re-sealed with the node's own header key (its identity must be the
snapshot's and its structure checksum the one recorded at save time), and restored like a local
file, eager or lazy. An eager restore into a VM the agent launches (none running at the target, no
writable disks) starts its QEMU (\`-incoming defer\`) as soon as the part holding the file's header
has checked out, while the rest downloads; it loads into that QEMU only if the re-sealed header
gives the same command line, and a download that fails or is cancelled quits it before the restore
reports \`Failed\`.

**Cache rule.** The fetched copy is kept at
\`<storageRoot>/<namespace>/fetched/<name>-<uid>.vms\` and reused (after verification) by later
restores of the same snapshot on that node. The node's agent removes it (with its digests and any
partial download), at its inventory interval, once its VMSnapshot no longer exists or is being
deleted and no restore on the node is reading it; a VM restored lazily from it keeps its mapping
until it exits (the kernel frees the space then). There is no size limit: a node holds one copy
per snapshot restored there for as long as the snapshot exists.

**Memory.** Parts are held whole in memory while they are encoded or decoded: each part in flight
holds its plaintext, its compressed and its encrypted form, so one upload or download holds at
most about 3 x \`parallelism\` x the part size: 192 MiB at the default (4 x 16 MiB), 1.5 GiB at
\`parallelism: 32\`. Parts grow beyond 16 MiB only for snapshots of more than 144 GiB of present
pages. Size the agent's memory limit for the uploads and fetches it may run at once.

**Deletion.** Under \`deletionPolicy: Delete\`, the node's agent removes the file and then the
operator removes the copy in the bucket (\`manifest.json\` first, then \`data\`, \`digests\` and
any unfinished multipart upload) before it releases the finalizer; an upload still running is
cancelled first. The operator reads the same Secrets as the agents (\`agent.repositorySecrets\`).
A copy that cannot be removed (the server unreachable, the credentials refused) keeps the
finalizer, with a \`RemoteDeleteFailed\` event every 30 s; removing the finalizer by hand gives
up on it. \`Retain\` keeps the file and the copy.

**Node loss.** A snapshot's node counts as lost once its agent has not renewed the node's
\`VMInventory\` for longer than the operator's grace period (\`operator.nodeLossGraceSeconds\`,
default 600; an agent renews it every \`agent.inventoryIntervalSeconds\`): a deleted node, a
NotReady node and a node whose agent is gone all stop renewing it. An uploaded snapshot of a
lost node still restores on any other node (\`spec.nodeName\`, or where its target VM runs). Deleting a snapshot of a lost
node no longer waits for that node: the operator releases it with a \`NodeLost\` Warning event
naming the node and the file left on it, after removing the repository copy under \`Delete\`.
A node that comes back after that keeps the file until it is removed by hand.

**Metrics.** Each agent serves \`/metrics\` on its probes' port (\`VMSNAP_HEALTH_PORT\`):
\`vmsnap_repository_transfer_bytes_total{direction="upload"|"download"}\` (present-page bytes),
\`vmsnap_repository_transfer_duration_seconds\` (successful transfers),
\`vmsnap_repository_transfer_failures_total\`, and \`vmsnap_lazy_resident_bytes{namespace,restore}\`
(the resident RAM of each lazily restored VM on the node). The chart's \`agent.podMonitor\`
scrapes it and its Grafana dashboard graphs it.
`;
