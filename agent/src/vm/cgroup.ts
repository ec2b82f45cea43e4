// Which pod a process belongs to, from /proc/<pid>/cgroup. The kubelet puts every container of a
// pod in a cgroup named after the pod uid: cgroupfs driver `.../pod<uid>/<container>`, systemd
// driver `.../kubepods-<qos>-pod<uid with '_' for '-'>.slice/<container>.scope`.

const UUID_ANY = '[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}';
const CGROUPFS = new RegExp(`^pod(${UUID_ANY})$`);
const SYSTEMD = new RegExp(`^kubepods(?:-[a-z]+)?-pod(${UUID_ANY})\\.slice$`);

/** Every pod uid named by a cgroup file (v1: one line per hierarchy; v2: `0::/path`), normalised to '-'. */
export function podUidsInCgroup(text: string): Set<string> {
  const uids = new Set<string>();
  for (const line of text.split('\n')) {
    const i = line.indexOf(':', line.indexOf(':') + 1);
    if (i < 0) continue;
    for (const component of line.slice(i + 1).split('/')) {
      const m = CGROUPFS.exec(component) ?? SYSTEMD.exec(component);
      if (m) uids.add(m[1]!.replace(/_/g, '-'));
    }
  }
  return uids;
}

export type PeerVerdict = { ok: true } | { ok: false; reason: string };

/** The process is in this pod's cgroup, and in no other pod's, on every hierarchy that names a pod. */
export function cgroupBelongsToPod(cgroupText: string, podUid: string): PeerVerdict {
  const uids = podUidsInCgroup(cgroupText);
  if (uids.size === 0) return { ok: false, reason: 'it is in no pod cgroup (a process outside any pod)' };
  const others = [...uids].filter((u) => u !== podUid);
  if (others.length > 0) return { ok: false, reason: `it is in the cgroup of pod ${others.join(', ')}, not of pod ${podUid}` };
  return { ok: true };
}
