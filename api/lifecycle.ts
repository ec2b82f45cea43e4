// The lifecycle of VMSnapshots and VMRestores as users see it (conditions, waiting, deadlines,
// deletion protection, retained files), for docs/reference.md. Generated with the field tables so
// the names it uses come from the same constants the code uses.
import { ALLOW_DISCARD_HIBERNATION_ANNOTATION, ConditionType, DEFAULT_FAILURE_DEADLINE } from './common.js';

const { Ready, Progressing, Failed } = ConditionType;

export const LIFECYCLE_REFERENCE = `## Lifecycle: phases, conditions, deadlines, deletion

**Conditions.** Every \`VMSnapshot\` and \`VMRestore\` the operator has seen carries three conditions,
each with \`observedGeneration\`, a CamelCase \`reason\` and a message; the operator and the node agent
write them from one function (\`api/conditions.ts\`), so they always agree with \`status.phase\`:

| phase | \`${Ready}\` | \`${Progressing}\` | \`${Failed}\` |
| --- | --- | --- | --- |
| \`Pending\` (waiting, or assigned to a node) | False | True: what it waits for (\`VMNotFound\`, \`ClassNotFound\`, \`WaitingForVM\`, \`SnapshotNotFound\`, \`WaitingForSnapshot\`, \`Assigned\`, ...) | False |
| \`InProgress\` | False | True (\`InProgress\`) | False |
| \`Succeeded\` | True (\`Succeeded\`, with a summary) | False | False |
| \`Failed\` | False | False | True: why, also in \`status.error\` and a Warning event |

\`kubectl wait --for=condition=${Ready}\` returns when the work succeeded, \`kubectl wait
--for=condition=${Failed}\` as soon as it failed for good (\`Succeeded\` and \`Failed\` are final: the API
server refuses any other phase after them). The \`VMRestore\` \`Mode\` column shows the mode the restore
ran in (\`status.restoreMode\`): \`Eager\` for a \`Lazy\` restore that fell back, with
\`status.restoreModeReason\`.

**Waiting and deadlines.** A missing VM (\`VMNotFound\`), a missing \`VMSnapshotClass\`
(\`ClassNotFound\`), a missing or unfinished snapshot (\`SnapshotNotFound\`, \`WaitingForSnapshot\`) and a
VM busy with another operation (\`WaitingForVM\`) are waited for, not failed: objects applied together
(GitOps) converge in any order. The reason is on \`${Progressing}\`, with an event when it changes
(Warning for a missing VM or class). \`spec.failureDeadline\` (default \`${DEFAULT_FAILURE_DEADLINE}\`, same
spelling and bounds on both kinds) bounds the whole operation, waiting included, from creation (or
from the agent's start of the work): past it the object is \`Failed\` with reason \`DeadlineExceeded\`
and a message that says what it was still waiting for.

**Deleting a hibernation.** A \`VMSnapshot\` taken with \`afterSnapshot: Stop\` holds the stopped VM's
only state: the agent sets \`status.hibernated: true\` when it succeeds, and the operator sets it to
false once the VM runs again (a \`VMRestore\` into it succeeded, or a node reports it running). While
it is true and the deletion policy is \`Delete\`, \`kubectl delete\` is refused with a message naming the
way out: restore the VM first, set \`spec.deletionPolicy: Retain\` (the file stays), or annotate the
snapshot \`${ALLOW_DISCARD_HIBERNATION_ANNOTATION}: "true"\` to discard the state on purpose. Deleting the
namespace still deletes it.

The refusal is a \`ValidatingAdmissionPolicy\` (\`<release>-object-rules\` in the chart) on \`DELETE\`, the
mechanism Kubernetes itself uses for such guards, rather than a finalizer that holds the deletion:
a refused \`DELETE\` leaves the object exactly as it was and the user sees why at once, in
\`kubectl delete\`'s own output. A finalizer can only delay a deletion that has already been accepted:
\`deletionTimestamp\` can never be cleared, so the snapshot would be stuck between "deleted" and "kept",
the user would have to find an event to learn why, and the only way forward would be to discard the
state anyway. The policy needs the API server's admission policies (Kubernetes 1.30 or later); the
chart installs it whenever they exist. The same policy keeps \`spec.digests\`, \`spec.verify\` and
\`spec.prefetch\` immutable: they still accept the booleans they replaced (\`true\`, \`false\`, read as
\`Record\`/\`Digests\`/\`Background\` and \`None\`), so their schema has no single type and is out of reach
of the CRD's own rules. \`status.effective\` always shows the enum.

**Restoring a retained file again.** With \`deletionPolicy: Retain\` the file stays on its node after
its \`VMSnapshot\` is gone (note \`status.file.path\` and \`status.nodeName\` before deleting it). There
is no way to turn such a file back into a \`VMSnapshot\`: the agent is root on the node and never opens
a path that a tenant names, and a tenant could name any file, another namespace's snapshot included.
Restoring it is a node administrator's task, with the node CLI, as root on that node:
\`vmsnap-agent inspect FILE\` shows the VM it was taken of, its machine type, RAM size and QEMU version;
\`vmsnap-agent restore --in FILE --qmp SOCK\` loads it into a QEMU the administrator started with the
same machine type and devices and \`-incoming defer\`, ideally as an unprivileged user and inside the
VM's own sandbox. Not \`--launch\`: it starts QEMU from the command line recorded in the file's header,
and a tenant's QEMU could write that header. The administrator then owns that QEMU process;
removing the file when it is no longer needed is theirs too.
`;
