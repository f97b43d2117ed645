import { useEffect, useId, useRef, type KeyboardEvent, type MouseEvent, type ReactNode } from "react";

interface Props {
  /** The heading (a song's title inside it in a `<bdi>`, so a right-to-left
   * title keeps the quotes and words around it in place). */
  title: ReactNode;
  children: ReactNode;
  onClose(): void;
}

const FOCUSABLE = "button:not([disabled]), input:not([disabled]), select:not([disabled]), [href], [tabindex]:not([tabindex='-1'])";

/**
 * Whether a mouse event is on the backdrop itself: not in the dialog, and
 * not on the backdrop's scroll bars (outside its client area).
 */
function onBackdrop(e: MouseEvent<HTMLElement>): boolean {
  const el = e.currentTarget;
  if (e.target !== el) return false;
  const rect = el.getBoundingClientRect();
  const x = e.clientX - rect.left - el.clientLeft;
  const y = e.clientY - rect.top - el.clientTop;
  return x >= 0 && x < el.clientWidth && y >= 0 && y < el.clientHeight;
}

/**
 * A modal dialog: focus moves into it and stays there, Escape closes it, and
 * focus goes back to where it was when it closes.
 */
export function Dialog({ title, children, onClose }: Props) {
  const titleId = useId();
  const ref = useRef<HTMLDivElement>(null);
  // A click outside closes the dialog only when pressed and let go there:
  // a drag of the backdrop's scroll bar, or a text selection that ends
  // outside, must not (a closed playlist dialog drops the playlist).
  const pressedOutside = useRef(false);

  useEffect(() => {
    const previous = document.activeElement as HTMLElement | null;
    // The safe choice when one is marked (`data-autofocus`), else the first control.
    (
      ref.current?.querySelector<HTMLElement>("[data-autofocus]") ?? ref.current?.querySelector<HTMLElement>(FOCUSABLE)
    )?.focus();
    // Focus that gets out (a click on the backdrop's edge, the window
    // regaining focus) comes back to the dialog's first control; focus in
    // another dialog (one opened over this one) is left where it is.
    const onFocusIn = (e: FocusEvent) => {
      const dialog = ref.current;
      const target = e.target instanceof Element ? e.target : null;
      if (dialog && target && !dialog.contains(target) && !target.closest("[role=dialog]")) {
        (dialog.querySelector<HTMLElement>(FOCUSABLE) ?? dialog).focus();
      }
    };
    document.addEventListener("focusin", onFocusIn);
    return () => {
      document.removeEventListener("focusin", onFocusIn);
      previous?.focus();
    };
  }, []);

  function onKeyDown(event: KeyboardEvent) {
    if (event.key === "Escape") {
      event.stopPropagation();
      onClose();
      return;
    }
    if (event.key !== "Tab" || !ref.current) return;
    const items = [...ref.current.querySelectorAll<HTMLElement>(FOCUSABLE)];
    const first = items[0];
    const last = items[items.length - 1];
    // The dialog itself has focus after a click on its text: Tab goes in.
    if (document.activeElement === ref.current) {
      event.preventDefault();
      (event.shiftKey ? last : first)?.focus();
    } else if (event.shiftKey && document.activeElement === first) {
      event.preventDefault();
      last?.focus();
    } else if (!event.shiftKey && document.activeElement === last) {
      event.preventDefault();
      first?.focus();
    }
  }

  return (
    <div
      className="backdrop"
      onMouseDown={(e) => {
        pressedOutside.current = e.button === 0 && onBackdrop(e);
      }}
      onMouseUp={(e) => {
        const close = pressedOutside.current && e.button === 0 && onBackdrop(e);
        pressedOutside.current = false;
        if (close) onClose();
      }}
    >
      <div
        ref={ref}
        className="dialog"
        role="dialog"
        aria-modal="true"
        aria-labelledby={titleId}
        tabIndex={-1}
        onKeyDown={onKeyDown}
      >
        <h2 id={titleId} className="dialog__title">
          {title}
        </h2>
        {children}
      </div>
    </div>
  );
}
