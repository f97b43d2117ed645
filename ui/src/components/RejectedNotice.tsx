import type { Rejected } from "../bindings";
import { fileName } from "../format";
import { Alert } from "./Alert";

interface Props {
  rejected: Rejected[];
  onDismiss(): void;
}

/** The files an add refused, each with the reason. */
export function RejectedNotice({ rejected, onDismiss }: Props) {
  const title = rejected.length === 1 ? "1 file was not added" : `${rejected.length} files were not added`;
  return (
    <Alert title={title} onDismiss={onDismiss}>
      <ul className="rejected">
        {rejected.map(({ path, reason }, i) => (
          <li key={`${i}:${path}`}>
            <span className="rejected__file" title={path}>
              <bdi>{fileName(path)}</bdi>
            </span>
            : {reason}
          </li>
        ))}
      </ul>
    </Alert>
  );
}
