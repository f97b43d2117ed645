import type { ReactNode } from "react";

interface Props {
  title?: string;
  children: ReactNode;
  onDismiss?: () => void;
}

/** An error or warning, announced when it appears. */
export function Alert({ title, children, onDismiss }: Props) {
  return (
    <div className="alert" role="alert">
      <div className="alert__body">
        {title && <p className="alert__title">{title}</p>}
        {children}
      </div>
      {onDismiss && (
        <button type="button" className="button button--quiet" onClick={onDismiss}>
          Dismiss
        </button>
      )}
    </div>
  );
}
