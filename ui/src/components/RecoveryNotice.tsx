import type { Recovery } from "../bindings";
import { Alert } from "./Alert";

interface Props {
  recovery: Recovery;
  onDismiss(): void;
}

function count(n: number, one: string, many: string): string {
  return `${n} ${n === 1 ? one : many}`;
}

/**
 * The job database was damaged at this start: it was set aside (kept, never
 * deleted) and a new one built from what it still gave and from the song
 * folders in the library.
 */
export function RecoveryNotice({ recovery, onDismiss }: Props) {
  return (
    <Alert title="Stemroom's job list was damaged and has been rebuilt" onDismiss={onDismiss}>
      <p>
        {count(recovery.jobsRead, "job was", "jobs were")} read back from it, and{" "}
        {count(recovery.songsFound, "song was", "songs were")} found again in the library's folders. Jobs that could
        not be read back are missing from the queue: add their songs again. The damaged file is kept as{" "}
        <code>{recovery.setAside}</code> ({recovery.problem}).
      </p>
    </Alert>
  );
}
