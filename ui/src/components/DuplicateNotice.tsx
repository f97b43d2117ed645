import { useId } from "react";
import type { Duplicate, Job } from "../bindings";
import { fileName } from "../format";
import { Alert } from "./Alert";

interface Props {
  duplicates: Duplicate[];
  /** Files whose "Separate again" is on its way (its button waits). */
  adding: ReadonlySet<string>;
  /** Open a song that is already in the library. */
  onOpen(song: Job): void;
  /** Queue this file or link again anyway. */
  onAddAgain(path: string): void;
  onDismiss(): void;
}

/** Files and links that were not added because Stemroom already has them, with what to do instead. */
export function DuplicateNotice({ duplicates, adding, onOpen, onAddAgain, onDismiss }: Props) {
  // Each item's buttons are described by its sentence (a screen reader
  // tabbing through several says which song each one is for).
  const base = useId();
  const title =
    duplicates.length === 1 ? "This song is already in Stemroom" : `${duplicates.length} songs are already in Stemroom`;
  return (
    <Alert title={title} onDismiss={onDismiss}>
      <ul className="duplicates">
        {duplicates.map(({ path, existing }, i) => {
          const done = existing.state.state === "done";
          const described = `${base}-${i}`;
          return (
            <li key={path} className="duplicates__item" data-testid="duplicate">
              <span title={path} id={described}>
                <bdi>{/^https?:\/\//i.test(path) ? path : fileName(path)}</bdi> is {done ? "in the library" : "in the queue"} as “<bdi>{existing.title}</bdi>”.
              </span>{" "}
              {done && (
                <button
                  type="button"
                  className="button button--quiet"
                  aria-describedby={described}
                  onClick={() => onOpen(existing)}
                >
                  Open in player
                </button>
              )}
              <button
                type="button"
                className="button button--quiet"
                aria-describedby={described}
                disabled={adding.has(path)}
                onClick={() => onAddAgain(path)}
              >
                Separate again
              </button>
            </li>
          );
        })}
      </ul>
    </Alert>
  );
}
