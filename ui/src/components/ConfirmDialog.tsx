import type { ReactNode } from "react";
import { Dialog } from "./Dialog";

interface Props {
  /** The question (a song's title inside it in a `<bdi>`). */
  title: ReactNode;
  /** What saying yes costs. */
  children: ReactNode;
  /** The label of the destructive choice ("Remove"). */
  confirmLabel: string;
  onConfirm(): void;
  /** Closes without doing anything: "Keep it", Escape. */
  onClose(): void;
}

/** A yes/no question before something that cannot be undone; "Keep it" has the focus. */
export function ConfirmDialog({ title, children, confirmLabel, onConfirm, onClose }: Props) {
  return (
    <Dialog title={title} onClose={onClose}>
      {children}
      <div className="dialog__actions">
        <button type="button" className="button" data-autofocus onClick={onClose}>
          Keep it
        </button>
        <button type="button" className="button button--danger" onClick={onConfirm}>
          {confirmLabel}
        </button>
      </div>
    </Dialog>
  );
}
