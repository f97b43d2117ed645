import type { Rejected } from "../bindings";
import { fileName } from "../format";
import { Alert } from "./Alert";

interface Props {
  rejected: Rejected[];
  onDismiss(): void;
}

const isUrl = (path: string) => /^https?:\/\//i.test(path);

/** What an add refused (files by name, links whole), each with the reason. */
export function RejectedNotice({ rejected, onDismiss }: Props) {
  const links = rejected.filter(({ path }) => isUrl(path)).length;
  const what = links === 0 ? ["file", "files"] : links === rejected.length ? ["link", "links"] : ["item", "items"];
  const title = rejected.length === 1 ? `1 ${what[0]} was not added` : `${rejected.length} ${what[1]} were not added`;
  return (
    <Alert title={title} onDismiss={onDismiss}>
      <ul className="rejected">
        {rejected.map(({ path, reason }, i) => (
          <li key={`${i}:${path}`}>
            <span className="rejected__file" title={path}>
              <bdi>{isUrl(path) ? path : fileName(path)}</bdi>
            </span>
            : {reason}
          </li>
        ))}
      </ul>
    </Alert>
  );
}
